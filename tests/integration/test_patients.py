"""Patients on the real PostgreSQL and Redis (issue: patients): adding self, children and other adults,
confirmation, limits, step-up, verification caching, masking-free storage, hospital records and merges.

The registry and SMS are fakes of their ports (the vendor adapters have contract tests against the simulators).
Rule ids: ID-008, ID-020, ID-033, SEC-P-03, SEC-P-04, SEC-A-05, NET-030.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from domain.account.model import Identity, Provider, ResidentAccount
from domain.catalogue.model import PatientDocument
from domain.kernel.errors import DomainError
from domain.kernel.ids import new_id
from domain.kernel.ratelimit import RateLimit
from domain.patient.model import ConsentKind, PatientState, Relationship
from domain.patient.ports import CardHolder, CardRegistration, CardUse, DynamicCode
from domain.patient.rules import PatientPolicy
from domain.patient.use_cases import Actor, NewPatient, PatientDeps, PatientService, card_use_message
from integrations.crypto.keys import Keyring, generate_keyring_config
from integrations.crypto.suite import build_suite
from notifications import tasks as _tasks  # noqa: F401  (registers the topic handlers)
from notifications.registry import registry
from persistence.db import ConnectionSource
from persistence.ephemeral.ratelimit import LimitsRateLimiter
from persistence.ephemeral.redis_store import RedisEphemeralStore
from persistence.uow import SqlUnitOfWork, unit_of_work_factory
from tests.support.accounts import FakeSms
from tests.support.app import FixedClock
from tests.support.patients import FakeVerifier, citizen_id

HOLDER_PHONE = "13800001234"
CONSENT = PatientPolicy().consent_version


HOLDER_ID = citizen_id("110105", "19880312", "123")  # male (odd sequence)
CHILD_ID = citizen_id("110105", "20200601", "224")  # female, six years old
MOTHER_ID = citizen_id("440308", "19600105", "322")
MOTHER_PHONE = "13900007777"


@dataclass
class Harness:
    service: PatientService
    sms: FakeSms
    verifier: FakeVerifier
    clock: FixedClock
    source: ConnectionSource
    store: RedisEphemeralStore

    async def account(self, phone: str = HOLDER_PHONE) -> Actor:
        account_id = new_id()
        now = self.clock.now()
        cipher = self.service.d.cipher
        async with SqlUnitOfWork(self.source) as uow:
            await uow.accounts.add_resident(
                ResidentAccount(
                    id=account_id,
                    created_at=now,
                    last_active_at=now,
                    phone_index=new_id(),
                    phone_cipher=cipher.encrypt(phone.encode(), context="account.phone"),
                )
            )
            await uow.commit()
        return Actor(account_id, new_id())

    async def step_up(self, actor: Actor) -> None:
        # The resend limit (one code a minute) is asserted in its own test; the harness starts afresh.
        assert self.service.d.rate_limiter is not None
        await self.service.d.rate_limiter.reset(RateLimit("step-up-send", 1, 60, fail_closed=True), actor.account_id)
        await self.service.send_step_up_code(actor)
        phone = self.sms.sent[-1][0]
        await self.service.pass_step_up(actor, self.sms.last_code(phone))

    async def add_self(self, actor: Actor) -> str:
        await self.step_up(actor)
        patient = await self.service.add(
            actor, NewPatient(Relationship.SELF, "张伟", CONSENT, doc_type="01", doc_number=HOLDER_ID)
        )
        return patient.link.id


@pytest.fixture
async def h(committed_source: ConnectionSource, redis_url: str, redis_prefix: str) -> AsyncIterator[Harness]:
    cfg = generate_keyring_config()
    suite = build_suite("intl", Keyring.from_config(cfg["active_kid"], cfg["keys"], cfg["index_key"]))
    clock = FixedClock(datetime(2026, 11, 22, 2, 0, tzinfo=UTC))
    store = RedisEphemeralStore.from_url(redis_url, prefix=f"{redis_prefix}patients:{new_id()}:")
    verifier = FakeVerifier(
        {("张伟", HOLDER_ID): HOLDER_PHONE, ("张小满", CHILD_ID): None, ("李秀英", MOTHER_ID): MOTHER_PHONE}
    )
    sms = FakeSms()
    service = PatientService(
        PatientDeps(
            uow_factory=unit_of_work_factory(committed_source, cipher=suite.cipher),
            clock=clock,
            cipher=suite.cipher,
            blind_index=suite.blind_index,
            mac=suite.mac,
            verifier=verifier,
            store=store,
            rate_limiter=LimitsRateLimiter.memory(),
            sms=sms,
            verification_cache_secret=b"k" * 32,
        )
    )
    yield Harness(service, sms, verifier, clock, committed_source, store)
    await store.close()


async def raises(code: str, awaitable: object) -> DomainError:
    with pytest.raises(DomainError) as caught:
        await awaitable  # type: ignore[misc]
    assert caught.value.code == code, caught.value
    return caught.value


async def test_adding_requires_a_step_up_check_first(h: Harness) -> None:
    """SEC-A-05: adding a patient is a sensitive action."""
    actor = await h.account()
    await raises(
        "auth.step_up_required",
        h.service.add(actor, NewPatient(Relationship.SELF, "张伟", CONSENT, doc_number=HOLDER_ID)),
    )
    await h.service.send_step_up_code(actor)
    await raises("patient.too_frequent", h.service.send_step_up_code(actor))
    await raises("auth.step_up_code_wrong", h.service.pass_step_up(actor, "000000x"))
    await h.service.pass_step_up(actor, h.sms.last_code(HOLDER_PHONE))
    patient = await h.service.add(actor, NewPatient(Relationship.SELF, "张伟", CONSENT, doc_number=HOLDER_ID))
    assert patient.link.state is PatientState.ACTIVE
    assert patient.person.verified
    assert patient.person.sex == "M"
    assert patient.person.birth_date == date(1988, 3, 12)


async def test_self_and_a_child_are_active_and_the_guardian_consent_is_recorded(h: Harness) -> None:
    """SEC-P-03 (consent records), SEC-P-04 (a verified guardian consents for a child under 14)."""
    actor = await h.account()
    await h.add_self(actor)
    child = await h.service.add(
        actor, NewPatient(Relationship.CHILD, "张小满", CONSENT, doc_type="01", doc_number=CHILD_ID)
    )
    assert child.link.state is PatientState.ACTIVE
    listed = await h.service.list(actor)
    assert [p.link.relationship for p in listed] == [Relationship.SELF, Relationship.CHILD]
    async with SqlUnitOfWork(h.source) as uow:
        kinds = {c.kind for c in await uow.patients.consents(child.person.id)}
    assert kinds == {ConsentKind.HEALTH_DATA, ConsentKind.GUARDIAN}


async def test_a_child_needs_a_verified_guardian_first(h: Harness) -> None:
    """SEC-P-04: no dependant profile under 14 without a verified guardian."""
    actor = await h.account()
    await h.step_up(actor)
    await raises(
        "patient.guardian_unverified",
        h.service.add(actor, NewPatient(Relationship.CHILD, "张小满", CONSENT, doc_number=CHILD_ID)),
    )


async def test_a_child_without_an_id_document_gets_a_guardian_based_profile(h: Harness) -> None:
    """ID-020: name, sex and birth date, vouched for by the verified guardian."""
    actor = await h.account()
    await h.add_self(actor)
    baby = await h.service.add(
        actor,
        NewPatient(Relationship.CHILD, "张小宝", CONSENT, sex="F", birth_date=date(2026, 9, 1)),
    )
    assert baby.person.doc_number is None
    assert baby.person.guardian_person_id is not None
    assert baby.person.verification is not None
    assert baby.person.verification.value == "guardian"
    await raises(
        "patient.document_required",
        h.service.add(actor, NewPatient(Relationship.OTHER, "王某", CONSENT, sex="M", birth_date=date(2000, 1, 1))),
    )


async def test_an_adult_added_by_someone_else_stays_invisible_until_they_confirm(h: Harness) -> None:
    actor = await h.account()
    await h.add_self(actor)
    mother = await h.service.add(
        actor,
        NewPatient(Relationship.PARENT, "李秀英", CONSENT, doc_number=MOTHER_ID, phone=MOTHER_PHONE),
    )
    assert mother.link.state is PatientState.PENDING
    assert [p.link.relationship for p in await h.service.list(actor)] == [Relationship.SELF]
    await raises("patient.not_found", h.service.get(actor, mother.link.id))
    code = h.sms.last_code(MOTHER_PHONE)
    assert h.sms.sent[-1][1] == "patient_confirm", "the code went to the mother's own phone"
    await raises("patient.confirm_code_wrong", h.service.confirm(actor, mother.link.id, "999999x"))
    confirmed = await h.service.confirm(actor, mother.link.id, code)
    assert confirmed.link.state is PatientState.ACTIVE
    assert len(await h.service.list(actor)) == 2


async def test_an_adult_who_never_confirms_stays_pending_and_the_code_expires(h: Harness) -> None:
    actor = await h.account()
    await h.add_self(actor)
    mother = await h.service.add(
        actor, NewPatient(Relationship.PARENT, "李秀英", CONSENT, doc_number=MOTHER_ID, phone=MOTHER_PHONE)
    )
    code = h.sms.last_code(MOTHER_PHONE)
    h.clock.advance(int(PatientPolicy().confirm_code_ttl.total_seconds()) + 1)
    await raises("patient.confirm_code_wrong", h.service.confirm(actor, mother.link.id, code))
    assert len(await h.service.list(actor)) == 1
    await raises("patient.not_found", h.service.usable(actor.account_id, mother.link.id))


async def test_confirmation_locks_after_too_many_wrong_codes(h: Harness) -> None:
    actor = await h.account()
    await h.add_self(actor)
    mother = await h.service.add(
        actor, NewPatient(Relationship.PARENT, "李秀英", CONSENT, doc_number=MOTHER_ID, phone=MOTHER_PHONE)
    )
    code = h.sms.last_code(MOTHER_PHONE)
    for _ in range(PatientPolicy().confirm_code_attempts):
        await raises("patient.confirm_code_wrong", h.service.confirm(actor, mother.link.id, "000000"))
    await raises("patient.confirm_locked", h.service.confirm(actor, mother.link.id, code))


async def test_a_failed_verification_writes_nothing_and_is_audited(h: Harness) -> None:
    actor = await h.account()
    await h.add_self(actor)
    await raises(
        "patient.verification_failed",
        h.service.add(
            actor, NewPatient(Relationship.PARENT, "李秀英", CONSENT, doc_number=MOTHER_ID, phone="13900000000")
        ),
    )
    stranger = citizen_id("320102", "19700101", "011")
    await raises(
        "patient.verification_no_record",
        h.service.add(actor, NewPatient(Relationship.OTHER, "赵六", CONSENT, doc_number=stranger, phone="13900000001")),
    )
    async with SqlUnitOfWork(h.source) as uow:
        persons = (await uow.connection.execute(sa.text("SELECT count(*) FROM persons"))).scalar_one()
        audited = (
            (
                await uow.connection.execute(
                    sa.text("SELECT reason FROM audit_log WHERE action = 'patient.verification' ORDER BY id")
                )
            )
            .scalars()
            .all()
        )
    assert persons == 1, "only the holder"
    assert audited[-2:] == ["mismatch", "no_record"]


async def test_a_match_is_cached_so_the_registry_is_asked_once(h: Harness) -> None:
    first, second = await h.account(), await h.account("13800009999")
    await h.add_self(first)
    await h.service.add(first, NewPatient(Relationship.CHILD, "张小满", CONSENT, doc_number=CHILD_ID))
    calls = len(h.verifier.calls)
    await h.step_up(second)
    # The other parent: their own self first (a new number), then the same child.
    other_parent = citizen_id("110105", "19890101", "042")
    h.verifier.population[("王芳", other_parent)] = "13800009999"
    await h.service.add(second, NewPatient(Relationship.SELF, "王芳", CONSENT, doc_number=other_parent))
    shared = await h.service.add(second, NewPatient(Relationship.CHILD, "张小满", CONSENT, doc_number=CHILD_ID))
    assert h.verifier.calls[calls:] == ["id2"], "the child's match came from the cache"
    # D4: one person, managed by two accounts.
    first_child = next(p for p in await h.service.list(first) if p.link.relationship is Relationship.CHILD)
    assert shared.person.id == first_child.person.id


async def test_limits_a_sixth_patient_and_a_second_self(h: Harness) -> None:
    actor = await h.account()
    await h.add_self(actor)
    await raises(
        "patient.self_exists",
        h.service.add(actor, NewPatient(Relationship.SELF, "张伟", CONSENT, doc_number=HOLDER_ID)),
    )
    for i in range(4):
        number = citizen_id("110105", f"2018010{i + 1}", "013")
        h.verifier.population[(f"张{i}", number)] = None
        await h.service.add(actor, NewPatient(Relationship.CHILD, f"张{i}", CONSENT, doc_number=number))
    sixth = citizen_id("110105", "20180201", "013")
    h.verifier.population[("张六", sixth)] = None
    error = await raises(
        "patient.limit", h.service.add(actor, NewPatient(Relationship.CHILD, "张六", CONSENT, doc_number=sixth))
    )
    assert error.extra == {"max": 5}


async def test_concurrent_adds_cannot_pass_the_limit(h: Harness) -> None:
    """The account row is locked while counting: two adds racing for the fifth place, one wins."""
    actor = await h.account()
    await h.add_self(actor)
    for i in range(3):
        number = citizen_id("110105", f"2018010{i + 1}", "013")
        h.verifier.population[(f"张{i}", number)] = None
        await h.service.add(actor, NewPatient(Relationship.CHILD, f"张{i}", CONSENT, doc_number=number))
    racers = []
    for i in (7, 8):
        number = citizen_id("110105", f"2018010{i}", "013")
        h.verifier.population[(f"李{i}", number)] = None
        racers.append(h.service.add(actor, NewPatient(Relationship.CHILD, f"李{i}", CONSENT, doc_number=number)))
    results = await asyncio.gather(*racers, return_exceptions=True)
    assert sum(1 for r in results if isinstance(r, DomainError) and r.code == "patient.limit") == 1
    assert len(await h.service.list(actor)) == 5


async def test_bad_input_is_refused_with_its_code(h: Harness) -> None:
    """ID-002 checksum, ID-004 future date, ID-006 a 15-digit number with a wrong date, ID-008 a declared birth
    date that disagrees with the number, SEC-P-03 an outdated consent."""
    actor = await h.account()
    await h.step_up(actor)
    cases: list[tuple[str, str, date | None]] = [
        ("identity.id_checksum", HOLDER_ID[:-1] + ("0" if HOLDER_ID[-1] != "0" else "1"), None),
        ("identity.id_birth_date", citizen_id("110105", "20300101", "123"), None),
        ("identity.id_birth_date", "110105491331002", None),
        ("patient.document_mismatch", HOLDER_ID, date(1988, 3, 13)),
    ]
    for code, number, declared in cases:
        new = NewPatient(Relationship.SELF, "张伟", CONSENT, doc_number=number, birth_date=declared)
        await raises(code, h.service.add(actor, new))
    await raises(
        "patient.consent_required",
        h.service.add(actor, NewPatient(Relationship.SELF, "张伟", "2020-01", doc_number=HOLDER_ID)),
    )
    # Mixed full-width text is normalised, not refused.
    wide = "".join(chr(ord(c) + 0xFEE0) for c in HOLDER_ID[:10]) + HOLDER_ID[10:]
    added = await h.service.add(actor, NewPatient(Relationship.SELF, "张伟", CONSENT, doc_number=wide))
    assert added.person.doc_number == HOLDER_ID


async def test_another_accounts_patient_is_not_found(h: Harness) -> None:
    mine, theirs = await h.account(), await h.account("13800005678")
    patient_id = await h.add_self(mine)
    await h.step_up(theirs)
    for call in (
        h.service.get(theirs, patient_id),
        h.service.reveal_document(theirs, patient_id),
        h.service.remove(theirs, patient_id),
        h.service.confirm(theirs, patient_id, "123456"),
        h.service.update(theirs, patient_id, relationship=Relationship.OTHER),
        h.service.usable(theirs.account_id, patient_id),
    ):
        await raises("patient.not_found", call)


async def test_reveal_needs_a_fresh_step_up_and_is_audited(h: Harness) -> None:
    actor = await h.account()
    patient_id = await h.add_self(actor)
    await h.store.delete(f"step-up:{actor.session_id}")
    await raises("auth.step_up_required", h.service.reveal_document(actor, patient_id))
    await h.step_up(actor)
    revealed = await h.service.reveal_document(actor, patient_id)
    assert revealed.person.doc_number == HOLDER_ID
    async with SqlUnitOfWork(h.source) as uow:
        actions = (
            (
                await uow.connection.execute(
                    sa.text("SELECT action FROM audit_log WHERE object_id = :id"), {"id": patient_id}
                )
            )
            .scalars()
            .all()
        )
    assert "patient.reveal" in actions
    assert "patient.add" in actions


async def test_removal_is_soft_and_the_person_stays(h: Harness) -> None:
    actor = await h.account()
    patient_id = await h.add_self(actor)
    await h.service.remove(actor, patient_id)
    assert await h.service.list(actor) == []
    async with SqlUnitOfWork(h.source) as uow:
        states = (await uow.connection.execute(sa.text("SELECT state FROM patients"))).scalars().all()
        persons = (await uow.connection.execute(sa.text("SELECT count(*) FROM persons"))).scalar_one()
    assert states == ["removed"]
    assert persons == 1
    # The same person may be added again afterwards.
    await h.add_self(actor)


async def test_the_database_holds_no_clear_id_number_name_or_phone(h: Harness) -> None:
    """DESIGN D5: every table is dumped as text and searched for the values typed in."""
    actor = await h.account()
    await h.add_self(actor)
    await h.service.add(
        actor, NewPatient(Relationship.PARENT, "李秀英", CONSENT, doc_number=MOTHER_ID, phone=MOTHER_PHONE)
    )
    secrets_typed = [HOLDER_ID, MOTHER_ID, MOTHER_PHONE, HOLDER_PHONE, "李秀英", "张伟", MOTHER_ID[-8:]]
    async with SqlUnitOfWork(h.source) as uow:
        tables = (
            (
                await uow.connection.execute(
                    sa.text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                    )
                )
            )
            .scalars()
            .all()
        )
        dump: list[str] = []
        for table in tables:
            try:
                async with uow.connection.begin_nested():
                    rows = await uow.connection.execute(sa.text(f'SELECT t::text FROM "{table}" t'))
                    dump.extend(str(r[0]) for r in rows)
            except sa.exc.DBAPIError:
                continue  # tables the app role may not read
    text = "\n".join(dump)
    assert "persons" in tables
    assert len(dump) > 3
    for value in secrets_typed:
        assert value not in text, "a clear personal value is stored"


async def test_the_hospital_record_is_created_once_and_kept(h: Harness) -> None:
    """ID-031: each hospital's patid is kept; the HIS is asked once per person and hospital."""
    actor = await h.account()
    patient_id = await h.add_self(actor)
    asked: list[tuple[str, str]] = []

    class Adapter:
        async def find_or_create(self, document: PatientDocument, *, key: str) -> str:
            asked.append((document.id_number or "", key))
            await asyncio.sleep(0.01)
            return "PAT-" + key[-4:]

    class Gateway:
        def for_hospital(self, code: str) -> Adapter:
            return Adapter()

    h.service.d.his = Gateway()  # type: ignore[assignment]
    person_id = (await h.service.get(actor, patient_id)).person.id
    first = await asyncio.gather(*(h.service.hospital_patid(person_id, "H001") for _ in range(3)))
    again = await h.service.hospital_patid(person_id, "H001")
    assert len(set(first)) == 1
    assert again == first[0]
    assert {key for _, key in asked} == {f"patient:{person_id}:H001"}, "one idempotency key for the HIS"
    assert asked[0][0] == HOLDER_ID


async def test_operators_merge_and_unmerge_persons(h: Harness) -> None:
    """ID-033: a guardian-based profile and the same child's later ID-based profile are merged and unmerged."""
    actor = await h.account()
    await h.add_self(actor)
    baby = await h.service.add(
        actor, NewPatient(Relationship.CHILD, "张小满", CONSENT, sex="F", birth_date=date(2020, 6, 1))
    )
    with_id = await h.service.add(actor, NewPatient(Relationship.CHILD, "张小满", CONSENT, doc_number=CHILD_ID))
    merge = await h.service.merge_persons("staff:op1", baby.person.id, with_id.person.id, reason="同一儿童")
    listed = await h.service.list(actor)
    assert len(listed) == 2, "self and one child: the two links now show one person"
    seen = await h.service.get(actor, baby.link.id)
    assert seen.person.id == with_id.person.id
    await raises(
        "person.merge_refused", h.service.merge_persons("staff:op1", baby.person.id, with_id.person.id, reason="x")
    )
    await h.service.undo_merge("staff:op1", merge.id, reason="误合并")
    assert len(await h.service.list(actor)) == 3
    async with SqlUnitOfWork(h.source) as uow:
        actions = (
            (
                await uow.connection.execute(
                    sa.text("SELECT action FROM audit_log WHERE action LIKE 'person.%' ORDER BY id")
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["person.merge", "person.unmerge"]


async def test_an_unverified_or_pending_patient_cannot_be_used(h: Harness) -> None:
    """NET-030: booking, paying and reports take only active, verified patients."""
    actor = await h.account()
    await h.add_self(actor)
    mother = await h.service.add(
        actor, NewPatient(Relationship.PARENT, "李秀英", CONSENT, doc_number=MOTHER_ID, phone=MOTHER_PHONE)
    )
    await raises("patient.not_found", h.service.usable(actor.account_id, mother.link.id))
    await h.service.confirm(actor, mother.link.id, h.sms.last_code(MOTHER_PHONE))
    assert (await h.service.usable(actor.account_id, mother.link.id)).person.verified


@dataclass
class FakeCards:
    """The card platform port, recording what it is asked (the real client has its own contract tests)."""

    reports: list[tuple[str, str, str]] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)

    async def register(self, registration: CardRegistration) -> CardHolder:
        self.registered.append(registration.id_number)
        card_id = "C" * 63 + str(len(self.registered))
        return CardHolder(
            card_id, "PHID1", card_id + ":1", registration.name, registration.id_type, registration.id_number
        )

    async def by_health_code(self, health_code: str, *, relate_app_id: str, relate_open_id: str) -> CardHolder:
        raise NotImplementedError

    async def by_qr_code(self, qr_code_text: str) -> CardHolder:
        raise NotImplementedError

    async def dynamic_code(
        self, health_card_id: str, *, id_type: str, id_number: str, relate_app_id: str, relate_open_id: str
    ) -> DynamicCode:
        raise NotImplementedError

    async def report_use(self, use: CardUse, *, relate_app_id: str, relate_open_id: str) -> None:
        self.reports.append((use.hospital_code, use.scene, relate_open_id))

    def static_png(self, qr_code_text: str) -> bytes:
        return b""


async def test_card_use_is_reported_once_per_message_and_only_with_an_openid(h: Harness) -> None:
    """ID-031/ID-032 usage reports (用卡数据上报): scene codes come from configuration; a relayed message reported
    twice reaches the platform once; an account without WeChat has nothing the platform accepts."""
    cards = FakeCards()
    h.service.d.cards = cards
    actor = await h.account()
    patient_id = await h.add_self(actor)
    await h.service.register_card(actor, patient_id, wechat_code="wx-card-auth")
    person_id = (await h.service.get(actor, patient_id)).person.id
    assert not await h.service.report_card_use(actor.account_id, person_id, "H001", "booking", key="m-1"), (
        "no WeChat identity: skipped"
    )
    async with SqlUnitOfWork(h.source) as uow:
        await uow.accounts.add_identity(
            actor.account_id, Identity(Provider.WECHAT, "wx-app", "o-openid-1"), now=h.clock.now()
        )
        await uow.commit()
    assert await h.service.report_card_use(actor.account_id, person_id, "H001", "booking", key="m-2")
    assert not await h.service.report_card_use(actor.account_id, person_id, "H001", "booking", key="m-2")
    assert cards.reports == [("H001", "010101", "o-openid-1")]
    topic, payload = card_use_message(actor.account_id, person_id, "H002", "payment")
    assert topic in registry.topics, "the relay knows where to send it"
    assert await h.service.report_card_use(**{_snake(k): v for k, v in payload.items()}, key="m-3")
    assert cards.reports[-1][:2] == ("H002", "010102")


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


async def test_an_adult_can_confirm_by_a_face_check_instead_of_the_code(h: Harness) -> None:
    """SEC-P-04's alternative for adults: face verification of the person being added."""
    actor = await h.account()
    await h.add_self(actor)
    mother = await h.service.add(
        actor, NewPatient(Relationship.PARENT, "李秀英", CONSENT, doc_number=MOTHER_ID, phone=MOTHER_PHONE)
    )
    session = await h.service.start_face_confirmation(actor, mother.link.id, redirect_url=None)
    await raises("verification.face_pending", h.service.finish_face_confirmation(actor, mother.link.id))
    h.verifier.finish_face(session.token, passed=False)
    await raises("patient.verification_failed", h.service.finish_face_confirmation(actor, mother.link.id))
    assert len(await h.service.list(actor)) == 1, "still pending"
    session = await h.service.start_face_confirmation(actor, mother.link.id, redirect_url=None)
    h.verifier.finish_face(session.token, passed=True)
    confirmed = await h.service.finish_face_confirmation(actor, mother.link.id)
    assert confirmed.link.state is PatientState.ACTIVE
    channels = {c.channel for c in await h.service.consents(actor, mother.link.id) if c.kind is ConsentKind.MANAGED_BY}
    assert channels == {"face"}


async def test_withdrawing_the_health_data_consent_stops_new_processing_until_given_again(h: Harness) -> None:
    """SEC-P-05 (PIPL Art. 15): withdrawal is recorded, earlier records stay, the patient cannot be used."""
    actor = await h.account()
    patient_id = await h.add_self(actor)
    assert (await h.service.usable(actor.account_id, patient_id)).person.verified
    assert await h.service.withdraw_consent(actor, patient_id) == 1
    await raises("patient.consent_withdrawn", h.service.usable(actor.account_id, patient_id))
    records = await h.service.consents(actor, patient_id)
    assert [c.withdrawn_at is not None for c in records] == [True], "the record stays, marked"
    await raises("patient.consent_required", h.service.give_consent(actor, patient_id, version="2019", channel="app"))
    await h.service.give_consent(actor, patient_id, version=CONSENT, channel="app")
    assert await h.service.usable(actor.account_id, patient_id)
