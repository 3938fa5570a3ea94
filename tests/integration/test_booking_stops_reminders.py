"""Stopped sessions, appointment reminders and the doctor's schedule on the real PostgreSQL (issue: booking, items
4, 7 and 8). The harness is tests/integration/test_bookings.py's (fake HIS and payment channel, real database),
with the real notification service behind a fake push channel and the worker's topic handlers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import cast

import pytest
import sqlalchemy as sa

from domain.account.model import AccountKind, Audience, PractitionerLink, Session, StaffRole
from domain.account.use_cases import ClientContext
from domain.booking.doctor_schedule import ScheduleRangeError, doctor_schedule
from domain.booking.machine import SlotChanged
from domain.booking.model import Booking, BookingState
from domain.booking.reminders import ReminderPolicy, still_confirmed
from domain.booking.rules import BanEvent, BanRule, BookingPolicy, ban_until
from domain.booking.stops import on_session_stopped
from domain.booking.use_cases import BookingDeps, BookingService
from domain.catalogue.model import Hospital, HospitalLevel, Period, ScheduleSession, SessionStatus, Slot
from domain.catalogue.rules import BookingRules
from domain.catalogue.use_cases import CatalogueDeps, CatalogueService
from domain.kernel.clock import SHANGHAI
from domain.kernel.ids import new_id
from domain.kernel.outbox import OutboxMessage
from domain.kernel.relay import relay_outbox
from domain.notification.model import Channel, DeliveryState
from domain.notification.use_cases import NotificationDeps, NotificationService
from domain.patient.use_cases import PatientDeps, PatientService
from domain.payment.machine import OrderState
from domain.payment.use_cases import PaymentDeps, PaymentPolicy, PaymentService
from integrations.crypto.keys import Keyring, generate_keyring_config
from integrations.crypto.suite import build_suite
from notifications import tasks as _tasks  # noqa: F401  (registers the topic handlers)
from notifications.registry import registry
from notifications.runtime import WorkerRuntime
from persistence.db import ConnectionSource
from persistence.uow import SqlUnitOfWork, unit_of_work_factory
from tests.integration.test_accounts import bearer, make_staff, staff_login
from tests.integration.test_bookings import FEE, HOSPITAL, NOW, VISIT_DAY, BookingHis, Stack
from tests.integration.test_notifications import FakeChannel, Queue
from tests.integration.test_payments import ModelChannel
from tests.support.accounts import AccountHarness, build_account_harness
from tests.support.app import FixedClock, asgi_client
from tests.support.catalogue import FakeGateway

HOSPITAL_NAME = "市第一人民医院"


def beijing(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), SHANGHAI).astimezone(UTC)


EVE = VISIT_DAY - timedelta(days=1)


@dataclass
class Env:
    s: Stack
    notifications: NotificationService
    push: FakeChannel
    queue: Queue
    catalogue: CatalogueService

    @property
    def runtime(self) -> WorkerRuntime:
        return cast(
            WorkerRuntime, SimpleNamespace(services={"bookings": self.s.bookings, "notifications": self.notifications})
        )

    @property
    def clock(self) -> FixedClock:
        return self.s.clock

    async def run_outbox(self, *, skip: frozenset[str] = frozenset()) -> list[OutboxMessage]:
        """Relay the outbox and hand each message to the worker's handlers (bills aside), until nothing comes."""
        seen: list[OutboxMessage] = []
        dispatcher = self.s.dispatcher
        while True:
            start = len(dispatcher.messages)
            while await relay_outbox(unit_of_work_factory(self.s.source), dispatcher, self.clock.now()):
                pass
            batch = dispatcher.messages[start:]
            if not batch:
                return seen
            seen.extend(batch)
            for message in batch:
                if message.topic in skip:
                    continue
                await self.handle(message)

    async def handle(self, message: OutboxMessage) -> None:
        for handler in registry.topics.get(message.topic, []):
            if "bill" not in handler.__qualname__:
                await handler(self.runtime, message.payload, message.id)

    async def deliver(self) -> list[DeliveryState | None]:
        return [await self.notifications.deliver(i) for i in self.queue.take()]

    async def account(self) -> str:
        """A resident account the notification service reaches by app push."""
        account_id = new_id()
        async with SqlUnitOfWork(self.s.source) as uow:
            await uow.notifications.add_push_device(account_id, "apns", f"tok-{account_id}", now=self.clock.now())
            await uow.commit()
        return account_id

    async def session(
        self,
        department: str,
        start: datetime,
        *,
        slots: int = 1,
        capacity: int = 1,
        doctor: str = "D01",
    ) -> tuple[str, list[str]]:
        """An open session of half-hour slots from ``start`` at our side and at the (fake) HIS."""
        day = start.astimezone(SHANGHAI).date()
        session_id = f"S-{department}-{day:%Y%m%d}-{new_id()[:6]}"
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
        period = Period.MORNING if start.astimezone(SHANGHAI).hour < 12 else Period.AFTERNOON
        session = ScheduleSession(HOSPITAL, session_id, department, doctor, day, period, SessionStatus.OPEN, FEE, items)
        async with SqlUnitOfWork(self.s.source) as uow:
            await uow.catalogue.upsert_session(session, now=self.clock.now())
            for slot in items:
                await uow.catalogue.insert_slot(slot, now=self.clock.now())
            await uow.commit()
        self.s.his.sessions_[session_id] = session
        return session_id, [s.id for s in items]

    async def held(self, slot: str) -> Booking:
        account = await self.account()
        patient, _ = await self.s.patient(account)
        return await self.s.bookings.hold(account, patient, HOSPITAL, slot)

    async def paid(self, slot: str, *, confirm: bool = True) -> Booking:
        booking = await self.held(slot)
        await self.s.resident_pays(booking.account_id, booking)
        await self.run_outbox(skip=frozenset() if confirm else frozenset({"booking.confirm"}))
        paid = await self.s.get(booking.id)
        assert paid.state is (BookingState.CONFIRMED if confirm else BookingState.PAID)
        return paid

    async def reminders(self, booking_id: str) -> dict[str, tuple[str, datetime]]:
        """The booking's scheduled messages: key -> (state, due time)."""
        async with SqlUnitOfWork(self.s.source) as uow:
            rows = await uow.connection.execute(
                sa.text(
                    "SELECT key, state, due_at FROM scheduled_messages"
                    " WHERE subject_type = 'booking' AND subject_id = :id"
                ),
                {"id": booking_id},
            )
            return {k: (state, due.astimezone(UTC)) for k, state, due in rows}

    async def order_state(self, booking: Booking) -> tuple[OrderState, int, int]:
        assert booking.payment_order_id is not None
        async with SqlUnitOfWork(self.s.source) as uow:
            order = await uow.payments.get(booking.payment_order_id)
        assert order is not None
        return order.state, order.refunded_fen, len(order.refunds)


@pytest.fixture
async def env(committed_source: ConnectionSource) -> Env:
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
    push, queue = FakeChannel(Channel.APP_PUSH), Queue()
    notifications = NotificationService(
        NotificationDeps(
            uow_factory=factory, clock=clock, cipher=suite.cipher, runner=queue, senders={Channel.APP_PUSH: push}
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
            reminders=notifications,
        )
    )
    notifications.d.subject_checks["booking"] = still_confirmed(factory)  # as bootstrap wires it
    catalogue = CatalogueService(CatalogueDeps(uow_factory=factory, clock=clock, gateway=gateway))
    async with SqlUnitOfWork(committed_source) as uow:
        await uow.catalogue.add_hospital(
            Hospital(code=HOSPITAL, name=HOSPITAL_NAME, level=HospitalLevel.TERTIARY, region_code="110105"),
            now=clock.now(),
        )
        await uow.commit()
    stack = Stack(bookings, payments, patients, his, wechat, clock, committed_source)
    return Env(stack, notifications, push, queue, catalogue)


def doctor(roles: set[str], account_id: str | None = None) -> Session:
    now = NOW
    return Session(
        id=new_id(),
        account_id=account_id or new_id(),
        kind=AccountKind.STAFF,
        audience=Audience.STAFF_APP,
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=1),
        idle_seconds=900,
        roles=frozenset(roles),
    )


# --------------------------------------------------------------------------------------------- stopped sessions


async def test_a_stop_from_the_doctor_app_stops_refunds_and_tells_every_upcoming_booking_once(env: Env) -> None:
    """APT-007: the doctor stops the session (at the HIS first); every upcoming booking ends STOPPED, the numbers
    go back (no waitlist offer), paid ones are refunded, each resident gets an urgent message even in quiet hours,
    and nobody is penalised. A second delivery of the event changes nothing."""
    env.clock.current = beijing(NOW.date(), 22, 20)  # 22:20 in Beijing: quiet hours
    session_id, slots = await env.session("0101", beijing(VISIT_DAY, 8), slots=5)
    _, (other_slot,) = await env.session("0101", beijing(VISIT_DAY, 14), doctor="D02")
    confirmed = [await env.paid(slots[0]), await env.paid(slots[1])]
    paid = await env.paid(slots[2], confirm=False)
    held = await env.held(slots[3])
    cancelled = await env.held(slots[4])
    await env.s.bookings.cancel(cancelled.account_id, cancelled.id)
    elsewhere = await env.paid(other_slot)
    for booking in confirmed:
        assert any(state == "pending" for state, _ in (await env.reminders(booking.id)).values())
    await env.run_outbox()
    env.queue.take()
    env.push.sent.clear()

    env.clock.advance(300)
    await env.catalogue.stop_session(
        doctor({StaffRole.DOCTOR.value}), HOSPITAL, session_id, reason="临时外出会诊", links={HOSPITAL: "D01"}
    )
    assert env.s.his.stops == [(session_id, "临时外出会诊")], "stopped at the HIS first"
    seen = await env.run_outbox()
    [event] = [m for m in seen if m.topic == "catalogue.session_stopped"]
    assert event.payload["source"] == "doctor"

    upcoming = [*confirmed, paid, held]
    after = {b.id: await env.s.get(b.id) for b in upcoming}
    assert {b.state for b in after.values()} == {BookingState.STOPPED}
    assert {b.end_reason for b in after.values()} == {"stopped"}
    assert (await env.s.get(cancelled.id)).state is BookingState.CANCELLED, "already ended: untouched"
    assert (await env.s.get(elsewhere.id)).state is BookingState.CONFIRMED, "another doctor's session"
    assert [await env.s.taken(slot) for slot in slots] == [0, 0, 0, 0, 0], "every number went back"
    assert env.s.his.cancels == [], "the HIS stopped the session itself"

    for booking in [*confirmed, paid]:
        assert await env.order_state(booking) == (OrderState.REFUNDED, FEE, 1)
    assert (await env.order_state(held))[0] is OrderState.CLOSED, "the unpaid hold's order was closed"
    for booking in confirmed:
        assert {state for state, _ in (await env.reminders(booking.id)).values()} == {"cancelled"}

    # The urgent message went out at once, in quiet hours, to each of the four residents.
    stopped_messages = [m for m in seen if m.topic == "booking.session_stopped"]
    assert sorted(m.payload["subject"] for m in stopped_messages) == sorted(f"booking:{b.id}" for b in upcoming)
    assert await env.deliver() == [DeliveryState.SENT] * 4
    assert all("停诊" in sent["body"] and "不计爽约" in sent["body"] for _, sent in env.push.sent)
    assert sorted(token for token, _ in env.push.sent) == sorted(f"tok-{b.account_id}" for b in upcoming)

    # No penalty: neither a no-show nor a resident's cancellation is counted (APT-007/008).
    strict = [BanRule(count=1, window_days=365), BanRule(event=BanEvent.CANCELLATION, count=1, window_days=365)]
    for booking in after.values():
        when = env.clock.now() + timedelta(days=3)
        assert ban_until([booking], strict, when, person_id=booking.person_id, hospital_code=HOSPITAL) is None

    # Delivered again (the broker redelivers, the sync sees it too): nothing changes.
    await env.handle(event)
    report = await on_session_stopped(env.s.bookings, event.payload)
    assert report.stopped == ()
    assert await env.run_outbox() == [], "no second refund, message or release"
    for booking in [*confirmed, paid]:
        assert await env.order_state(booking) == (OrderState.REFUNDED, FEE, 1)
    assert [await env.s.taken(slot) for slot in slots] == [0, 0, 0, 0, 0]


async def test_a_session_found_stopped_by_the_sync_ends_in_the_same_handling(env: Env) -> None:
    session_id, (slot,) = await env.session("0201", beijing(VISIT_DAY, 9))
    booking = await env.paid(slot)
    await env.s.his.stop_session(session_id, reason="医生外出", key="his-side")  # at the hospital's own desk
    report = await env.catalogue.sync_hospital(HOSPITAL)
    assert report.stopped == 1
    seen = await env.run_outbox()
    assert [m.payload["source"] for m in seen if m.topic == "catalogue.session_stopped"] == ["his"]
    stopped = await env.s.get(booking.id)
    assert stopped.state is BookingState.STOPPED
    assert await env.order_state(booking) == (OrderState.REFUNDED, FEE, 1)
    assert await env.s.taken(slot) == 0
    assert (await env.catalogue.sync_hospital(HOSPITAL)).stopped == 0
    assert [m.topic for m in await env.run_outbox()] == []


async def test_a_stopped_session_takes_no_new_booking(env: Env) -> None:
    session_id, (slot,) = await env.session("0301", beijing(VISIT_DAY, 9), capacity=2)
    await env.catalogue.stop_session(
        doctor({StaffRole.DOCTOR.value}), HOSPITAL, session_id, reason="停诊", links={HOSPITAL: "D01"}
    )
    await env.run_outbox()
    account = await env.account()
    patient, _ = await env.s.patient(account)
    with pytest.raises(Exception) as refused:
        await env.s.bookings.hold(account, patient, HOSPITAL, slot)
    assert getattr(refused.value, "code", None) == "booking.session_not_open"


# --------------------------------------------------------------------------------------------- reminders


async def test_a_confirmation_schedules_the_evening_and_two_hour_reminders_and_they_arrive(env: Env) -> None:
    _, (slot,) = await env.session("0401", beijing(VISIT_DAY, 14))
    booking = await env.paid(slot)
    assert await env.reminders(booking.id) == {
        f"booking:{booking.id}:evening": ("pending", beijing(EVE, 20)),
        f"booking:{booking.id}:before": ("pending", beijing(VISIT_DAY, 12)),
    }
    env.queue.take()
    env.push.sent.clear()

    env.clock.current = beijing(EVE, 19, 59)
    assert (await env.notifications.run_due()).sent == 0
    env.clock.current = beijing(EVE, 20, 1)
    assert (await env.notifications.run_due()).sent == 1
    assert await env.deliver() == [DeliveryState.SENT]
    [(_, evening)] = env.push.sent
    assert evening["body"].startswith(f"您预约了{HOSPITAL_NAME}2026-11-24 14:00的号源")

    env.clock.current = beijing(VISIT_DAY, 12, 1)
    report = await env.notifications.run_due()
    assert (report.sent, report.skipped) == (1, 0)
    assert await env.deliver() == [DeliveryState.SENT]
    assert "即将开始就诊" in env.push.sent[-1][1]["body"]
    assert {state for state, _ in (await env.reminders(booking.id)).values()} == {"sent"}


async def test_a_cancellation_skips_the_reminders(env: Env) -> None:
    _, (slot,) = await env.session("0501", beijing(VISIT_DAY, 14))
    booking = await env.paid(slot)
    await env.s.bookings.cancel(booking.account_id, booking.id)
    assert {state for state, _ in (await env.reminders(booking.id)).values()} == {"cancelled"}
    env.clock.current = beijing(VISIT_DAY, 12, 1)
    assert (await env.notifications.run_due()).sent == 0

    # A row left pending (an older worker, a lost write) is still skipped: the booking is no longer confirmed.
    async with SqlUnitOfWork(env.s.source) as uow:
        await uow.connection.execute(
            sa.text("UPDATE scheduled_messages SET state = 'pending' WHERE key = :k"),
            {"k": f"booking:{booking.id}:before"},
        )
        await uow.commit()
    report = await env.notifications.run_due()
    assert (report.sent, report.skipped) == (0, 1)


async def test_a_new_time_rebuilds_the_reminders_even_after_one_went_out(env: Env) -> None:
    _, (slot,) = await env.session("0601", beijing(VISIT_DAY, 14))
    booking = await env.paid(slot)
    env.clock.current = beijing(EVE, 20, 1)
    assert (await env.notifications.run_due()).sent == 1, "the evening reminder for the 24th went out"

    # The sync moves the slot to the next day at 10:00: both reminders follow it.
    moved_to = VISIT_DAY + timedelta(days=1)
    event = SlotChanged(beijing(moved_to, 10), beijing(moved_to, 10, 30), BookingRules(), env.clock.now())
    moved = await env.s.bookings.apply_event(booking.id, event)
    assert moved.slot_start == beijing(moved_to, 10)
    rows = await env.reminders(booking.id)
    assert rows[f"booking:{booking.id}:evening"] == ("pending", beijing(VISIT_DAY, 20))
    assert rows[f"booking:{booking.id}:before"] == ("pending", beijing(moved_to, 8))
    assert [v for k, v in rows.items() if "#" in k] == [("sent", beijing(EVE, 20))], "the sent one kept as it was"

    env.queue.take()
    env.push.sent.clear()
    env.clock.current = beijing(VISIT_DAY, 12, 1)
    assert (await env.notifications.run_due()).sent == 0, "the old two-hour reminder is gone"
    env.clock.current = beijing(VISIT_DAY, 20, 1)
    assert (await env.notifications.run_due()).sent == 1
    assert await env.deliver() == [DeliveryState.SENT]
    assert "2026-11-25 10:00" in env.push.sent[0][1]["body"]

    # The same time again (a repeated sync) changes nothing.
    again = SlotChanged(beijing(moved_to, 10), beijing(moved_to, 10, 30), BookingRules(), env.clock.now())
    await env.s.bookings.apply_event(booking.id, again)
    assert await env.reminders(booking.id) == {
        **rows,
        f"booking:{booking.id}:evening": ("sent", beijing(VISIT_DAY, 20)),
    }


async def test_reminders_due_in_quiet_hours_go_out_before_they_begin(env: Env) -> None:
    # An 08:30 visit: two hours before is 06:30, inside quiet hours (21:00-08:00). Moved before them it would
    # repeat the evening reminder, so only the evening one is kept.
    _, slots = await env.session("0701", beijing(VISIT_DAY, 8), slots=2, capacity=2)
    early = await env.paid(slots[1])
    assert await env.reminders(early.id) == {f"booking:{early.id}:evening": ("pending", beijing(EVE, 20))}

    # Confirmed after 20:00 the evening before: the evening moment has passed, the 06:30 reminder goes out at
    # 20:30, half an hour before quiet hours begin.
    env.clock.current = beijing(EVE, 20, 10)
    late = await env.paid(slots[1])
    assert await env.reminders(late.id) == {f"booking:{late.id}:before": ("pending", beijing(EVE, 20, 30))}

    # An evening reminder configured inside quiet hours (21:30) goes out at 20:30.
    env.clock.current = NOW
    env.s.bookings.d.reminder_policy = ReminderPolicy(evening=time(21, 30))
    _, (afternoon,) = await env.session("0801", beijing(VISIT_DAY, 15))
    configured = await env.paid(afternoon)
    assert await env.reminders(configured.id) == {
        f"booking:{configured.id}:evening": ("pending", beijing(EVE, 20, 30)),
        f"booking:{configured.id}:before": ("pending", beijing(VISIT_DAY, 13)),
    }


# --------------------------------------------------------------------------------------------- the doctor's schedule


async def test_the_doctors_schedule_shows_only_their_sessions_with_masked_patients(env: Env) -> None:
    first, slots = await env.session("0901", beijing(VISIT_DAY, 8), slots=2)
    second, (later,) = await env.session("0901", beijing(VISIT_DAY + timedelta(days=1), 14))
    _, (others,) = await env.session("0902", beijing(VISIT_DAY, 8), doctor="D02")
    await env.session("0901", beijing(VISIT_DAY + timedelta(days=5), 8))  # outside the range asked
    seen = await env.paid(slots[0])
    await env.held(slots[1])  # an unpaid hold is nobody's patient yet
    await env.paid(later)
    await env.paid(others)

    start, end, sessions = await doctor_schedule(
        env.s.bookings,
        staff_account_id="staff-1",
        links={HOSPITAL: "D01"},
        first=VISIT_DAY,
        last=VISIT_DAY + timedelta(days=1),
        request_id="req-1",
    )
    assert (start, end) == (VISIT_DAY, VISIT_DAY + timedelta(days=1))
    assert [s.session_id for s in sessions] == [first, second]
    morning = sessions[0]
    assert [[p.booking_id for p in slot.patients] for slot in morning.slots] == [[seen.id], []]
    [patient] = morning.slots[0].patients
    assert (patient.patient_name, patient.sex, patient.state) == ("王*", "F", BookingState.CONFIRMED)
    assert patient.age == 36
    assert morning.slots[1].taken == 1, "the hold still holds its number"
    async with SqlUnitOfWork(env.s.source) as uow:
        audited = (
            await uow.connection.execute(
                sa.text("SELECT actor, object_id, details FROM audit_log WHERE action = 'booking.doctor_schedule_read'")
            )
        ).all()
    assert [(a, o) for a, o, _ in audited] == [("staff:staff-1", "H001/D01")]
    assert audited[0][2]["patients"] == "2"

    nobody = await doctor_schedule(env.s.bookings, staff_account_id="x", links={}, first=None, last=None)
    assert nobody[2] == []
    with pytest.raises(ScheduleRangeError):
        await doctor_schedule(
            env.s.bookings, staff_account_id="x", links={}, first=VISIT_DAY, last=VISIT_DAY - timedelta(days=1)
        )


@pytest.fixture
async def accounts(committed_source: ConnectionSource, env: Env) -> AccountHarness:
    harness = build_account_harness(committed_source)
    harness.deps.bookings = env.s.bookings
    return harness


async def test_the_doctor_schedule_route(env: Env, accounts: AccountHarness) -> None:
    _, (slot,) = await env.session("1001", beijing(VISIT_DAY, 8))
    booking = await env.paid(slot)
    async with SqlUnitOfWork(env.s.source, cipher=env.s.patients.d.cipher) as uow:
        person = await uow.patients.person(booking.person_id)
    assert person is not None
    assert person.doc_number

    secret = await make_staff(accounts, "dr.d01")
    op_secret = await make_staff(accounts, "op.one", frozenset({StaffRole.OPERATOR}))
    async with asgi_client(accounts.public) as client:
        login = await staff_login(client, accounts, "dr.d01", secret)
        token = login.json()["accessToken"]
        me = (await client.get("/api/v1/staff/me", headers=bearer(token))).json()
        await accounts.service.set_staff_links(
            doctor({StaffRole.OPERATOR.value}),
            me["accountId"],
            [PractitionerLink(HOSPITAL, "D01", frozenset({StaffRole.DOCTOR}))],
            ctx=ClientContext(),
        )
        url = "/api/v1/doctor/schedule"
        ok = await client.get(url, params={"from": "2026-11-24", "to": "2026-11-25"}, headers=bearer(token))
        default = await client.get(url, headers=bearer(token))
        backwards = await client.get(url, params={"from": "2026-11-25", "to": "2026-11-24"}, headers=bearer(token))
        too_long = await client.get(url, params={"from": "2026-11-01", "to": "2026-12-31"}, headers=bearer(token))
        malformed = await client.get(url, params={"from": "2026-13-01"}, headers=bearer(token))
        anonymous = await client.get(url)
        op_token = (await staff_login(client, accounts, "op.one", op_secret)).json()["accessToken"]
        operator = await client.get(url, headers=bearer(op_token))

    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert (body["firstDay"], body["lastDay"]) == ("2026-11-24", "2026-11-25")
    [session] = body["sessions"]
    [patient] = session["slots"][0]["patients"]
    assert patient == {
        "bookingId": booking.id,
        "state": "confirmed",
        "patientName": "王*",
        "sex": "F",
        "age": 36,
        "queueNumber": booking.queue_number,
    }
    assert person.doc_number not in ok.text
    assert "王芳" not in ok.text
    assert default.status_code == 200, default.text
    assert default.json()["firstDay"] == "2026-11-22"
    assert len(default.json()["sessions"]) == 1
    for answer, status, code in (
        (backwards, 400, "booking.schedule_range_invalid"),
        (too_long, 400, "booking.schedule_range_invalid"),
        (malformed, 422, "request.invalid"),
        (anonymous, 401, None),
        (operator, 403, "auth.missing_role"),
    ):
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        if code is not None:
            assert answer.json()["code"] == code
