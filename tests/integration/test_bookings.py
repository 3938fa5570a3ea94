"""Booking on the real PostgreSQL (issue: booking): holds race for numbers and never oversell, a person's limits
hold under concurrent holds, and the saga runs hold -> pay -> confirm at the HIS (or refuse -> refund), expiry
and cancellation. The payment channel and the HIS are fakes of their ports; the database is real."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy as sa

from domain.booking.model import Booking, BookingState
from domain.booking.rules import BookingPolicy
from domain.booking.use_cases import BookingDeps, BookingService
from domain.catalogue.model import (
    HisRegistration,
    Hospital,
    HospitalLevel,
    Period,
    ScheduleSession,
    SessionStatus,
    Slot,
)
from domain.catalogue.ports import HisRejectedError
from domain.kernel.clock import SHANGHAI
from domain.kernel.errors import DomainError
from domain.kernel.ids import new_id
from domain.kernel.outbox import OutboxMessage
from domain.kernel.relay import relay_outbox
from domain.patient.model import (
    Consent,
    ConsentKind,
    PatientLink,
    PatientState,
    Person,
    Relationship,
    VerificationMethod,
)
from domain.patient.use_cases import PatientDeps, PatientService
from domain.payment.machine import OrderState, RefundState
from domain.payment.use_cases import PaymentDeps, PaymentPolicy, PaymentService
from integrations.crypto.keys import Keyring, generate_keyring_config
from integrations.crypto.suite import build_suite
from notifications import tasks as _tasks  # noqa: F401  (registers the topic handlers)
from notifications.registry import registry
from notifications.runtime import WorkerRuntime
from persistence.db import ConnectionSource
from persistence.ephemeral.slot_gate import rebuild_gate
from persistence.uow import SqlUnitOfWork, unit_of_work_factory
from tests.integration.test_payments import PAYER, ModelChannel, last_out_trade_no
from tests.support.app import FixedClock
from tests.support.catalogue import FakeGateway, FakeHis
from tests.support.patients import citizen_id

HOSPITAL = "H001"
NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
"""10:00 in Beijing; the sessions below are the day after tomorrow (open since the 17th, APT-004)."""
VISIT_DAY = date(2026, 11, 24)
FEE = 1500


@dataclass
class BookingHis(FakeHis):
    """The fake HIS with registrations: confirm is idempotent by key; ``refuse`` makes the next ones refused."""

    registrations: dict[str, HisRegistration] = field(default_factory=dict)
    refuse: int = 0
    cancels: list[str] = field(default_factory=list)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    async def confirm(self, slot_id: str, *, patid: str, key: str, lock_id: str | None = None) -> HisRegistration:
        self._check()
        if key in self.registrations:
            return self.registrations[key]
        if self.refuse > 0:
            self.refuse -= 1
            raise HisRejectedError("the HIS has no number left for this slot")
        registration = HisRegistration(f"REG-{len(self.registrations) + 1}", next(self._numbers))
        self.registrations[key] = registration
        return registration

    async def cancel(self, registration_id: str, *, reason: str, key: str) -> None:
        self._check()
        self.cancels.append(registration_id)


class RecordingDispatcher:
    def __init__(self) -> None:
        self.messages: list[OutboxMessage] = []

    async def dispatch(self, message: OutboxMessage) -> None:
        self.messages.append(message)


@dataclass
class Stack:
    bookings: BookingService
    payments: PaymentService
    patients: PatientService
    his: BookingHis
    wechat: ModelChannel
    clock: FixedClock
    source: ConnectionSource
    dispatcher: RecordingDispatcher = field(default_factory=RecordingDispatcher)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(100), repr=False)

    @property
    def runtime(self) -> WorkerRuntime:
        return cast(WorkerRuntime, SimpleNamespace(services={"bookings": self.bookings}))

    async def patient(self, account_id: str, *, person_id: str | None = None) -> tuple[str, str]:
        """An active, verified, consenting patient of the account: (patient id, person id). With ``person_id``
        the account manages a person another account already manages (two parents, one child)."""
        now = self.clock.now()
        async with SqlUnitOfWork(self.source, cipher=self.patients.d.cipher) as uow:
            if person_id is None:
                seq = next(self._seq)
                person = Person(
                    id=new_id(),
                    name="王芳",
                    sex="F",
                    birth_date=date(1990, 1, 1),
                    created_at=now,
                    doc_type="01",
                    doc_number=citizen_id("110105", "19900101", f"{seq % 1000:03d}"),
                    verified_at=now,
                    verification=VerificationMethod.ID_TWO_FACTOR,
                )
                await uow.patients.add_person(person, doc_index=new_id(), phone_index=None)
                person_id = person.id
            link = PatientLink(new_id(), account_id, person_id, Relationship.SELF, PatientState.ACTIVE, now, now)
            await uow.patients.add_link(link)
            await uow.patients.add_consent(
                Consent(new_id(), account_id, person_id, ConsentKind.HEALTH_DATA, "2026-11", "app", now)
            )
            await uow.commit()
        return link.id, person_id

    async def session(
        self, department: str, *, slots: int = 1, capacity: int = 1, fee: int = FEE, day: date = VISIT_DAY
    ) -> list[str]:
        """An open session of ``slots`` half-hour slots from 08:00 Beijing time; their ids."""
        session_id = f"S-{department}-{day:%Y%m%d}-{new_id()[:6]}"
        start = datetime.combine(day, datetime.min.time(), SHANGHAI).replace(hour=8)
        items = tuple(
            Slot(
                HOSPITAL,
                f"{session_id}-{i}",
                session_id,
                start + timedelta(minutes=30 * i),
                start + timedelta(minutes=30 * (i + 1)),
                capacity,
            )
            for i in range(slots)
        )
        session = ScheduleSession(
            HOSPITAL, session_id, department, "D01", day, Period.MORNING, SessionStatus.OPEN, fee, items
        )
        async with SqlUnitOfWork(self.source) as uow:
            await uow.catalogue.upsert_session(session, now=self.clock.now())
            for slot in items:
                await uow.catalogue.insert_slot(slot, now=self.clock.now())
            await uow.commit()
        return [s.id for s in items]

    async def taken(self, slot_id: str) -> int:
        async with SqlUnitOfWork(self.source) as uow:
            value = await uow.connection.execute(
                sa.text("SELECT taken FROM clinic_slots WHERE hospital_code = :h AND id = :s"),
                {"h": HOSPITAL, "s": slot_id},
            )
            return int(value.scalar_one())

    async def get(self, booking_id: str) -> Booking:
        async with SqlUnitOfWork(self.source) as uow:
            booking = await uow.bookings.get(booking_id)
        assert booking is not None
        return booking

    async def run_outbox(self) -> list[OutboxMessage]:
        """Relay the outbox and hand every message to the worker's handlers, until nothing new comes."""
        seen: list[OutboxMessage] = []
        while True:
            start = len(self.dispatcher.messages)
            while await relay_outbox(unit_of_work_factory(self.source), self.dispatcher, self.clock.now()):
                pass
            batch = self.dispatcher.messages[start:]
            if not batch:
                return seen
            seen.extend(batch)
            for message in batch:
                if message.topic.startswith(("booking.", "payment.")):
                    for handler in registry.topics.get(message.topic, []):
                        if handler.__module__ == "notifications.tasks" and "bill" in handler.__qualname__:
                            continue
                        await handler(self.runtime, message.payload, message.id)

    async def resident_pays(self, account_id: str, booking: Booking) -> None:
        assert booking.payment_order_id is not None
        await self.payments.pay(account_id, booking.payment_order_id, "wechat", PAYER)
        trade = self.wechat.resident_pays(last_out_trade_no(self.wechat))
        await self.payments.apply_trade("wechat", trade)


@pytest.fixture
async def s(committed_source: ConnectionSource) -> Stack:
    cfg = generate_keyring_config()
    suite = build_suite("intl", Keyring.from_config(cfg["active_kid"], cfg["keys"], cfg["index_key"]))
    clock = FixedClock(NOW)
    factory = unit_of_work_factory(committed_source, cipher=suite.cipher)
    his = BookingHis(HOSPITAL, clock=clock)
    gateway = FakeGateway({HOSPITAL: his})
    wechat = ModelChannel("wechat")
    payments = PaymentService(
        PaymentDeps(
            uow_factory=factory, clock=clock, channels={"wechat": wechat}, policy=PaymentPolicy(refund_backoff=(30,))
        )
    )
    patients = PatientService(
        PatientDeps(
            uow_factory=factory,
            clock=clock,
            cipher=suite.cipher,
            blind_index=suite.blind_index,
            mac=suite.mac,
            his=gateway,
        )
    )
    bookings = BookingService(
        BookingDeps(
            uow_factory=factory,
            clock=clock,
            patients=patients,
            payments=payments,
            his=gateway,
            policy=BookingPolicy(),
            max_holds_in_flight=1000,  # races go all the way to PostgreSQL; the limit has its own test
            gate_rebuild=lambda gate, first, last: rebuild_gate(gate, committed_source, first_day=first, last_day=last),
        )
    )
    async with SqlUnitOfWork(committed_source) as uow:
        await uow.catalogue.add_hospital(
            Hospital(code=HOSPITAL, name="市第一人民医院", level=HospitalLevel.TERTIARY, region_code="110105"),
            now=clock.now(),
        )
        await uow.commit()
    return Stack(bookings, payments, patients, his, wechat, clock, committed_source)


async def refused(code: str, awaitable: Any) -> None:
    with pytest.raises(DomainError) as caught:
        await awaitable
    assert caught.value.code == code, caught.value


# --------------------------------------------------------------------------------------------- races (hard rules)


async def test_two_hundred_persons_race_for_ten_numbers_and_exactly_ten_win(s: Stack) -> None:
    """Never oversell: 200 concurrent holds on a slot of capacity 10 give exactly 10 bookings (all let through to
    PostgreSQL: no in-flight limit here)."""
    (slot,) = await s.session("0101", capacity=10)
    patients = [await s.patient(f"acct-{i}") for i in range(200)]
    results = await asyncio.gather(
        *(s.bookings.hold(f"acct-{i}", p, HOSPITAL, slot) for i, (p, _) in enumerate(patients)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Booking)]
    lost = [r for r in results if not isinstance(r, Booking)]
    assert len(won) == 10
    assert {getattr(e, "code", repr(e)) for e in lost} == {"booking.slot_full"}
    assert await s.taken(slot) == 10
    assert len({b.person_id for b in won}) == 10


async def test_concurrent_holds_of_one_person_cannot_both_pass_a_limit(s: Stack) -> None:
    """APT-005: one per department per day, two per day, counted per person across accounts (two parents of
    one child share the quota), under concurrent requests."""
    patient_a, person = await s.patient("parent-a")
    patient_b, _ = await s.patient("parent-b", person_id=person)
    same_department = await s.session("0201", slots=4, capacity=5)
    results = await asyncio.gather(
        *(
            s.bookings.hold("parent-a" if i % 2 else "parent-b", patient_a if i % 2 else patient_b, HOSPITAL, slot)
            for i, slot in enumerate(same_department)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Booking) for r in results) == 1
    assert {getattr(r, "code", None) for r in results if not isinstance(r, Booking)} == {"booking.limit_department_day"}
    # Two per day in total: two more departments, one of them refused.
    others = [(await s.session(dept))[0] for dept in ("0301", "0401")]
    results = await asyncio.gather(
        *(s.bookings.hold("parent-a", patient_a, HOSPITAL, slot) for slot in others), return_exceptions=True
    )
    assert sum(isinstance(r, Booking) for r in results) == 1
    assert [getattr(r, "code", None) for r in results if not isinstance(r, Booking)] == ["booking.limit_day"]


# --------------------------------------------------------------------------------------------- the saga


async def test_hold_pay_and_the_his_confirms(s: Stack) -> None:
    (slot,) = await s.session("0501")
    patient, _ = await s.patient("acct-1")
    booking = await s.bookings.hold("acct-1", patient, HOSPITAL, slot)
    assert booking.state is BookingState.HELD
    assert booking.payment_order_id is not None
    assert booking.deadlines.hold_expires_at == NOW + timedelta(minutes=15), "APT-009: 15 minutes to pay"
    await s.resident_pays("acct-1", booking)
    topics = [m.topic for m in await s.run_outbox()]
    assert "payment.paid" in topics
    assert "booking.confirm" in topics
    confirmed = await s.get(booking.id)
    assert confirmed.state is BookingState.CONFIRMED
    assert confirmed.his_registration_id == "REG-1"
    assert "booking.confirmed" in topics
    # The confirmation is idempotent at the HIS: a second confirm changes nothing.
    assert await s.bookings.confirm(booking.id) is BookingState.CONFIRMED
    assert len(s.his.registrations) == 1


async def test_a_refusal_by_the_his_refunds_the_booking_automatically(s: Stack) -> None:
    (slot,) = await s.session("0601")
    patient, _ = await s.patient("acct-1")
    booking = await s.bookings.hold("acct-1", patient, HOSPITAL, slot)
    s.his.refuse = 1
    await s.resident_pays("acct-1", booking)
    await s.run_outbox()
    failed = await s.get(booking.id)
    assert failed.state is BookingState.CONFIRM_FAILED
    assert await s.taken(slot) == 0, "the number went back"
    assert booking.payment_order_id is not None
    async with SqlUnitOfWork(s.source) as uow:
        order = await uow.payments.get(booking.payment_order_id)
    assert order is not None
    assert order.state is OrderState.REFUNDED
    assert [r.state for r in order.refunds] == [RefundState.SUCCEEDED]
    assert order.refunded_fen == FEE


async def test_an_unpaid_hold_expires_its_order_is_closed_and_the_number_goes_back(s: Stack) -> None:
    (slot,) = await s.session("0701")
    patient, _ = await s.patient("acct-1")
    booking = await s.bookings.hold("acct-1", patient, HOSPITAL, slot)
    assert booking.payment_order_id is not None
    await s.payments.pay("acct-1", booking.payment_order_id, "wechat", PAYER)
    s.clock.advance(16 * 60)
    assert await s.bookings.sweep() == {"expired": 1, "confirmed": 0}
    assert (await s.get(booking.id)).state is BookingState.EXPIRED
    assert await s.taken(slot) == 0
    assert s.wechat.closes, "the order was closed at the channel before the number went back"
    other, _ = await s.patient("acct-2")
    assert (await s.bookings.hold("acct-2", other, HOSPITAL, slot)).state is BookingState.HELD


async def test_a_confirmed_booking_cancelled_before_the_cutoff_is_refunded_and_cancelled_at_the_his(
    s: Stack,
) -> None:
    (slot,) = await s.session("0801")
    patient, _ = await s.patient("acct-1")
    booking = await s.bookings.hold("acct-1", patient, HOSPITAL, slot)
    await s.resident_pays("acct-1", booking)
    await s.run_outbox()
    cancelled = await s.bookings.cancel("acct-1", booking.id)
    assert cancelled.state is BookingState.CANCELLED
    await s.run_outbox()
    assert s.his.cancels == ["REG-1"]
    assert await s.taken(slot) == 0
    assert booking.payment_order_id is not None
    async with SqlUnitOfWork(s.source) as uow:
        order = await uow.payments.get(booking.payment_order_id)
    assert order is not None
    assert order.refunded_fen == FEE


async def test_cancelling_after_the_cutoff_is_refused(s: Stack) -> None:
    """APT-006: the day before at 15:00 by default."""
    (slot,) = await s.session("0901")
    patient, _ = await s.patient("acct-1")
    booking = await s.bookings.hold("acct-1", patient, HOSPITAL, slot)
    await s.resident_pays("acct-1", booking)
    await s.run_outbox()
    s.clock.current = datetime(2026, 11, 23, 15, 0, tzinfo=SHANGHAI).astimezone(UTC)
    await refused("booking.cancel_too_late", s.bookings.cancel("acct-1", booking.id))
    assert (await s.get(booking.id)).state is BookingState.CONFIRMED


async def test_another_account_cannot_see_or_cancel_a_booking(s: Stack) -> None:
    (slot,) = await s.session("1001")
    patient, _ = await s.patient("acct-1")
    booking = await s.bookings.hold("acct-1", patient, HOSPITAL, slot)
    await refused("booking.not_found", s.bookings.booking_for("acct-9", booking.id))
    await refused("booking.not_found", s.bookings.cancel("acct-9", booking.id))
    listed: Sequence[Booking] = await s.bookings.bookings_of("acct-1")
    assert [b.id for b in listed] == [booking.id]


async def test_unknown_slots_and_patients_are_refused_clearly(s: Stack) -> None:
    patient, _ = await s.patient("acct-1")
    await refused("booking.slot_not_found", s.bookings.hold("acct-1", patient, HOSPITAL, "NOPE"))
    (slot,) = await s.session("1101")
    await refused("patient.not_found", s.bookings.hold("acct-1", "not-a-patient", HOSPITAL, slot))


# --------------------------------------------------------------------------------------------- the Redis gate


async def test_the_gate_answers_sold_out_and_a_flushed_or_dead_redis_changes_nothing(
    s: Stack, redis_url: str, redis_prefix: str
) -> None:
    """The gate is a cache in front of PostgreSQL: it refuses sold-out slots without the database; losing it
    (flushed mid-race, or Redis unreachable) costs database round trips, never an oversell."""
    from persistence.ephemeral.slot_gate import RedisSlotGate

    prefix = f"{redis_prefix}gate:{new_id()}:"
    gate = RedisSlotGate.from_url(redis_url, prefix=prefix)
    dead = RedisSlotGate.from_url("redis://127.0.0.1:1/0", prefix="x:", socket_timeout=0.2)
    try:
        s.bookings.d.gate = gate
        (slot,) = await s.session("1201", capacity=10)
        assert await s.bookings.rebuild_gate() >= 1
        patients = [await s.patient(f"g-{i}") for i in range(120)]

        async def hold(i: int) -> Booking | BaseException:
            if i == 60:  # Redis loses everything in the middle of the storm (only this test's keys: others share it)
                keys = [k async for k in gate.client.scan_iter(match=prefix + "*")]
                assert keys
                await gate.client.delete(*keys)
            try:
                return await s.bookings.hold(f"g-{i}", patients[i][0], HOSPITAL, slot)
            except DomainError as exc:
                return exc

        results = await asyncio.gather(*(hold(i) for i in range(120)))
        assert sum(isinstance(r, Booking) for r in results) == 10
        assert await s.taken(slot) == 10
        await s.bookings.rebuild_gate()
        answer = await gate.admit(f"{HOSPITAL}:{slot}")
        assert answer.sold_out, "after a rebuild the gate knows the slot is full"

        # Redis unreachable: every request goes to PostgreSQL, which stays the truth.
        s.bookings.d.gate = dead
        (other,) = await s.session("1301", capacity=3)
        results = await asyncio.gather(
            *(s.bookings.hold(f"g-{i}", patients[i][0], HOSPITAL, other) for i in range(20)), return_exceptions=True
        )
        assert sum(isinstance(r, Booking) for r in results) == 3
        assert await s.taken(other) == 3
    finally:
        await gate.close()
        await dead.close()


async def test_holds_beyond_what_the_process_can_serve_are_turned_away_with_429(s: Stack) -> None:
    """Under the morning release a process does not queue more holds than its database pool serves: the rest are
    answered at once with 429 and Retry-After (clients honour it), never left to time out into a 5xx."""
    s.bookings.d.max_holds_in_flight = 2
    (slot,) = await s.session("1401", capacity=50)
    patients = [await s.patient(f"busy-{i}") for i in range(20)]
    results = await asyncio.gather(
        *(s.bookings.hold(f"busy-{i}", p, HOSPITAL, slot) for i, (p, _) in enumerate(patients)),
        return_exceptions=True,
    )
    busy = [r for r in results if isinstance(r, DomainError) and r.code == "booking.busy"]
    booked = [r for r in results if isinstance(r, Booking)]
    assert busy, "some holds were turned away"
    assert len(busy) + len(booked) == 20
    assert all(e.status == 429 and getattr(e, "retry_after", 0) >= 1 for e in busy)
    assert await s.taken(slot) == len(booked)
    assert s.bookings._holds_in_flight == 0
