"""The patients service (issue: patients): adding, confirming, verifying and showing the people an account
manages, their e-health cards and their records at each hospital.

Rules: ID-001..033 (documents, cards, EMPI), SEC-P-03 (consent records), SEC-P-04 (under 14: a verified
guardian consents), SEC-P-08 (masking happens at the edge), SEC-A-05 (step-up before revealing an ID number,
adding a patient or changing a phone), NET-030 (only verified patients book, pay or read reports).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from types import TracebackType
from typing import Protocol, Self

from domain.account.model import Provider
from domain.account.ports import AccountRepository, SmsSender
from domain.account.rules import normalise_phone
from domain.catalogue.model import PatientDocument
from domain.catalogue.ports import HisGateway
from domain.identity.documents import DocumentType, parse_document
from domain.identity.verification import (
    FaceSession,
    RealNameVerifier,
    VerificationOutcome,
    VerificationResult,
    verification_cache_key,
)
from domain.kernel.audit import AuditEvent, AuditRepository, Outcome
from domain.kernel.clock import SHANGHAI, Clock
from domain.kernel.crypto import BlindIndex, FieldCipher, Mac
from domain.kernel.ephemeral import EphemeralStore
from domain.kernel.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
    ValidationError,
)
from domain.kernel.ids import new_id
from domain.kernel.outbox import OutboxRepository
from domain.kernel.ratelimit import RateLimit, RateLimiter
from domain.kernel.tasks import TaskRunner
from domain.patient.model import (
    Consent,
    ConsentKind,
    Patient,
    PatientLink,
    PatientState,
    Person,
    PersonMerge,
    Relationship,
    Sex,
    VerificationMethod,
)
from domain.patient.ports import (
    CardHolder,
    CardRegistration,
    CardUse,
    DynamicCode,
    HealthCardPlatform,
    PatientRepository,
)
from domain.patient.rules import PatientPolicy

# ---------------------------------------------------------------------------------------------------- errors


class PatientNotFoundError(NotFoundError):
    code = "patient.not_found"
    message = "未找到该就诊人"


class PatientLimitError(ConflictError):
    code = "patient.limit"
    message = "就诊人数量已达上限"


class SecondSelfError(ConflictError):
    code = "patient.self_exists"
    message = "已添加本人，不能重复添加"


class AlreadyAddedError(ConflictError):
    code = "patient.already_added"
    message = "该就诊人已在您的就诊人列表中"


class VerificationFailedError(ValidationError):
    code = "patient.verification_failed"
    message = "实名认证未通过：姓名、证件号码或手机号不一致"


class VerificationNoRecordError(ValidationError):
    code = "patient.verification_no_record"
    message = "实名认证未通过：未查询到该证件信息"


class StepUpRequiredError(ForbiddenError):
    code = "auth.step_up_required"
    message = "为保护您的信息安全，请先完成短信验证"


class StepUpCodeError(ValidationError):
    code = "auth.step_up_code_wrong"
    message = "验证码错误或已过期"


class GuardianUnverifiedError(ForbiddenError):
    code = "patient.guardian_unverified"
    message = "请先添加并实名认证本人，再为未满14周岁的儿童添加就诊人"


class ConsentRequiredError(ValidationError):
    code = "patient.consent_required"
    message = "请阅读并同意最新的个人信息及健康信息处理规则"


class DocumentMismatchError(ValidationError):
    code = "patient.document_mismatch"
    message = "出生日期或性别与证件号码不一致"


class PhoneRequiredError(ValidationError):
    code = "patient.phone_required"
    message = "添加他人为就诊人需填写其本人手机号，用于确认"


class DocumentRequiredError(ValidationError):
    code = "patient.document_required"
    message = "已满14周岁的就诊人须提供有效证件"


class ConfirmCodeError(ValidationError):
    code = "patient.confirm_code_wrong"
    message = "确认码错误或已过期"


class ConfirmLockedError(ValidationError):
    code = "patient.confirm_locked"
    message = "确认码错误次数过多，请重新获取"


class PatientUnverifiedError(ForbiddenError):
    code = "patient.unverified"
    message = "该就诊人尚未完成实名认证"


class ConsentWithdrawnError(ForbiddenError):
    code = "patient.consent_withdrawn"
    message = "您已撤回对该就诊人健康信息处理的同意，如需继续使用请重新同意"


class CardMismatchError(ValidationError):
    code = "healthcard.holder_mismatch"
    message = "该健康卡不属于此就诊人"


class CardMissingError(NotFoundError):
    code = "healthcard.not_bound"
    message = "该就诊人尚未领取电子健康卡"


class CardTakenError(ConflictError):
    code = "healthcard.taken"
    message = "该健康卡已绑定其他就诊人"


class MergeError(ConflictError):
    code = "person.merge_refused"
    message = "无法合并这两个人员档案"


# ---------------------------------------------------------------------------------------------------- ports


class PatientUnitOfWork(Protocol):
    @property
    def patients(self) -> PatientRepository: ...

    @property
    def accounts(self) -> AccountRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def commit(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CardUseCodes:
    """The card platform's code tables (scene, department, card type, channel, cost types) are configuration:
    the platform publishes them per deployment (protocols §6.2)."""

    scenes: Mapping[str, str] = field(
        default_factory=lambda: {"booking": "010101", "payment": "010102", "report": "010105"}
    )
    department: str = "0301"
    card_type: str = "11"
    card_channel: str = "0401"
    cost_types: str = "0100"


@dataclass(slots=True)
class PatientDeps:
    uow_factory: Callable[[], PatientUnitOfWork]
    clock: Clock
    cipher: FieldCipher
    blind_index: BlindIndex
    mac: Mac
    policy: PatientPolicy = field(default_factory=PatientPolicy)
    verifier: RealNameVerifier | None = None
    store: EphemeralStore | None = None
    rate_limiter: RateLimiter | None = None
    sms: SmsSender | None = None
    cards: HealthCardPlatform | None = None
    his: HisGateway | None = None
    runner: TaskRunner | None = None
    card_codes: CardUseCodes = field(default_factory=CardUseCodes)
    verification_cache_secret: bytes = b""


@dataclass(frozen=True, slots=True)
class NewPatient:
    relationship: Relationship
    name: str = field(repr=False)
    consent_version: str
    doc_type: str | None = None
    doc_sub_type: str | None = None
    doc_number: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    sex: Sex | None = None
    birth_date: date | None = None
    channel: str = "app"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: the account, its session (for step-up), and where from (for the audit trail)."""

    account_id: str
    session_id: str
    ip: str | None = None
    request_id: str | None = None


# ---------------------------------------------------------------------------------------------------- service


class PatientService:
    def __init__(self, deps: PatientDeps) -> None:
        self.d = deps

    # ------------------------------------------------------------------ helpers

    def _now(self) -> datetime:
        return self.d.clock.now()

    def _today(self) -> date:
        return self._now().astimezone(SHANGHAI).date()

    def doc_index(self, doc_type: str, number: str) -> str:
        return self.d.blind_index.index(f"{doc_type}:{number}", context="person.document")

    def phone_index(self, phone: str) -> str:
        return self.d.blind_index.index(phone, context="person.phone")

    def _audit(
        self,
        actor: Actor | None,
        action: str,
        outcome: Outcome,
        *,
        object_id: str | None = None,
        object_type: str = "patient",
        reason: str | None = None,
        details: Mapping[str, str] | None = None,
        staff: str | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            action=action,
            outcome=outcome,
            actor=staff or (f"account:{actor.account_id}" if actor else "system"),
            actor_role="operator" if staff else ("resident" if actor else None),
            object_type=object_type,
            object_id=object_id,
            source_ip=actor.ip if actor else None,
            request_id=actor.request_id if actor else None,
            reason=reason,
            details=dict(details or {}),
        )

    async def _limit(self, name: str, amount: int, per_seconds: int, key: str) -> None:
        if self.d.rate_limiter is None:
            return
        decision = await self.d.rate_limiter.hit(RateLimit(name, amount, per_seconds, fail_closed=True), key)
        if not decision.allowed:
            raise RateLimitedError(
                f"limit {name}",
                retry_after=decision.retry_after_seconds,
                code="patient.too_frequent",
                message="操作太频繁，请稍后再试",
            )

    def _hash_code(self, scope: str, code: str) -> str:
        return self.d.mac.mac(f"{scope}:{code}".encode(), context="patient.code").hex()

    # ------------------------------------------------------------------ step-up (SEC-A-05)

    async def _account_phone(self, account_id: str) -> str:
        async with self.d.uow_factory() as uow:
            account = await uow.accounts.resident(account_id)
        if account is None or account.phone_cipher is None:
            raise ForbiddenError("no phone bound", code="auth.phone_required", message="请先绑定手机号，再进行身份验证")
        return self.d.cipher.decrypt(account.phone_cipher, context="account.phone").decode()

    def _store(self) -> EphemeralStore:
        if self.d.store is None:
            raise UnavailableError("no ephemeral store", code="patient.store_unavailable")
        return self.d.store

    async def send_step_up_code(self, actor: Actor) -> datetime:
        """Send a one-time code to the account's own phone; entering it opens the sensitive actions for a
        few minutes of this session (the session's signed token is the cryptographic factor)."""
        phone = await self._account_phone(actor.account_id)
        await self._limit("step-up-send", 1, 60, actor.account_id)
        if self.d.sms is None:
            raise UnavailableError("no SMS provider", code="sms.not_configured")
        code = "".join(secrets.choice("0123456789") for _ in range(6))
        ttl = self.d.policy.step_up_code_ttl
        await self._store().set(
            f"step-up-code:{actor.session_id}",
            self._hash_code(actor.session_id, code).encode(),
            ttl_seconds=ttl.total_seconds(),
        )
        await self._store().delete(f"step-up-tries:{actor.session_id}")
        await self.d.sms.send(phone, "step_up_code", {"code": code, "minutes": str(int(ttl.total_seconds() // 60))})
        return self._now() + ttl

    async def pass_step_up(self, actor: Actor, code: str) -> datetime:
        store = self._store()
        stored = await store.get(f"step-up-code:{actor.session_id}")
        tries = await store.incr(
            f"step-up-tries:{actor.session_id}", ttl_seconds=self.d.policy.step_up_code_ttl.total_seconds()
        )
        ok = (
            stored is not None
            and tries <= self.d.policy.step_up_code_attempts
            and secrets.compare_digest(stored.decode(), self._hash_code(actor.session_id, code.strip()))
        )
        async with self.d.uow_factory() as uow:
            await uow.audit.record(
                self._audit(
                    actor,
                    "auth.step_up",
                    Outcome.SUCCESS if ok else Outcome.FAILURE,
                    object_type="session",
                    object_id=actor.session_id,
                ),
                now=self._now(),
            )
            await uow.commit()
        if not ok:
            if tries > self.d.policy.step_up_code_attempts:
                await store.delete(f"step-up-code:{actor.session_id}")
            raise StepUpCodeError("step-up code refused")
        await store.delete(f"step-up-code:{actor.session_id}")
        ttl = self.d.policy.step_up_ttl
        await store.set(f"step-up:{actor.session_id}", b"1", ttl_seconds=ttl.total_seconds())
        return self._now() + ttl

    async def require_step_up(self, actor: Actor) -> None:
        if await self._store().get(f"step-up:{actor.session_id}") is None:
            raise StepUpRequiredError("step-up required")

    async def recheck(self, actor: Actor, *, name: str, doc_type: str, doc_number: str) -> None:
        """The real-name re-check that reopens patient data to a restricted session: after a step-up, the
        resident states their own name and ID number, which must be those of the account's verified "self"
        patient. An account without one has no patient data to protect: the step-up alone suffices."""
        await self.require_step_up(actor)
        now = self._now()
        async with self.d.uow_factory() as uow:
            own: Person | None = None
            for link in await uow.patients.links(actor.account_id, states=(PatientState.ACTIVE,)):
                if link.relationship is Relationship.SELF:
                    own = await uow.patients.resolve(link.person_id)
            ok = own is None
            if own is not None and own.doc_type and own.doc_number:
                doc = parse_document(doc_type, doc_number, today=self._today())
                ok = " ".join(name.split()) == own.name and self.doc_index(str(doc.doc_type), doc.number) == (
                    self.doc_index(own.doc_type, own.doc_number)
                )
            await uow.audit.record(
                self._audit(
                    actor,
                    "patient.recheck",
                    Outcome.SUCCESS if ok else Outcome.FAILURE,
                    object_type="session",
                    object_id=actor.session_id,
                ),
                now=now,
            )
            await uow.commit()
        if not ok:
            raise VerificationFailedError("re-check does not match the account's own patient")

    # ------------------------------------------------------------------ real-name verification

    async def _verify(
        self, actor: Actor | None, kind: str, name: str, number: str, phone: str | None = None
    ) -> VerificationResult | None:
        """Check name + ID (+ phone) at the registry; matches are cached by a keyed digest, failures audited.
        Returns None for a cached match."""
        verifier = self.d.verifier
        if verifier is None:
            raise UnavailableError("no real-name verifier configured", code="verification.not_configured")
        parts = (name, number) if phone is None else (name, number, phone)
        cache_key = "realname:" + verification_cache_key(kind, *parts, secret=self.d.verification_cache_secret)
        store = self.d.store
        if store is not None and await store.get(cache_key) is not None:
            return None
        if actor is not None:
            await self._limit("realname-day", self.d.policy.verifications_per_account_day, 86400, actor.account_id)
        if phone is None:
            result = await verifier.verify_id(name, number)
        else:
            result = await verifier.verify_phone(name, number, phone)
        if result.outcome is VerificationOutcome.MATCH:
            if store is not None:
                await store.set(cache_key, b"1", ttl_seconds=self.d.policy.verification_cache_ttl.total_seconds())
            return result
        async with self.d.uow_factory() as uow:
            await uow.audit.record(
                self._audit(
                    actor,
                    "patient.verification",
                    Outcome.FAILURE,
                    reason=result.outcome.value,
                    details={"kind": kind, "provider": result.provider},
                ),
                now=self._now(),
            )
            await uow.commit()
        if result.outcome is VerificationOutcome.NO_RECORD:
            raise VerificationNoRecordError("no registry record")
        raise VerificationFailedError(f"registry answered {result.outcome.value}")

    # ------------------------------------------------------------------ adding

    async def add(self, actor: Actor, new: NewPatient) -> Patient:
        """Add a patient to the account. Self and children under 14 are active at once; anyone else aged 14 or
        over stays pending (invisible) until they confirm with the code sent to their own phone."""
        await self.require_step_up(actor)
        policy = self.d.policy
        if new.consent_version != policy.consent_version:
            raise ConsentRequiredError("consent version outdated")
        name = " ".join(new.name.split())
        if not 1 <= len(name) <= 40:
            raise ValidationError("bad name", code="patient.bad_name", message="请填写与证件一致的姓名")
        today = self._today()
        phone = normalise_phone(new.phone) if new.phone else None

        doc_type: str | None = None
        doc_sub: str | None = None
        number: str | None = None
        if new.doc_number:
            doc = parse_document(
                new.doc_type or DocumentType.RESIDENT_ID,
                new.doc_number,
                sub_type=new.doc_sub_type,
                today=today,
                earliest_year=policy.earliest_birth_year,
            )
            birth, sex = doc.birth_date or new.birth_date, doc.sex or new.sex
            # ID-008: what the resident typed must agree with what the number says.
            if (doc.birth_date and new.birth_date and doc.birth_date != new.birth_date) or (
                doc.sex and new.sex and doc.sex != new.sex
            ):
                raise DocumentMismatchError("declared birth date or sex disagrees with the document")
            doc_type, doc_sub, number = str(doc.doc_type), doc.sub_type, doc.number
        else:
            birth, sex = new.birth_date, new.sex
        if birth is None or sex is None:
            raise ValidationError(
                "birth date and sex required", code="patient.birth_required", message="请填写出生日期和性别"
            )
        if birth > today or birth.year < policy.earliest_birth_year:
            raise ValidationError("bad birth date", code="patient.bad_birth_date", message="出生日期不正确")
        age = _age(birth, today)
        is_self = new.relationship is Relationship.SELF
        child = not is_self and age < policy.adult_age
        if number is None and not child:
            raise DocumentRequiredError("a document is required from 14")
        if not is_self and not child and phone is None:
            raise PhoneRequiredError("an adult's own phone is needed to confirm")
        if is_self:
            phone = await self._account_phone(actor.account_id)

        guardian: Person | None = None
        if child:
            guardian = await self._verified_self(actor.account_id)

        # Real-name check before anything is written (outside any transaction: it is a remote call).
        method: VerificationMethod
        if number is None:
            method = VerificationMethod.GUARDIAN
        elif child or is_self:
            await self._verify(actor, "id2", name, number)
            method = VerificationMethod.ID_TWO_FACTOR
        else:
            assert phone is not None
            await self._verify(actor, "id3", name, number, phone)
            method = VerificationMethod.ID_THREE_FACTOR

        now = self._now()
        state = PatientState.ACTIVE if (is_self or child) else PatientState.PENDING
        code: str | None = None
        async with self.d.uow_factory() as uow:
            repo = uow.patients
            await repo.lock_account(actor.account_id)
            live = await repo.links(actor.account_id, states=(PatientState.ACTIVE, PatientState.PENDING))
            if len(live) >= policy.max_patients:
                raise PatientLimitError(f"at most {policy.max_patients} patients", extra={"max": policy.max_patients})
            if is_self and sum(1 for link in live if link.relationship is Relationship.SELF) >= policy.max_self:
                raise SecondSelfError("a self patient exists")
            person = None
            doc_index = self.doc_index(doc_type, number) if doc_type and number else None
            if doc_index is not None:
                person = await repo.person_by_document(doc_index)
            if person is not None and person.name != name:
                raise VerificationFailedError("name differs from the verified person")
            if person is not None:
                for existing in live:
                    managed = await repo.resolve(existing.person_id)
                    if managed is not None and managed.id == person.id:
                        raise AlreadyAddedError("already managed by this account")
            if person is None:
                person = Person(
                    id=new_id(),
                    name=name,
                    sex=sex,
                    birth_date=birth,
                    created_at=now,
                    doc_type=doc_type,
                    doc_sub_type=doc_sub,
                    doc_number=number,
                    phone=phone,
                    guardian_person_id=guardian.id if guardian and number is None else None,
                    verified_at=now,
                    verification=method,
                )
                await repo.add_person(
                    person, doc_index=doc_index, phone_index=self.phone_index(phone) if phone else None
                )
            elif not person.verified:
                person = replace(person, verified_at=now, verification=method)
                await repo.save_person(person, phone_index=self.phone_index(phone) if phone else None)
            link = PatientLink(
                id=new_id(),
                account_id=actor.account_id,
                person_id=person.id,
                relationship=new.relationship,
                state=state,
                created_at=now,
                confirmed_at=now if state is PatientState.ACTIVE else None,
            )
            if state is PatientState.PENDING:
                code = "".join(secrets.choice("0123456789") for _ in range(6))
                link = replace(
                    link,
                    confirm_code_hash=self._hash_code(link.id, code),
                    confirm_expires_at=now + policy.confirm_code_ttl,
                )
            await repo.add_link(link)
            await repo.add_consent(
                Consent(
                    new_id(),
                    actor.account_id,
                    person.id,
                    ConsentKind.HEALTH_DATA,
                    new.consent_version,
                    new.channel,
                    now,
                )
            )
            if child:
                # SEC-P-04: the verified guardian's consent, with the declared relationship, is recorded and audited.
                await repo.add_consent(
                    Consent(
                        new_id(),
                        actor.account_id,
                        person.id,
                        ConsentKind.GUARDIAN,
                        new.consent_version,
                        new.channel,
                        now,
                    )
                )
            await uow.audit.record(
                self._audit(
                    actor,
                    "patient.add",
                    Outcome.SUCCESS,
                    object_id=link.id,
                    details={
                        "relationship": new.relationship.value,
                        "state": state.value,
                        "verification": method.value,
                        "guardianConsent": "yes" if child else "no",
                    },
                ),
                now=now,
            )
            await uow.commit()
        if code is not None and phone is not None:
            await self._send_confirm_code(phone, code)
        return Patient(link, person)

    async def _verified_self(self, account_id: str) -> Person:
        async with self.d.uow_factory() as uow:
            links = await uow.patients.links(account_id, states=(PatientState.ACTIVE,))
            for link in links:
                if link.relationship is Relationship.SELF:
                    person = await uow.patients.resolve(link.person_id)
                    if person is not None and person.verified and person.doc_number:
                        return person
        raise GuardianUnverifiedError("the guardian has no verified self patient")

    async def _send_confirm_code(self, phone: str, code: str) -> None:
        if self.d.sms is None:
            raise UnavailableError("no SMS provider", code="sms.not_configured")
        minutes = str(int(self.d.policy.confirm_code_ttl.total_seconds() // 60))
        await self.d.sms.send(phone, "patient_confirm", {"code": code, "minutes": minutes})

    async def resend_confirmation(self, actor: Actor, patient_id: str) -> datetime:
        await self._limit("patient-confirm-send", 1, self.d.policy.confirm_resend_seconds, patient_id)
        now = self._now()
        code = "".join(secrets.choice("0123456789") for _ in range(6))
        async with self.d.uow_factory() as uow:
            link = await uow.patients.link(actor.account_id, patient_id)
            if link is None or link.state is not PatientState.PENDING:
                raise PatientNotFoundError("no pending patient")
            person = await uow.patients.resolve(link.person_id)
            assert person is not None
            expires = now + self.d.policy.confirm_code_ttl
            await uow.patients.save_link(
                replace(
                    link,
                    confirm_code_hash=self._hash_code(link.id, code),
                    confirm_expires_at=expires,
                    confirm_attempts=0,
                )
            )
            await uow.commit()
        if person.phone is None:
            raise PhoneRequiredError("no phone to confirm with")
        await self._send_confirm_code(person.phone, code)
        return expires

    async def confirm(self, actor: Actor, patient_id: str, code: str) -> Patient:
        """The adult gave the account holder the code sent to their own phone: they agree to be managed."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            link = await uow.patients.link(actor.account_id, patient_id)
            if link is None or link.state is not PatientState.PENDING:
                raise PatientNotFoundError("no pending patient")
            failure: ValidationError | None = None
            if link.confirm_attempts >= self.d.policy.confirm_code_attempts:
                failure = ConfirmLockedError("too many attempts")
            elif link.confirm_code_hash is None or link.confirm_expires_at is None or link.confirm_expires_at <= now:
                failure = ConfirmCodeError("expired")
            elif not secrets.compare_digest(link.confirm_code_hash, self._hash_code(link.id, code.strip())):
                failure = ConfirmCodeError("wrong code")
                await uow.patients.save_link(replace(link, confirm_attempts=link.confirm_attempts + 1))
            if failure is not None:
                await uow.audit.record(
                    self._audit(actor, "patient.confirm", Outcome.FAILURE, object_id=link.id, reason=failure.code),
                    now=now,
                )
                await uow.commit()
                raise failure
            patient = await self._activate(uow, actor, link, channel="sms", now=now)
            await uow.commit()
        return patient

    async def _activate(
        self, uow: PatientUnitOfWork, actor: Actor, link: PatientLink, *, channel: str, now: datetime
    ) -> Patient:
        confirmed = replace(
            link, state=PatientState.ACTIVE, confirmed_at=now, confirm_code_hash=None, confirm_expires_at=None
        )
        await uow.patients.save_link(confirmed)
        person = await uow.patients.resolve(link.person_id)
        assert person is not None
        await uow.patients.add_consent(
            Consent(
                new_id(),
                actor.account_id,
                person.id,
                ConsentKind.MANAGED_BY,
                self.d.policy.consent_version,
                channel,
                now,
            )
        )
        await uow.audit.record(
            self._audit(actor, "patient.confirm", Outcome.SUCCESS, object_id=link.id, details={"channel": channel}),
            now=now,
        )
        return Patient(confirmed, person)

    async def start_face_confirmation(self, actor: Actor, patient_id: str, *, redirect_url: str | None) -> FaceSession:
        """The other way an adult confirms: a face check of that person, done on their own phone through the
        provider's page (the account holder passes the link on). The session token stays on our side."""
        async with self.d.uow_factory() as uow:
            link = await uow.patients.link(actor.account_id, patient_id)
            if link is None or link.state is not PatientState.PENDING:
                raise PatientNotFoundError("no pending patient")
            person = await uow.patients.resolve(link.person_id)
        assert person is not None
        if self.d.verifier is None:
            raise UnavailableError("no real-name verifier configured", code="verification.not_configured")
        if not person.doc_number:
            raise DocumentRequiredError("a face check needs the ID number")
        await self._limit("patient-face", 5, 3600, patient_id)
        session = await self.d.verifier.start_face(person.name, person.doc_number, redirect_url=redirect_url)
        ttl = max(1.0, (session.expires_at - self._now()).total_seconds())
        await self._store().set(f"face:{link.id}", session.token.encode(), ttl_seconds=ttl)
        return session

    async def finish_face_confirmation(self, actor: Actor, patient_id: str) -> Patient:
        token = await self._store().get(f"face:{patient_id}")
        async with self.d.uow_factory() as uow:
            link = await uow.patients.link(actor.account_id, patient_id)
        if link is None or link.state is not PatientState.PENDING or token is None:
            raise PatientNotFoundError("no pending patient with a face check")
        assert self.d.verifier is not None
        result = await self.d.verifier.face_result(token.decode())  # FaceCheckPendingError passes through (409)
        now = self._now()
        async with self.d.uow_factory() as uow:
            link = await uow.patients.link(actor.account_id, patient_id)
            if link is None or link.state is not PatientState.PENDING:
                raise PatientNotFoundError("no pending patient")
            if result.outcome is not VerificationOutcome.MATCH:
                await uow.audit.record(
                    self._audit(
                        actor,
                        "patient.confirm",
                        Outcome.FAILURE,
                        object_id=link.id,
                        reason=result.outcome.value,
                        details={"channel": "face"},
                    ),
                    now=now,
                )
                await uow.commit()
                await self._store().delete(f"face:{patient_id}")
                raise VerificationFailedError("face check failed")
            patient = await self._activate(uow, actor, link, channel="face", now=now)
            await uow.commit()
        await self._store().delete(f"face:{patient_id}")
        return patient

    # ------------------------------------------------------------------ reading

    async def list(self, actor: Actor) -> Sequence[Patient]:
        """The account's confirmed patients (pending adults stay invisible until they confirm)."""
        async with self.d.uow_factory() as uow:
            links = await uow.patients.links(actor.account_id, states=(PatientState.ACTIVE,))
            found: list[Patient] = []
            seen: set[str] = set()
            for link in links:
                person = await uow.patients.resolve(link.person_id)
                if person is None or person.id in seen:
                    continue
                seen.add(person.id)
                found.append(Patient(link, person))
            await uow.audit.record(
                self._audit(actor, "patient.list", Outcome.SUCCESS, details={"count": str(len(found))}),
                now=self._now(),
            )
            await uow.commit()
        return found

    async def _patient(
        self, uow: PatientUnitOfWork, actor: Actor, patient_id: str, *, pending: bool = False
    ) -> Patient:
        link = await uow.patients.link(actor.account_id, patient_id)
        allowed = (PatientState.ACTIVE, PatientState.PENDING) if pending else (PatientState.ACTIVE,)
        if link is None or link.state not in allowed:
            raise PatientNotFoundError("no such patient on this account")
        person = await uow.patients.resolve(link.person_id)
        if person is None:
            raise PatientNotFoundError("person gone")
        return Patient(link, person)

    async def get(self, actor: Actor, patient_id: str, *, action: str = "patient.read") -> Patient:
        async with self.d.uow_factory() as uow:
            patient = await self._patient(uow, actor, patient_id)
            await uow.audit.record(self._audit(actor, action, Outcome.SUCCESS, object_id=patient_id), now=self._now())
            await uow.commit()
        return patient

    async def reveal_document(self, actor: Actor, patient_id: str) -> Patient:
        """The full ID number, after a step-up check; every reveal is audited."""
        await self.require_step_up(actor)
        return await self.get(actor, patient_id, action="patient.reveal")

    async def person_ids_of(self, account_id: str) -> Sequence[str]:
        """The persons this account manages (active patients): whose bookings and payments it sees."""
        async with self.d.uow_factory() as uow:
            links = await uow.patients.links(account_id, states=(PatientState.ACTIVE,))
        return [link.person_id for link in links]

    async def usable(self, account_id: str, patient_id: str) -> Patient:
        """For booking, paying and reports (NET-030): an active, verified patient of this account, whose health
        data this account may process (SEC-P-03: a withdrawn consent stops new processing)."""
        async with self.d.uow_factory() as uow:
            patient = await self._patient(uow, Actor(account_id, ""), patient_id)
            consents = await uow.patients.consents(patient.link.person_id)
        if not patient.person.verified:
            raise PatientUnverifiedError("unverified")
        if not any(
            c.kind is ConsentKind.HEALTH_DATA and c.account_id == account_id and c.withdrawn_at is None
            for c in consents
        ):
            raise ConsentWithdrawnError("no live health-data consent")
        return patient

    async def consents(self, actor: Actor, patient_id: str) -> Sequence[Consent]:
        """The consent records of this account for the patient (SEC-P-03, SEC-P-05)."""
        async with self.d.uow_factory() as uow:
            patient = await self._patient(uow, actor, patient_id)
            found = await uow.patients.consents(patient.link.person_id)
        return [c for c in found if c.account_id == actor.account_id]

    async def withdraw_consent(self, actor: Actor, patient_id: str) -> int:
        """SEC-P-05 (PIPL Art. 15): withdraw the separate health-data consent. Processing already done stays;
        booking, paying and reading reports for this patient stop until consent is given again."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            patient = await self._patient(uow, actor, patient_id)
            count = await uow.patients.withdraw_consents(
                actor.account_id, patient.link.person_id, ConsentKind.HEALTH_DATA.value, now=now
            )
            await uow.audit.record(
                self._audit(actor, "patient.consent_withdrawn", Outcome.SUCCESS, object_id=patient_id), now=now
            )
            await uow.commit()
        return count

    async def give_consent(self, actor: Actor, patient_id: str, *, version: str, channel: str) -> Consent:
        if version != self.d.policy.consent_version:
            raise ConsentRequiredError("consent version outdated")
        now = self._now()
        async with self.d.uow_factory() as uow:
            patient = await self._patient(uow, actor, patient_id)
            consent = Consent(
                new_id(), actor.account_id, patient.link.person_id, ConsentKind.HEALTH_DATA, version, channel, now
            )
            await uow.patients.add_consent(consent)
            await uow.audit.record(
                self._audit(actor, "patient.consent_given", Outcome.SUCCESS, object_id=patient_id), now=now
            )
            await uow.commit()
        return consent

    # ------------------------------------------------------------------ changing

    async def update(
        self, actor: Actor, patient_id: str, *, relationship: Relationship | None = None, phone: str | None = None
    ) -> Patient:
        """Change the relationship or the patient's phone. A new phone needs a step-up and, for an adult, the
        three-factor check again."""
        if phone is not None:
            await self.require_step_up(actor)
        async with self.d.uow_factory() as uow:
            patient = await self._patient(uow, actor, patient_id)
        if relationship is not None and (relationship is Relationship.SELF) != (
            patient.link.relationship is Relationship.SELF
        ):
            raise ValidationError(
                "self cannot change", code="patient.self_fixed", message="“本人”关系不能修改，请删除后重新添加"
            )
        number = normalise_phone(phone) if phone is not None else None
        person = patient.person
        if number is not None and person.doc_number and person.age_on(self._today()) >= self.d.policy.adult_age:
            await self._verify(actor, "id3", person.name, person.doc_number, number)
        now = self._now()
        async with self.d.uow_factory() as uow:
            patient = await self._patient(uow, actor, patient_id)
            link, person = patient.link, patient.person
            if relationship is not None:
                link = replace(link, relationship=relationship)
                await uow.patients.save_link(link)
            if number is not None:
                person = replace(person, phone=number)
                await uow.patients.save_person(person, phone_index=self.phone_index(number))
            await uow.audit.record(
                self._audit(
                    actor,
                    "patient.update",
                    Outcome.SUCCESS,
                    object_id=patient_id,
                    details={
                        "fields": ",".join(k for k, v in (("relationship", relationship), ("phone", number)) if v)
                    },
                ),
                now=now,
            )
            await uow.commit()
        return Patient(link, person)

    async def remove(self, actor: Actor, patient_id: str) -> None:
        """Soft removal: the account no longer sees the patient; the person and their records stay as the law
        requires (SEC-P-07)."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            link = await uow.patients.link(actor.account_id, patient_id)
            if link is None or link.state is PatientState.REMOVED:
                raise PatientNotFoundError("no such patient")
            await uow.patients.save_link(replace(link, state=PatientState.REMOVED, removed_at=now))
            await uow.audit.record(self._audit(actor, "patient.remove", Outcome.SUCCESS, object_id=patient_id), now=now)
            await uow.commit()

    # ------------------------------------------------------------------ e-health card (ID-030..032)

    def _cards(self) -> HealthCardPlatform:
        if self.d.cards is None:
            raise UnavailableError("no card platform", code="healthcard.not_configured")
        return self.d.cards

    async def register_card(self, actor: Actor, patient_id: str, *, wechat_code: str | None = None) -> Patient:
        """Register a card for a verified patient (one person, one card: the platform returns an existing one)."""
        patient = await self.usable(actor.account_id, patient_id)
        person = patient.person
        if person.health_card_id:
            return patient
        if person.doc_number is None or person.doc_type is None:
            raise ValidationError(
                "card needs a document", code="healthcard.document_required", message="办理电子健康卡需要有效证件"
            )
        holder = await self._cards().register(
            CardRegistration(
                name=person.name,
                sex="男" if person.sex == "M" else "女",
                birth_date=person.birth_date.isoformat(),
                id_type=person.doc_type,
                id_number=person.doc_number,
                phone=person.phone or await self._account_phone(actor.account_id),
                wechat_code=wechat_code,
                relation=patient.link.relationship.value,
            )
        )
        return await self._attach_card(actor, patient, holder, "healthcard.register")

    async def bind_card(
        self,
        actor: Actor,
        patient_id: str,
        *,
        health_code: str | None = None,
        qr_code_text: str | None = None,
    ) -> Patient:
        """Bind an existing card: from a one-time health code (WeChat: the platform needs the resident's openid)
        or from the card's static QR text (any front end). The card's holder must be this patient."""
        patient = await self.usable(actor.account_id, patient_id)
        cards = self._cards()
        if health_code:
            relate_app_id, relate_open_id = await self._wechat_identity(actor.account_id)
            holder = await cards.by_health_code(health_code, relate_app_id=relate_app_id, relate_open_id=relate_open_id)
        elif qr_code_text:
            holder = await cards.by_qr_code(qr_code_text)
        else:
            raise ValidationError(
                "health code or QR text required", code="healthcard.code_required", message="请提供健康卡授权码或二维码"
            )
        person = patient.person
        if (
            holder.name != person.name
            or holder.id_number.upper() != (person.doc_number or "")
            or (holder.id_type != person.doc_type)
        ):
            async with self.d.uow_factory() as uow:
                await uow.audit.record(
                    self._audit(
                        actor, "healthcard.bind", Outcome.FAILURE, object_id=patient_id, reason="holder_mismatch"
                    ),
                    now=self._now(),
                )
                await uow.commit()
            raise CardMismatchError("card holder differs")
        return await self._attach_card(actor, patient, holder, "healthcard.bind")

    async def _attach_card(self, actor: Actor, patient: Patient, holder: CardHolder, action: str) -> Patient:
        now = self._now()
        async with self.d.uow_factory() as uow:
            other = await uow.patients.person_by_card(holder.health_card_id)
            if other is not None and other.id != patient.person.id:
                raise CardTakenError("card bound to another person")
            person = await uow.patients.resolve(patient.person.id)
            assert person is not None
            person = replace(
                person, health_card_id=holder.health_card_id, phid=holder.phid, card_qr_text=holder.qr_code_text
            )
            await uow.patients.save_person(person, phone_index=self.phone_index(person.phone) if person.phone else None)
            await uow.audit.record(self._audit(actor, action, Outcome.SUCCESS, object_id=patient.link.id), now=now)
            await uow.commit()
        return Patient(patient.link, person)

    async def _wechat_identity(self, account_id: str, *, required: bool = True) -> tuple[str, str]:
        """The account's WeChat mini-program (appid, openid): the card platform's ``relateAppId`` and
        ``relateOpenId``. Residents who use only Alipay or the app have none (see docs/patients.md)."""
        async with self.d.uow_factory() as uow:
            identities = await uow.accounts.identities(account_id)
        for identity in identities:
            if identity.provider is Provider.WECHAT:
                return identity.app_id, identity.subject
        if required:
            raise ForbiddenError(
                "no WeChat identity",
                code="healthcard.wechat_required",
                message="此功能需在微信小程序中使用；支付宝和App用户可出示健康卡静态二维码",
            )
        return "", ""

    async def card(self, actor: Actor, patient_id: str) -> Patient:
        patient = await self.get(actor, patient_id, action="healthcard.read")
        if not patient.person.health_card_id:
            raise CardMissingError("no card")
        return patient

    async def card_png(self, actor: Actor, patient_id: str) -> bytes:
        patient = await self.card(actor, patient_id)
        assert patient.person.card_qr_text is not None
        return self._cards().static_png(patient.person.card_qr_text)

    async def dynamic_code(self, actor: Actor, patient_id: str) -> DynamicCode:
        """A fresh dynamic QR code; it expires (ID-032) and the platform refuses it afterwards."""
        patient = await self.card(actor, patient_id)
        person = patient.person
        assert person.health_card_id is not None
        relate_app_id, relate_open_id = await self._wechat_identity(actor.account_id)
        return await self._cards().dynamic_code(
            person.health_card_id,
            id_type=person.doc_type or "01",
            id_number=person.doc_number or "",
            relate_app_id=relate_app_id,
            relate_open_id=relate_open_id,
        )

    async def report_card_use(
        self, account_id: str, person_id: str, hospital_code: str, scene: str, *, key: str | None = None
    ) -> bool:
        """用卡数据上报. Booking, payment and report features put ``card_use_message(...)`` in their outbox in the
        same transaction as their event; the relay calls this with the message id as ``key``, so a message
        relayed twice is reported once. A person without a card, or a use through an account without WeChat (the
        platform needs the openid), has nothing to report. Scene and channel codes come from configuration."""
        async with self.d.uow_factory() as uow:
            person = await uow.patients.resolve(person_id)
        if person is None or not person.card_qr_text:
            return False
        relate_app_id, relate_open_id = await self._wechat_identity(account_id, required=False)
        if not relate_open_id:
            return False
        marker = f"card-use:{key}" if key else None
        if marker is not None and not await self._store().set_if_absent(marker, b"1", ttl_seconds=7 * 86400):
            return False
        try:
            await self._report(person, hospital_code, scene, relate_app_id, relate_open_id)
        except Exception:
            if marker is not None:
                await self._store().delete(marker)
            raise
        return True

    async def _report(
        self, person: Person, hospital_code: str, scene: str, relate_app_id: str, relate_open_id: str
    ) -> None:
        assert person.card_qr_text is not None
        codes = self.d.card_codes
        await self._cards().report_use(
            CardUse(
                qr_code_text=person.card_qr_text,
                at=self._now(),
                hospital_code=hospital_code,
                scene=codes.scenes.get(scene, scene),
                department=codes.department,
                card_type=codes.card_type,
                card_channel=codes.card_channel,
                cost_types=codes.cost_types,
            ),
            relate_app_id=relate_app_id,
            relate_open_id=relate_open_id,
        )

    # ------------------------------------------------------------------ hospital records

    async def _his_record(self, person_id: str, hospital_code: str) -> tuple[Person, str | None, PatientDocument]:
        """The person (merges followed), the patid already stored for the hospital, and what the HIS matches
        the person on."""
        async with self.d.uow_factory() as uow:
            person = await uow.patients.resolve(person_id)
            if person is None:
                raise PatientNotFoundError("no person")
            stored = await uow.patients.hospital_patid(person.id, hospital_code)
            guardian = await uow.patients.resolve(person.guardian_person_id) if person.guardian_person_id else None
        document = PatientDocument(
            name=person.name,
            sex=person.sex,
            birth_date=person.birth_date,
            id_type=person.doc_type,
            id_number=person.doc_number,
            phone=person.phone,
            guardian_id_type=guardian.doc_type if guardian else None,
            guardian_id_number=guardian.doc_number if guardian else None,
            guardian_name=guardian.name if guardian else None,
        )
        return person, stored, document

    def _his(self) -> HisGateway:
        if self.d.his is None:
            raise UnavailableError("no HIS gateway", code="his.not_configured")
        return self.d.his

    async def _keep_patid(self, person_id: str, hospital_code: str, patid: str) -> str:
        """Store the hospital's patid for the person; the first stored one wins (and is answered)."""
        async with self.d.uow_factory() as uow:
            if not await uow.patients.set_hospital_patid(person_id, hospital_code, patid, now=self._now()):
                existing = await uow.patients.hospital_patid(person_id, hospital_code)
                assert existing is not None
                patid = existing
            await uow.commit()
        return patid

    async def hospital_patid(self, person_id: str, hospital_code: str) -> str:
        """The hospital's own patient id, found or created in its HIS the first time the person books or pays
        there (never merely by browsing). Idempotent: the HIS call carries a key, and the first stored id wins."""
        person, stored, document = await self._his_record(person_id, hospital_code)
        if stored is not None:
            return stored
        patid = (
            await self._his()
            .for_hospital(hospital_code)
            .find_or_create(document, key=f"patient:{person.id}:{hospital_code}")
        )
        return await self._keep_patid(person.id, hospital_code, patid)

    async def find_hospital_patid(self, person_id: str, hospital_code: str) -> str | None:
        """The hospital's patient id when it has a record of the person: the one stored, else a search at its HIS
        (a person registered there on site has a record before ever booking or paying here). A record found is
        stored; none is ever created (only booking or paying creates one: ``hospital_patid``)."""
        person, stored, document = await self._his_record(person_id, hospital_code)
        if stored is not None:
            return stored
        patid = await self._his().for_hospital(hospital_code).find(document)
        if patid is None:
            return None
        return await self._keep_patid(person.id, hospital_code, patid)

    # ------------------------------------------------------------------ operators (ID-033)

    async def merge_persons(self, staff: str, source_id: str, target_id: str, *, reason: str) -> PersonMerge:
        """Merge ``source`` into ``target`` (the same human recorded twice). Reversible; audited."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            source = await uow.patients.person(source_id)
            target = await uow.patients.resolve(target_id)
            if source is None or target is None:
                raise PatientNotFoundError("no such person")
            if source.merged_into is not None or source.id == target.id:
                raise MergeError("already merged or the same person")
            if source.birth_date != target.birth_date or source.sex != target.sex:
                raise MergeError("different birth date or sex", message="出生日期或性别不同，不能合并")
            merge = PersonMerge(new_id(), source.id, target.id, staff, reason[:200], now)
            await uow.patients.add_merge(merge)
            await uow.audit.record(
                self._audit(
                    None,
                    "person.merge",
                    Outcome.SUCCESS,
                    object_type="person",
                    object_id=source.id,
                    staff=staff,
                    reason=reason[:200],
                    details={"target": target.id, "merge": merge.id},
                ),
                now=now,
            )
            await uow.commit()
        return merge

    async def undo_merge(self, staff: str, merge_id: str, *, reason: str) -> PersonMerge:
        now = self._now()
        async with self.d.uow_factory() as uow:
            merge = await uow.patients.merge(merge_id)
            if merge is None or merge.undone_at is not None:
                raise PatientNotFoundError("no live merge")
            await uow.patients.undo_merge(merge_id, now=now)
            await uow.audit.record(
                self._audit(
                    None,
                    "person.unmerge",
                    Outcome.SUCCESS,
                    object_type="person",
                    object_id=merge.source_person_id,
                    staff=staff,
                    reason=reason[:200],
                    details={"target": merge.target_person_id, "merge": merge.id},
                ),
                now=now,
            )
            await uow.commit()
        return replace(merge, undone_at=now)

    async def find_person(self, staff: str, doc_type: str, number: str) -> Person | None:
        doc = parse_document(doc_type, number, today=self._today())
        async with self.d.uow_factory() as uow:
            person = await uow.patients.person_by_document(self.doc_index(str(doc.doc_type), doc.number))
            await uow.audit.record(
                self._audit(
                    None,
                    "person.lookup",
                    Outcome.SUCCESS,
                    object_type="person",
                    object_id=person.id if person else None,
                    staff=staff,
                ),
                now=self._now(),
            )
            await uow.commit()
        return person


CARD_USE_TOPIC = "healthcard.used"


def card_use_message(account_id: str, person_id: str, hospital_code: str, scene: str) -> tuple[str, dict[str, str]]:
    """The outbox topic and payload that make the relay report one card use (scene: ``booking``, ``payment``,
    ``report`` or a platform scene code)."""
    return CARD_USE_TOPIC, {
        "accountId": account_id,
        "personId": person_id,
        "hospitalCode": hospital_code,
        "scene": scene,
    }


def _age(birth: date, day: date) -> int:
    years = day.year - birth.year
    if (day.month, day.day) < (birth.month, birth.day):
        years -= 1
    return years
