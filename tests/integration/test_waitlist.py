"""The waitlist (候补; issue: booking item 5) on the real PostgreSQL: a freed number is held for the line and offered
to the first person in line, nobody else can take it meanwhile (the gate included), accepting gives a HELD booking
with its payment order, an unaccepted offer lapses (its time counted from the delivery of its message) and
passes on, leaving the line works, and two numbers freed at once go to the first two persons. The harness is the
one of ``test_bookings`` (fake HIS, fake payment channel, the outbox run through the worker's handlers)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy as sa

from domain.account.model import ResidentAccount
from domain.booking.model import Booking, BookingState
from domain.booking.waitlist import OFFERED_EVENT, OfferPolicy, WaitlistEntry, WaitlistState
from domain.booking.waitlist_service import OFFER_TOPIC, WaitlistDeps, WaitlistService
from domain.catalogue.model import SessionStatus
from domain.kernel.ids import new_id
from domain.kernel.outbox import OutboxMessage
from domain.kernel.relay import relay_outbox
from domain.notification.model import Channel, DeliveryState
from domain.notification.ports import Address
from domain.notification.templates import Rendered
from domain.notification.use_cases import NotificationDeps, NotificationService
from domain.payment.machine import OrderState
from notifications.registry import registry
from notifications.runtime import WorkerRuntime
from persistence.ephemeral.slot_gate import MemorySlotGate
from persistence.uow import SqlUnitOfWork, unit_of_work_factory
from tests.integration.test_bookings import HOSPITAL, Stack, refused
from tests.integration.test_bookings import s as s

HOLD = timedelta(minutes=30)
GRACE = timedelta(minutes=10)


@dataclass
class Push:
    """A fake app-push sender: every message it is handed is delivered."""

    channel: Channel = Channel.APP_PUSH
    sent: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, address: Address, template: str | None, rendered: Rendered) -> tuple[str, str]:
        self.sent.append((address.value, rendered.body))
        return "fake", str(len(self.sent))


@dataclass
class Tasks:
    enqueued: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def enqueue(self, task: str, kwargs: Mapping[str, Any], *, countdown_seconds: float | None = None) -> None:
        self.enqueued.append((task, dict(kwargs)))


@dataclass
class Line:
    s: Stack
    waitlist: WaitlistService
    notifications: NotificationService
    push: Push
    tasks: Tasks

    @property
    def runtime(self) -> WorkerRuntime:
        services = {"bookings": self.s.bookings, "waitlist": self.waitlist, "notifications": self.notifications}
        return cast(WorkerRuntime, SimpleNamespace(services=services))

    async def run_outbox(self) -> list[OutboxMessage]:
        """Relay the outbox and hand each booking and payment message to the worker's handlers (the waitlist's
        and the notification service's included) until nothing new comes."""
        seen: list[OutboxMessage] = []
        dispatcher = self.s.dispatcher
        while True:
            start = len(dispatcher.messages)
            while await relay_outbox(unit_of_work_factory(self.s.source), dispatcher, self.s.clock.now()):
                pass
            batch = dispatcher.messages[start:]
            if not batch:
                return seen
            seen.extend(batch)
            for message in batch:
                if message.topic.startswith(("booking.", "payment.")):
                    for handler in registry.topics.get(message.topic, []):
                        if handler.__module__ == "notifications.tasks" and "bill" in handler.__qualname__:
                            continue
                        await handler(self.runtime, message.payload, message.id)

    async def deliver(self) -> list[str]:
        """The worker's ``notification.deliver`` for every queued delivery (it reports sent ones to the waitlist)."""
        states = []
        queued, self.tasks.enqueued = self.tasks.enqueued, []
        for task, kwargs in queued:
            if task == "notification.deliver":
                states.append(await registry.tasks[task](self.runtime, **kwargs))
        return states

    async def resident(self) -> tuple[str, str]:
        """An account reachable by app push with a verified patient: (account id, patient id)."""
        account = new_id()
        now = self.s.clock.now()
        async with SqlUnitOfWork(self.s.source) as uow:
            await uow.accounts.add_resident(ResidentAccount(id=account, created_at=now, last_active_at=now))
            await uow.notifications.add_push_device(account, "apns", "token-" + account, now=now)
            await uow.commit()
        patient, _ = await self.s.patient(account)
        return account, patient

    async def confirmed(self, slot: str) -> tuple[str, str, Booking]:
        """Someone holding the slot's number, paid and confirmed at the HIS: (account, patient, booking)."""
        account, patient = await self.resident()
        booking = await self.s.bookings.hold(account, patient, HOSPITAL, slot)
        await self.s.resident_pays(account, booking)
        await self.run_outbox()
        done = await self.s.get(booking.id)
        assert done.state is BookingState.CONFIRMED
        return account, patient, done

    async def waiter(self, session: str) -> tuple[str, WaitlistEntry]:
        """A resident joining the session's line (a second later than the one before)."""
        self.s.clock.advance(1)
        account, patient = await self.resident()
        return account, await self.waitlist.join(account, patient, HOSPITAL, session)

    async def entry(self, entry_id: str) -> WaitlistEntry:
        async with SqlUnitOfWork(self.s.source) as uow:
            found = await uow.waitlist.get(entry_id)
        assert found is not None
        return found

    async def held_numbers(self) -> list[str]:
        async with SqlUnitOfWork(self.s.source) as uow:
            rows = await uow.connection.execute(sa.text("SELECT id FROM waitlist_numbers ORDER BY created_at, id"))
            return [str(r) for r in rows.scalars()]


def session_of(slot: str) -> str:
    return slot.rsplit("-", 1)[0]


@pytest.fixture
async def line(s: Stack) -> Line:
    tasks = Tasks()
    push = Push()
    notifications = NotificationService(
        NotificationDeps(
            uow_factory=unit_of_work_factory(s.source, cipher=s.patients.d.cipher),
            clock=s.clock,
            cipher=s.patients.d.cipher,
            runner=tasks,
            senders={Channel.APP_PUSH: push},
        )
    )
    waitlist = WaitlistService(
        WaitlistDeps(
            uow_factory=unit_of_work_factory(s.source, cipher=s.patients.d.cipher),
            bookings=s.bookings,
            policy=OfferPolicy(hold=HOLD, delivery_grace=GRACE),
        )
    )
    s.bookings.d.waitlist = waitlist
    return Line(s, waitlist, notifications, push, tasks)


# ------------------------------------------------------------------------------------------------- offers


async def test_a_cancellation_offers_the_number_to_the_first_in_line_and_nobody_else_can_take_it(line: Line) -> None:
    s = line.s
    s.bookings.d.gate = gate = MemorySlotGate()
    (slot,) = await s.session("2101")
    session = session_of(slot)
    holder, holder_patient, booking = await line.confirmed(slot)
    # Only a full session has a line; a session with numbers left is booked instead.
    (other,) = await s.session("2102")
    account, patient = await line.resident()
    await refused("waitlist.session_not_full", line.waitlist.join(account, patient, HOSPITAL, session_of(other)))
    first_account, first = await line.waiter(session)
    second_account, second = await line.waiter(session)
    await refused("waitlist.already_waiting", line.waitlist.join(first_account, first.patient_id, HOSPITAL, session))
    await refused("booking.limit_department_day", line.waitlist.join(holder, holder_patient, HOSPITAL, session))
    assert [v.ahead for v in await line.waitlist.entries_of(second_account)] == [1]
    await s.bookings.rebuild_gate()

    await s.bookings.cancel(holder, booking.id)
    assert await s.taken(slot) == 1, "the freed number stays taken for the line"
    assert (await gate.admit(f"{HOSPITAL}:{slot}")).sold_out, "the gate was not told of a release"
    topics = [m.topic for m in await line.run_outbox()]
    assert OFFER_TOPIC in topics
    assert OFFERED_EVENT in topics
    offered = await line.entry(first.id)
    assert offered.state is WaitlistState.OFFERED
    assert offered.slot_id == slot
    assert offered.offer_expires_at == s.clock.now() + GRACE + HOLD, "not delivered yet: the latest deadline"
    assert (await line.entry(second.id)).state is WaitlistState.WAITING
    assert await s.taken(slot) == 1

    # Nobody else can take the number meanwhile: the database refuses, the gate already does.
    await refused("booking.slot_full", s.bookings.hold(account, patient, HOSPITAL, slot))
    assert (await gate.admit(f"{HOSPITAL}:{slot}")).sold_out
    # The offered resident is told at once (an urgent message) and the hold time counts from the delivery.
    s.clock.advance(120)
    assert set(await line.deliver()) == {DeliveryState.SENT.value}
    assert any("已为您保留" in body for _, body in line.push.sent)
    delivered = await line.entry(first.id)
    assert delivered.delivered_at == s.clock.now()
    assert delivered.offer_expires_at == s.clock.now() + HOLD


async def test_accepting_gives_a_held_booking_with_its_payment_order(line: Line) -> None:
    s = line.s
    (slot,) = await s.session("2201")
    holder, _, booking = await line.confirmed(slot)
    account, entry = await line.waiter(session_of(slot))
    await s.bookings.cancel(holder, booking.id)
    await line.run_outbox()
    await refused("waitlist.not_found", line.waitlist.accept(holder, entry.id))

    accepted = await line.waitlist.accept(account, entry.id)
    assert accepted.state is BookingState.HELD
    assert accepted.slot_id == slot
    assert accepted.payment_order_id is not None
    assert accepted.deadlines.hold_expires_at == s.clock.now() + timedelta(minutes=15), "a normal hold (APT-009)"
    assert await s.taken(slot) == 1, "the number passed from the offer to the booking, not taken again"
    held = await line.entry(entry.id)
    assert (held.state, held.booking_id) == (WaitlistState.HELD, accepted.id)
    async with SqlUnitOfWork(s.source) as uow:
        order = await uow.payments.get(accepted.payment_order_id)
    assert order is not None
    assert order.state is OrderState.CREATED
    assert (await line.waitlist.accept(account, entry.id)).id == accepted.id, "a repeated accept"
    # It is paid and confirmed like any booking.
    await s.resident_pays(account, accepted)
    await line.run_outbox()
    assert (await s.get(accepted.id)).state is BookingState.CONFIRMED
    assert await s.taken(slot) == 1


async def test_an_unaccepted_offer_lapses_and_passes_to_the_next_then_back_to_the_pool(line: Line) -> None:
    s = line.s
    s.bookings.d.gate = gate = MemorySlotGate()
    (slot,) = await s.session("2301")
    holder, _, booking = await line.confirmed(slot)
    first_account, first = await line.waiter(session_of(slot))
    _, second = await line.waiter(session_of(slot))
    await s.bookings.rebuild_gate()
    await s.bookings.cancel(holder, booking.id)
    await line.run_outbox()
    offered_at = s.clock.now()
    s.clock.advance(2 * 60)
    await line.deliver()
    deadline = offered_at + timedelta(minutes=2) + HOLD
    assert (await line.entry(first.id)).offer_expires_at == deadline

    s.clock.current = deadline - timedelta(seconds=1)
    assert (await line.waitlist.sweep())["lapsed"] == 0
    assert (await line.entry(first.id)).state is WaitlistState.OFFERED
    s.clock.current = deadline
    await refused("waitlist.offer_lapsed", line.waitlist.accept(first_account, first.id))
    assert (await line.waitlist.sweep())["lapsed"] == 1
    lapsed = await line.entry(first.id)
    assert lapsed.state is WaitlistState.LAPSED
    assert await s.taken(slot) == 1, "held for the next in line"
    topics = [m.topic for m in await line.run_outbox()]
    assert "booking.waitlist_lapsed" in topics
    nxt = await line.entry(second.id)
    assert nxt.state is WaitlistState.OFFERED
    assert nxt.slot_id == slot

    # Nobody takes it, and nobody else waits: the number goes back to the pool and the gate is told.
    assert (await gate.admit(f"{HOSPITAL}:{slot}")).sold_out
    s.clock.advance((GRACE + HOLD).total_seconds())  # never delivered: the clock started after the grace
    await line.waitlist.sweep()
    await line.run_outbox()
    assert (await line.entry(second.id)).state is WaitlistState.LAPSED
    assert await s.taken(slot) == 0
    assert await line.held_numbers() == []
    answer = await gate.admit(f"{HOSPITAL}:{slot}")
    assert not answer.sold_out, "released: the gate lets requests through"
    await gate.returned(f"{HOSPITAL}:{slot}", answer.ticket)
    account, patient = await line.resident()
    assert (await s.bookings.hold(account, patient, HOSPITAL, slot)).state is BookingState.HELD


async def test_leaving_the_line_and_an_offer_declined_by_leaving_passes_on(line: Line) -> None:
    s = line.s
    (slot,) = await s.session("2401")
    holder, _, booking = await line.confirmed(slot)
    session = session_of(slot)
    first_account, first = await line.waiter(session)
    second_account, second = await line.waiter(session)
    third_account, third = await line.waiter(session)
    await refused("waitlist.not_found", line.waitlist.leave(first_account, second.id))

    left = await line.waitlist.leave(second_account, second.id)
    assert (left.state, left.end_reason) == (WaitlistState.CANCELLED, "resident")
    assert (await line.waitlist.leave(second_account, second.id)).state is WaitlistState.CANCELLED, "twice is fine"
    assert [v.ahead for v in await line.waitlist.entries_of(third_account)] == [1]

    await s.bookings.cancel(holder, booking.id)
    await line.run_outbox()
    assert (await line.entry(first.id)).state is WaitlistState.OFFERED
    await line.waitlist.leave(first_account, first.id)  # declines the offer
    await line.run_outbox()
    assert (await line.entry(third.id)).state is WaitlistState.OFFERED
    assert await s.taken(slot) == 1


async def test_a_person_holding_a_booking_in_that_department_and_day_is_skipped(line: Line) -> None:
    """APT-005: waiting in the morning's line, then booking the afternoon of the same department: the morning's
    freed number goes to the next in line."""
    s = line.s
    (morning,) = await s.session("2501")
    (afternoon,) = await s.session("2501")
    holder, _, booking = await line.confirmed(morning)
    first_account, first = await line.waiter(session_of(morning))
    _, second = await line.waiter(session_of(morning))
    first_patient = first.patient_id
    await s.bookings.hold(first_account, first_patient, HOSPITAL, afternoon)
    await s.bookings.cancel(holder, booking.id)
    await line.run_outbox()
    assert (await line.entry(first.id)).state is WaitlistState.WAITING, "skipped, still in line"
    assert (await line.entry(second.id)).state is WaitlistState.OFFERED


async def test_two_numbers_freed_at_once_go_to_the_first_two_in_line(line: Line) -> None:
    s = line.s
    slots = await s.session("2601", slots=2)
    holders = [await line.confirmed(slot) for slot in slots]
    waiters = [await line.waiter(session_of(slots[0])) for _ in range(3)]
    await asyncio.gather(*(s.bookings.cancel(account, booking.id) for account, _, booking in holders))
    numbers = await line.held_numbers()
    assert len(numbers) == 2
    offered = await asyncio.gather(*(line.waitlist.offer_number(n) for n in numbers))
    assert {e.id for e in offered if e is not None} == {waiters[0][1].id, waiters[1][1].id}
    assert (await line.entry(waiters[2][1].id)).state is WaitlistState.WAITING
    assert {(await line.entry(e.id)).slot_id for _, e in waiters[:2]} == set(slots)
    assert [await s.taken(slot) for slot in slots] == [1, 1]
    # The outbox's messages for those numbers find them handled: nothing is offered twice.
    await line.run_outbox()
    assert (await line.entry(waiters[2][1].id)).state is WaitlistState.WAITING
    assert [await s.taken(slot) for slot in slots] == [1, 1]


async def test_a_stopped_session_closes_its_line_and_returns_the_offered_number(line: Line) -> None:
    s = line.s
    (slot,) = await s.session("2701")
    holder, _, booking = await line.confirmed(slot)
    _, first = await line.waiter(session_of(slot))
    _, second = await line.waiter(session_of(slot))
    await s.bookings.cancel(holder, booking.id)
    await line.run_outbox()
    async with SqlUnitOfWork(s.source) as uow:
        await uow.catalogue.set_session_status(
            HOSPITAL, session_of(slot), SessionStatus.STOPPED, reason="医生临时停诊", now=s.clock.now()
        )
        await uow.commit()
    # The catalogue's message of the stop (the sweep would find the session stopped too, within 30 s).
    payload = {"hospitalCode": HOSPITAL, "sessionId": session_of(slot), "reason": "医生临时停诊", "source": "his"}
    for handler in registry.topics["catalogue.session_stopped"]:
        if handler.__name__ == "booking_waitlist_session_stopped":
            await handler(line.runtime, payload, new_id())
    assert {(await line.entry(e.id)).end_reason for e in (first, second)} == {"session_stopped"}
    assert await s.taken(slot) == 0, "the offered number went back"
    assert (await line.waitlist.sweep())["closed"] == 0


async def test_the_sweep_offers_a_number_left_free_in_a_session_with_a_line(line: Line) -> None:
    """A number freed while the only person waiting could not have it goes to the pool; once someone who may
    have it waits, the sweep offers it."""
    s = line.s
    (slot,) = await s.session("2801")
    holder, _, booking = await line.confirmed(slot)
    _, first = await line.waiter(session_of(slot))
    async with SqlUnitOfWork(s.source) as uow:  # capacity raised by the HIS
        await uow.connection.execute(
            sa.text("UPDATE clinic_slots SET capacity = capacity + 1 WHERE hospital_code = :h AND id = :s"),
            {"h": HOSPITAL, "s": slot},
        )
        await uow.commit()
    assert (await line.waitlist.sweep())["offered"] == 1
    assert (await line.entry(first.id)).state is WaitlistState.OFFERED
    assert await s.taken(slot) == 2
    assert (await s.get(booking.id)).state is BookingState.CONFIRMED, holder
