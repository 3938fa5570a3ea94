"""Notification timing and the delivery state machine (DESIGN §5; issue: notifications)."""

from __future__ import annotations

from datetime import datetime, time

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain.kernel.clock import SHANGHAI
from domain.notification.model import (
    FINAL_STATES,
    DeliveryEvent,
    DeliveryState,
    EventClass,
    IllegalDeliveryTransitionError,
    next_state,
)
from domain.notification.timing import QuietHours, plan_reminder, send_at

QUIET = QuietHours(time(21, 0), time(8, 0))


def at(hour: int, minute: int = 0, day: int = 22) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=SHANGHAI)


@pytest.mark.parametrize(("hour", "inside"), [(20, False), (21, True), (23, True), (0, True), (7, True), (8, False)])
def test_quiet_hours_wrap_midnight(hour: int, inside: bool) -> None:
    assert QUIET.contains(at(hour)) is inside


def test_normal_messages_wait_for_quiet_hours_to_end() -> None:
    assert send_at(EventClass.NORMAL, now=at(22), quiet=QUIET) == at(8, day=23)
    assert send_at(EventClass.NORMAL, now=at(3, day=23), quiet=QUIET) == at(8, day=23)
    assert send_at(EventClass.NORMAL, now=at(10), quiet=QUIET) == at(10)


@pytest.mark.parametrize("event_class", [EventClass.TRANSACTIONAL, EventClass.URGENT])
def test_transactional_and_urgent_messages_are_never_deferred(event_class: EventClass) -> None:
    assert send_at(event_class, now=at(23, 30), quiet=QUIET) == at(23, 30)


def test_a_time_bound_message_inside_quiet_hours_is_not_sent_after_its_moment() -> None:
    assert send_at(EventClass.NORMAL, now=at(22), quiet=QUIET, moment=at(23)) == at(22)
    assert send_at(EventClass.NORMAL, now=at(22), quiet=QUIET, moment=at(9, day=23)) == at(8, day=23)


def test_a_reminder_meant_for_quiet_hours_is_planned_before_they_begin() -> None:
    assert plan_reminder(at(7, day=23), quiet=QUIET) == at(20, 30)
    assert plan_reminder(at(22), quiet=QUIET) == at(20, 30)
    assert plan_reminder(at(14), quiet=QUIET) == at(14)


def test_a_sent_delivery_cannot_move() -> None:
    with pytest.raises(IllegalDeliveryTransitionError):
        next_state(DeliveryState.SENT, DeliveryEvent.SENT)
    with pytest.raises(IllegalDeliveryTransitionError):
        next_state(DeliveryState.SKIPPED, DeliveryEvent.RETRY_DUE)


class DeliveryMachine(RuleBasedStateMachine):
    """Any sequence of events: final states stay final; a message is sent at most once."""

    def __init__(self) -> None:
        super().__init__()
        self.state = DeliveryState.PENDING
        self.sends = 0

    @rule(event=st.sampled_from(list(DeliveryEvent)))
    def apply(self, event: DeliveryEvent) -> None:
        before = self.state
        try:
            self.state = next_state(self.state, event)
        except IllegalDeliveryTransitionError:
            assert self.state == before
            return
        assert before not in FINAL_STATES
        if self.state is DeliveryState.SENT:
            self.sends += 1

    @invariant()
    def sent_at_most_once(self) -> None:
        assert self.sends <= 1


TestDeliveryMachine = DeliveryMachine.TestCase
