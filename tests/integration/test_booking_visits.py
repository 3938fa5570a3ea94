"""Rescheduling, check-in, the queue, no-shows and bans on the real PostgreSQL (issue: booking, items 4 and 6).
The harness (fake HIS, fake payment channel, the outbox run through the worker's handlers) is the one of
``test_bookings``; the HIS here also checks in and tells the queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from domain.booking.model import Booking, BookingState
from domain.booking.rules import BookingPolicy, PersonLimits
from domain.booking.visits import VisitService
from domain.catalogue.model import HisRegistration, QueuePosition
from domain.catalogue.ports import HisRejectedError
from domain.kernel.clock import SHANGHAI
from domain.kernel.ids import new_id
from domain.kernel.principal import Principal, PrincipalKind
from domain.patient.model import Consent, ConsentKind, PatientLink, PatientState, Relationship
from domain.patient.use_cases import CARD_USE_TOPIC
from notifications.registry import registry
from persistence.db import ConnectionSource
from persistence.ephemeral.slot_gate import MemorySlotGate
from persistence.uow import SqlUnitOfWork
from tests.integration.test_bookings import FEE, HOSPITAL, VISIT_DAY, BookingHis, Stack, refused
from tests.integration.test_bookings import s as s
from tests.support.app import asgi_client, build_test_apps
from tests.support.catalogue import FakeGateway


@dataclass
class VisitHis(BookingHis):
    """The bookings' fake HIS, plus: the slot of each registration, cancels idempotent by key, check-in
    idempotent by key, and a queue."""

    slots: dict[str, str] = field(default_factory=dict)
    """Registration id -> slot id."""
    cancel_keys: set[str] = field(default_factory=set)
    check_ins: dict[str, str] = field(default_factory=dict)
    """Key -> registration id."""
    ahead: int = 3
    refuse_check_in: bool = False

    async def confirm(self, slot_id: str, *, patid: str, key: str, lock_id: str | None = None) -> HisRegistration:
        registration = await super().confirm(slot_id, patid=patid, key=key, lock_id=lock_id)
        self.slots.setdefault(registration.registration_id, slot_id)
        return registration

    async def cancel(self, registration_id: str, *, reason: str, key: str) -> None:
        self._check()
        if key in self.cancel_keys:
            return
        self.cancel_keys.add(key)
        self.cancels.append(registration_id)

    @property
    def live(self) -> dict[str, str]:
        """Registration id -> slot id of the registrations not cancelled."""
        return {r: slot for r, slot in self.slots.items() if r not in self.cancels}

    async def check_in(self, registration_id: str, *, key: str) -> QueuePosition:
        self._check()
        if self.refuse_check_in or registration_id not in self.live:
            raise HisRejectedError("no such registration")
        self.check_ins.setdefault(key, registration_id)
        return QueuePosition(self.ahead, 12)

    async def queue_position(self, registration_id: str) -> QueuePosition:
        self._check()
        if registration_id not in self.live:
            raise HisRejectedError("no such registration")
        return QueuePosition(self.ahead, 12)


@dataclass
class Visits:
    s: Stack
    service: VisitService
    his: VisitHis

    async def confirmed(self, account: str, slot: str, *, patient: str | None = None) -> Booking:
        """A paid booking confirmed at the HIS."""
        if patient is None:
            patient, _ = await self.s.patient(account)
        booking = await self.s.bookings.hold(account, patient, HOSPITAL, slot)
        await self.s.resident_pays(account, booking)
        await self.s.run_outbox()
        done = await self.s.get(booking.id)
        assert done.state is BookingState.CONFIRMED
        return done

    async def relative(self, account: str) -> str:
        """Another patient of the account (a spouse): another person."""
        _, person_id = await self.s.patient("relative-" + new_id()[:8])
        now = self.s.clock.now()
        async with SqlUnitOfWork(self.s.source, cipher=self.s.patients.d.cipher) as uow:
            link = PatientLink(new_id(), account, person_id, Relationship.SPOUSE, PatientState.ACTIVE, now, now)
            await uow.patients.add_link(link)
            await uow.patients.add_consent(
                Consent(new_id(), account, person_id, ConsentKind.HEALTH_DATA, "2026-11", "app", now)
            )
            await uow.commit()
        return link.id

    async def count(self, sql: str, **params: Any) -> int:
        async with SqlUnitOfWork(self.s.source) as uow:
            return int((await uow.connection.execute(sa.text(sql), params)).scalar_one())

    async def outbox(self, topic: str) -> int:
        return await self.count("SELECT count(*) FROM outbox WHERE topic = :t", t=topic)

    async def no_shows(self) -> dict[str, int]:
        """The beat task itself."""
        result: dict[str, int] = await registry.tasks["booking.no_shows"](self.s.runtime)
        return result


@pytest.fixture
async def v(s: Stack) -> Visits:
    his = VisitHis(HOSPITAL, clock=s.clock)
    gateway = FakeGateway({HOSPITAL: his})
    s.his = his
    s.bookings.d.his = gateway
    s.patients.d.his = gateway
    return Visits(s, VisitService(s.bookings), his)


def beijing(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, datetime.min.time(), SHANGHAI).replace(hour=hour, minute=minute).astimezone(UTC)


# ------------------------------------------------------------------------------------------------- rescheduling


async def test_a_reschedule_moves_the_booking_in_one_step_and_the_his_follows(v: Visits) -> None:
    """DESIGN §5: the new number taken and the old released in one transaction; at the HIS the new slot is
    confirmed first, then the old registration cancelled (idempotent keys: a redelivery changes nothing)."""
    s = v.s
    s.bookings.d.gate = gate = MemorySlotGate()
    old, new = await s.session("0101", slots=2, capacity=1)
    booking = await v.confirmed("acct-1", old)
    assert booking.his_registration_id == "REG-1"
    await s.bookings.rebuild_gate()
    assert (await gate.admit(f"{HOSPITAL}:{old}")).sold_out

    moved = await v.service.reschedule("acct-1", booking.id, new)
    assert (moved.state, moved.slot_id, moved.reschedules) == (BookingState.CONFIRMED, new, 1)
    assert moved.slot_start == booking.slot_start + timedelta(minutes=30)
    assert moved.deadlines.checkin_opens_at == moved.slot_start - timedelta(minutes=60), "APT-010 follows the slot"
    assert moved.deadlines.hold_expires_at == booking.deadlines.hold_expires_at
    assert (await s.taken(old), await s.taken(new)) == (0, 1)
    assert not (await gate.admit(f"{HOSPITAL}:{old}")).sold_out, "the gate was told of the release"

    topics = [m.topic for m in await s.run_outbox()]
    assert "booking.his_move" in topics
    assert "booking.rescheduled" in topics
    stored = await s.get(booking.id)
    assert stored.his_registration_id == "REG-2"
    assert v.his.live == {"REG-2": new}, "registered on the new slot, the old registration cancelled"
    assert f"booking:{booking.id}:move:1" in v.his.registrations

    # The message delivered again, and the same reschedule asked again: nothing changes.
    await v.service.move_at_his(booking.id, "REG-1", new, 1)
    assert (await v.service.reschedule("acct-1", booking.id, new)).version == stored.version
    assert v.his.cancels == ["REG-1"]
    assert len(v.his.registrations) == 2
    assert (await s.taken(old), await s.taken(new)) == (0, 1)

    # A later cancellation cancels the registration now standing.
    await s.bookings.cancel("acct-1", booking.id)
    await s.run_outbox()
    assert v.his.live == {}
    assert await s.taken(new) == 0


async def test_a_reschedule_checks_the_persons_limits_again_leaving_the_moved_booking_out(v: Visits) -> None:
    """APT-005 with ``Candidate(replacing=...)``: moving within its own day and department is fine (the booking
    does not count against itself); moving onto a day where the person already has that department is not."""
    s = v.s
    patient, _ = await s.patient("acct-1")
    first, same_day = await s.session("0201", slots=2, capacity=2)
    (next_day,) = await s.session("0201", day=VISIT_DAY + timedelta(days=1), capacity=2)
    (next_day_other,) = await s.session("0201", day=VISIT_DAY + timedelta(days=1), capacity=2)
    booking = await v.confirmed("acct-1", first, patient=patient)
    await v.confirmed("acct-1", next_day, patient=patient)

    moved = await v.service.reschedule("acct-1", booking.id, same_day)
    assert moved.slot_id == same_day
    await refused("booking.limit_department_day", v.service.reschedule("acct-1", booking.id, next_day_other))
    assert (await s.get(booking.id)).slot_id == same_day
    assert (await s.taken(same_day), await s.taken(next_day_other)) == (1, 0)


async def test_a_reschedule_after_the_cutoff_or_elsewhere_is_refused_and_changes_nothing(v: Visits) -> None:
    """APT-006: like cancelling, strictly before the day before at 15:00; only the same hospital, department
    and fee; an unknown slot or another account's booking is not found."""
    s = v.s
    old, new = await s.session("0301", slots=2)
    (other_department,) = await s.session("0302")
    (other_fee,) = await s.session("0301", fee=FEE + 500)
    booking = await v.confirmed("acct-1", old)
    await refused("booking.reschedule_not_allowed", v.service.reschedule("acct-1", booking.id, other_department))
    await refused("booking.reschedule_not_allowed", v.service.reschedule("acct-1", booking.id, other_fee))
    await refused("booking.slot_not_found", v.service.reschedule("acct-1", booking.id, "NOPE"))
    await refused("booking.not_found", v.service.reschedule("acct-9", booking.id, new))
    s.clock.current = beijing(VISIT_DAY - timedelta(days=1), 15)
    await refused("booking.reschedule_too_late", v.service.reschedule("acct-1", booking.id, new))
    assert (await s.get(booking.id)).version == booking.version
    assert (await s.taken(old), await s.taken(new)) == (1, 0)
    assert await v.outbox("booking.his_move") == 0


async def test_a_reschedule_to_a_full_slot_is_refused_and_nothing_changes(v: Visits) -> None:
    s = v.s
    old, full = await s.session("0401", slots=2, capacity=1)
    booking = await v.confirmed("acct-1", old)
    other, _ = await s.patient("acct-2")
    held = await s.bookings.hold("acct-2", other, HOSPITAL, full)
    await refused("booking.slot_full", v.service.reschedule("acct-1", booking.id, full))
    # The gate knows it is full too: refused without the database.
    s.bookings.d.gate = MemorySlotGate()
    await s.bookings.rebuild_gate()
    await refused("booking.slot_full", v.service.reschedule("acct-1", booking.id, full))
    stored = await s.get(booking.id)
    assert (stored.slot_id, stored.version, stored.reschedules) == (old, booking.version, 0)
    assert (await s.taken(old), await s.taken(full)) == (1, 1)
    assert await v.outbox("booking.his_move") == 0
    # An unpaid hold cannot be moved (only a confirmed booking).
    (free,) = await s.session("0402")
    await refused("booking.illegal_transition", v.service.reschedule("acct-2", held.id, free))


async def test_concurrent_reschedules_onto_the_last_number_exactly_one_wins(v: Visits) -> None:
    """Two bookings moved at once onto the last number: one wins, the other is refused with its old number
    kept; two moves in opposite directions at once both succeed (the slots' rows are locked in one order)."""
    s = v.s
    a_slot, b_slot, last = await s.session("0501", slots=3, capacity=1)
    a = await v.confirmed("acct-a", a_slot)
    b = await v.confirmed("acct-b", b_slot)
    results = await asyncio.gather(
        v.service.reschedule("acct-a", a.id, last),
        v.service.reschedule("acct-b", b.id, last),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Booking)]
    lost = [r for r in results if not isinstance(r, Booking)]
    assert len(won) == 1
    assert [getattr(e, "code", repr(e)) for e in lost] == ["booking.slot_full"]
    assert await s.taken(last) == 1
    assert await s.taken(a_slot) + await s.taken(b_slot) == 1, "the loser kept its number, the winner's went back"
    loser = b if won[0].id == a.id else a
    assert (await s.get(loser.id)).slot_id == loser.slot_id

    x, y = await s.session("0601", slots=2, capacity=2)
    on_x = await v.confirmed("acct-c", x)
    on_y = await v.confirmed("acct-d", y)
    swapped = await asyncio.gather(
        v.service.reschedule("acct-c", on_x.id, y), v.service.reschedule("acct-d", on_y.id, x)
    )
    assert [b.slot_id for b in swapped] == [y, x]
    assert (await s.taken(x), await s.taken(y)) == (1, 1)


async def test_a_move_the_his_refuses_ends_the_booking_refunded_and_a_superseded_move_is_left_alone(
    v: Visits,
) -> None:
    s = v.s
    old, new, later = await s.session("0701", slots=3, capacity=1)
    booking = await v.confirmed("acct-1", old)
    await v.service.reschedule("acct-1", booking.id, new)
    await v.service.reschedule("acct-1", booking.id, later)  # before the first move reached the HIS
    await s.run_outbox()
    stored = await s.get(booking.id)
    assert v.his.live == {stored.his_registration_id: later}, "one registration, on the slot the booking is on"
    assert stored.reschedules == 2

    # The HIS refuses the new slot for good: the booking ends, refunded, its number back, the old one cancelled.
    (target,) = await s.session("0701", capacity=1)
    await v.service.reschedule("acct-1", booking.id, target)
    v.his.refuse = 1
    await s.run_outbox()
    failed = await s.get(booking.id)
    assert failed.state is BookingState.CONFIRM_FAILED
    assert await s.taken(target) == 0
    assert v.his.live == {}
    assert failed.refund_reason == "his_refused"


# ---------------------------------------------------------------------------------------- check-in and the queue


async def test_check_in_only_within_the_window_and_only_by_the_person_booked(v: Visits) -> None:
    """APT-010: from an hour before the slot to half an hour after it; APT-002: only the person booked. The HIS
    checks in first: down, nothing changes and the answer says so; then the card use is reported."""
    s = v.s
    (slot,) = await s.session("0801")
    patient, _ = await s.patient("acct-1")
    sibling = await v.relative("acct-1")
    booking = await v.confirmed("acct-1", slot, patient=patient)

    await refused("booking.checkin_too_early", v.service.check_in("acct-1", booking.id, patient))
    s.clock.current = beijing(VISIT_DAY, 7, 30)
    await refused("booking.identity_mismatch", v.service.check_in("acct-1", booking.id, sibling))
    await refused("booking.not_found", v.service.check_in("acct-9", booking.id, patient))
    v.his.online = False
    await refused("booking.checkin_unavailable", v.service.check_in("acct-1", booking.id, patient))
    assert (await s.get(booking.id)).state is BookingState.CONFIRMED
    assert v.his.check_ins == {}

    v.his.online = True
    arrival = await v.service.check_in("acct-1", booking.id, patient)
    assert arrival.booking.state is BookingState.CHECKED_IN
    assert arrival.queue == QueuePosition(3, 12)
    assert v.his.check_ins == {f"booking-checkin:{booking.id}": "REG-1"}
    topics = [m.topic for m in await s.run_outbox()]
    assert CARD_USE_TOPIC in topics, "the card use is reported"
    again = await v.service.check_in("acct-1", booking.id, patient)
    assert (again.booking.version, again.queue) == (arrival.booking.version, QueuePosition(3, 12))
    await refused("booking.identity_mismatch", v.service.check_in("acct-1", booking.id, sibling))
    assert len(v.his.check_ins) == 1


async def test_check_in_after_the_window_or_refused_by_the_his_is_clear(v: Visits) -> None:
    s = v.s
    (slot,) = await s.session("0901")
    patient, _ = await s.patient("acct-1")
    booking = await v.confirmed("acct-1", slot, patient=patient)
    s.clock.current = beijing(VISIT_DAY, 7, 0)
    v.his.refuse_check_in = True
    await refused("booking.checkin_refused", v.service.check_in("acct-1", booking.id, patient))
    s.clock.current = beijing(VISIT_DAY, 8, 30) + timedelta(seconds=1)
    v.his.refuse_check_in = False
    await refused("booking.checkin_too_late", v.service.check_in("acct-1", booking.id, patient))
    assert (await s.get(booking.id)).state is BookingState.CONFIRMED
    assert v.his.check_ins == {}


async def test_the_queue_comes_from_the_his_and_a_his_that_is_down_is_a_clear_503(v: Visits) -> None:
    s = v.s
    (slot, other) = await s.session("1001", slots=2)
    booking = await v.confirmed("acct-1", slot)
    found, position = await v.service.queue("acct-1", booking.id)
    assert (found.id, position.ahead) == (booking.id, 3)
    v.his.ahead = 0
    assert (await v.service.queue("acct-1", booking.id))[1].ahead == 0
    v.his.online = False
    await refused("booking.queue_unavailable", v.service.queue("acct-1", booking.id))
    await refused("booking.not_found", v.service.queue("acct-9", booking.id))
    patient, _ = await s.patient("acct-2")
    held = await s.bookings.hold("acct-2", patient, HOSPITAL, other)
    await refused("booking.no_queue", v.service.queue("acct-2", held.id))


# ----------------------------------------------------------------------------------------------- no-shows, bans


async def test_no_shows_are_marked_once_each_and_one_failure_does_not_stop_the_others(
    v: Visits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """APT-007: confirmed, not checked in by the end of the window (half an hour after the slot's start)."""
    s = v.s
    first, second, third = await s.session("1101", slots=3, capacity=1)
    patient, _ = await s.patient("acct-3")
    missed = [await v.confirmed("acct-1", first), await v.confirmed("acct-2", second)]
    arrived = await v.confirmed("acct-3", third, patient=patient)
    s.clock.current = beijing(VISIT_DAY, 8, 30)
    await v.service.check_in("acct-3", arrived.id, patient)
    assert await v.no_shows() == {"marked": 0, "failed": 0}, "the window is still open"

    s.clock.current = beijing(VISIT_DAY, 9, 31)  # the third slot (09:00) closes at 09:30
    real = s.bookings.apply_event
    broken = missed[0].id

    async def flaky(booking_id: str, event: Any) -> Booking:
        if booking_id == broken:
            raise RuntimeError("the database hiccuped")
        return await real(booking_id, event)

    monkeypatch.setattr(s.bookings, "apply_event", flaky)
    assert await v.no_shows() == {"marked": 1, "failed": 1}
    monkeypatch.undo()
    assert await v.no_shows() == {"marked": 1, "failed": 0}
    assert await v.no_shows() == {"marked": 0, "failed": 0}, "idempotent"
    assert [(await s.get(b.id)).state for b in missed] == [BookingState.NO_SHOW] * 2
    assert (await s.get(arrived.id)).state is BookingState.CHECKED_IN
    assert await s.taken(first) == 1, "a no-show's number is forfeited, not given back (APT-010)"
    assert "booking.no_show" in [m.topic for m in await s.run_outbox()]


class RoleAuthenticator:
    """``Bearer resident-<id>``, ``Bearer staff-<id>`` (an operator), ``Bearer doctor-<id>`` (a doctor)."""

    async def authenticate(self, token: str) -> Principal:
        kind, _, subject = token.partition("-")
        if kind == "resident":
            return Principal(subject=subject, kind=PrincipalKind.RESIDENT, session_id="s-" + subject, audience="t")
        role = "operator" if kind == "staff" else "doctor"
        return Principal(subject, PrincipalKind.STAFF, "s-" + subject, "staff-app", frozenset({role}))


@pytest.fixture
async def apps(v: Visits, committed_source: ConnectionSource) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    public, admin, deps = build_test_apps(committed_source, clock=v.s.clock)
    deps.bookings = v.s.bookings
    deps.patients = v.s.patients
    deps.payments = v.s.payments
    deps.authenticator = RoleAuthenticator()
    async with asgi_client(public) as http, asgi_client(admin) as admin_http:
        yield http, admin_http


def problem(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == code
    assert answer.json()["message"]


async def test_three_no_shows_in_90_days_suspend_online_booking_until_an_operator_lifts_it(
    v: Visits, apps: tuple[httpx.AsyncClient, ...]
) -> None:
    """APT-008: three no-shows within 90 days suspend online booking for 90 days (the platform's rule and the
    hospital's own); an operator reviews (masked, audited) and lifts it (audited): the no-shows so far stop
    counting, and the person books again."""
    _, admin = apps
    s = v.s
    s.bookings.d.policy = BookingPolicy(limits=PersonLimits(short_window_max=9, long_window_max=9))
    patient, person = await s.patient("acct-1")
    days = [VISIT_DAY + timedelta(days=i) for i in range(3)]
    for day in days:
        (slot,) = await s.session("1201", day=day)
        await v.confirmed("acct-1", slot, patient=patient)
    s.clock.current = beijing(days[-1], 12)
    assert await v.no_shows() == {"marked": 3, "failed": 0}
    (next_week,) = await s.session("1201", day=days[-1] + timedelta(days=4))
    with pytest.raises(Exception) as banned:
        await s.bookings.hold("acct-1", patient, HOSPITAL, next_week)
    assert getattr(banned.value, "code", None) == "booking.banned"
    assert getattr(banned.value, "extra", {})["until"] == (beijing(days[-1], 8) + timedelta(days=90)).isoformat()

    operator = "op" + new_id()[:8]
    staff = {"authorization": f"Bearer staff-{operator}"}
    review = await admin.get("/api/v1/admin/bookings/bans", params={"personId": person}, headers=staff)
    assert review.status_code == 200, review.text
    body = review.json()
    assert (body["personId"], body["name"], body["banned"]) == (person, "王*", True)
    assert [(b["hospitalCode"], b["until"][:10]) for b in body["bans"]] == [
        (None, "2027-02-24"),
        (HOSPITAL, "2027-02-24"),
    ]
    assert len(body["noShows"]) == 3
    assert not any(n["forgiven"] for n in body["noShows"])

    lifted = await admin.post(
        f"/api/v1/admin/bookings/bans/{person}/lift", json={"reason": "住院证明已核实"}, headers=staff
    )
    assert lifted.status_code == 201, lifted.text
    assert lifted.json()["actor"] == f"staff:{operator}"
    booking = await s.bookings.hold("acct-1", patient, HOSPITAL, next_week)
    assert booking.state is BookingState.HELD

    after = (await admin.get("/api/v1/admin/bookings/bans", params={"personId": person}, headers=staff)).json()
    assert (after["banned"], after["bans"], len(after["lifts"])) == (False, [], 1)
    assert all(n["forgiven"] for n in after["noShows"])
    problem(
        await admin.post(f"/api/v1/admin/bookings/bans/{person}/lift", json={"reason": "再次解除"}, headers=staff),
        409,
        "booking.not_banned",
    )
    audited = "SELECT count(*) FROM audit_log WHERE action = :action AND actor = :actor AND object_id = :person"
    assert await v.count(audited, action="booking.ban_lift", actor=f"staff:{operator}", person=person) == 1
    assert await v.count(audited, action="booking.ban_review", actor=f"staff:{operator}", person=person) == 2


async def test_the_ban_routes_refuse_bad_input_unknown_persons_and_non_operators(
    v: Visits, apps: tuple[httpx.AsyncClient, ...]
) -> None:
    _, admin = apps
    staff = {"authorization": "Bearer staff-op1"}
    _, person = await v.s.patient("acct-1")
    problem(await admin.get("/api/v1/admin/bookings/bans", headers=staff), 422, "request.invalid")
    for bad in ("x" * 65, "a b", ""):
        answer = await admin.get("/api/v1/admin/bookings/bans", params={"personId": bad}, headers=staff)
        problem(answer, 422, "request.invalid")
    problem(
        await admin.get("/api/v1/admin/bookings/bans", params={"personId": "nobody"}, headers=staff),
        404,
        "person.not_found",
    )
    lift = f"/api/v1/admin/bookings/bans/{person}/lift"
    problem(await admin.post(lift, json={"reason": "x"}, headers=staff), 422, "request.invalid")
    too_long = f"/api/v1/admin/bookings/bans/{'x' * 65}/lift"
    problem(await admin.post(too_long, json={"reason": "理由充分"}, headers=staff), 422, "request.invalid")
    problem(await admin.post(lift, json={"reason": "理由充分", "extra": 1}, headers=staff), 422, "request.invalid")
    problem(await admin.post(lift, json={"reason": "理由充分"}, headers=staff), 409, "booking.not_banned")
    problem(
        await admin.post("/api/v1/admin/bookings/bans/nobody/lift", json={"reason": "理由充分"}, headers=staff),
        404,
        "person.not_found",
    )
    doctor = {"authorization": "Bearer doctor-d1"}
    assert (
        await admin.get("/api/v1/admin/bookings/bans", params={"personId": person}, headers=doctor)
    ).status_code == 403


# ---------------------------------------------------------------------------------------------------- routes


async def test_the_resident_routes_reschedule_check_in_and_read_the_queue(
    v: Visits, apps: tuple[httpx.AsyncClient, ...]
) -> None:
    http, _ = apps
    s = v.s
    old, new = await s.session("1301", slots=2)
    patient, _ = await s.patient("acct-1")
    booking = await v.confirmed("acct-1", old, patient=patient)
    me = {"authorization": "Bearer resident-acct-1"}
    base = f"/api/v1/patient/bookings/{booking.id}"

    moved = await http.post(f"{base}/reschedule", json={"slotId": new}, headers=me)
    assert moved.status_code == 200, moved.text
    assert (moved.json()["slotId"], moved.json()["state"]) == (new, "confirmed")
    await s.run_outbox()
    queue = await http.get(f"{base}/queue", headers=me)
    assert queue.status_code == 200, queue.text
    assert queue.json() == {"ahead": 3, "currentNumber": 12, "queueNumber": 2}

    problem(
        await http.post(f"{base}/check-in", json={"patientId": patient}, headers=me), 409, "booking.checkin_too_early"
    )
    s.clock.current = beijing(VISIT_DAY, 8)
    checked = await http.post(f"{base}/check-in", json={"patientId": patient}, headers=me)
    assert checked.status_code == 200, checked.text
    assert checked.json()["booking"]["state"] == "checked_in"
    assert checked.json()["queue"]["ahead"] == 3

    v.his.online = False
    down = await http.get(f"{base}/queue", headers=me)
    problem(down, 503, "booking.queue_unavailable")
    assert "排队" in down.json()["message"]


async def test_the_resident_routes_refuse_bad_input_with_problem_json(
    v: Visits, apps: tuple[httpx.AsyncClient, ...]
) -> None:
    http, _ = apps
    (slot,) = await v.s.session("1401")
    booking = await v.confirmed("acct-1", slot)
    me = {"authorization": "Bearer resident-acct-1"}
    base = f"/api/v1/patient/bookings/{booking.id}"
    for body in ({}, {"slotId": ""}, {"slotId": "a b"}, {"slotId": slot, "more": 1}, {"slotId": 7}):
        problem(await http.post(f"{base}/reschedule", json=body, headers=me), 422, "request.invalid")
    problem(await http.post(f"{base}/reschedule", content=b"{", headers=me), 400, "request.bad")
    for body in ({}, {"patientId": ""}, {"patientId": "p", "x": 1}):
        problem(await http.post(f"{base}/check-in", json=body, headers=me), 422, "request.invalid")
    problem(await http.post(f"{base}/reschedule", json={"slotId": "NOPE"}, headers=me), 404, "booking.slot_not_found")
    other = {"authorization": "Bearer resident-acct-9"}
    problem(await http.post(f"{base}/reschedule", json={"slotId": slot}, headers=other), 404, "booking.not_found")
    problem(await http.get(f"{base}/queue", headers=other), 404, "booking.not_found")
    problem(await http.post(f"{base}/check-in", json={"patientId": "nope"}, headers=me), 404, "patient.not_found")
    assert (await http.get(f"{base}/queue")).status_code == 401
    problem(await http.get(f"/api/v1/patient/bookings/{'b' * 65}/queue", headers=me), 422, "request.invalid")
