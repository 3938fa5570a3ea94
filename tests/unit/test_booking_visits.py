"""The pure parts of rescheduling and bans (domain/booking/visits.py, machine.py, rules.py): the HIS side of a
move, and an operator's lift of an APT-008 ban."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from domain.booking.machine import (
    CancelAtHis,
    HisMoved,
    HisMoveRefused,
    Notify,
    ReleaseSlot,
    RequestRefund,
    RescheduleRequested,
    apply,
)
from domain.booking.model import BookingState
from domain.booking.rules import BanRule, BookingPolicy, ban_until, check_bans
from domain.booking.visits import CurrentBan, current_bans
from domain.catalogue.rules import BookingRules, NoShowRule
from tests.unit.test_booking_rules import RULES, at, booking, no_show, offer


def test_the_new_registration_is_recorded_once_and_an_unwanted_one_is_cancelled() -> None:
    confirmed = booking(at(25, 9))
    moved = apply(confirmed, RescheduleRequested(offer(at(25, 10), slot="B"), RULES, at(22, 10))).booking
    assert (moved.slot_id, moved.his_registration_id) == ("B", "R1")
    done = apply(moved, HisMoved("R1", "R2", "B", at(22, 10), 7))
    assert (done.booking.his_registration_id, done.booking.queue_number, done.effects) == ("R2", 7, ())
    assert not apply(done.booking, HisMoved("R1", "R2", "B", at(22, 11))).changed, "a redelivery changes nothing"
    # A registration for a slot the booking has left (moved again meanwhile) is cancelled at the HIS.
    stale = apply(done.booking, HisMoved("R1", "R9", "A", at(22, 11)))
    assert stale.effects == (CancelAtHis("H001", "R9"),)
    assert stale.booking.his_registration_id == "R2"
    ended = replace(done.booking, state=BookingState.CANCELLED)
    assert apply(ended, HisMoved("R2", "R3", "B", at(22, 11))).effects == (CancelAtHis("H001", "R3"),)


def test_a_move_the_his_refuses_ends_the_booking_refunded() -> None:
    confirmed = booking(at(25, 9))
    moved = apply(confirmed, RescheduleRequested(offer(at(25, 10), slot="B"), RULES, at(22, 10))).booking
    failed = apply(moved, HisMoveRefused("B", "his.rejected", at(22, 10)))
    assert failed.booking.state is BookingState.CONFIRM_FAILED
    kinds = [type(e) for e in failed.effects]
    assert ReleaseSlot in kinds
    assert RequestRefund in kinds
    assert CancelAtHis("H001", "R1") in failed.effects, "the old registration goes too"
    assert Notify in kinds
    assert not apply(moved, HisMoveRefused("A", "his.rejected", at(22, 10))).changed, "superseded: nothing"


def test_apt008_a_lift_forgives_the_events_up_to_it_and_new_ones_count_from_zero() -> None:
    """APT-008: three no-shows in 90 days ban; an operator's lift at T forgives the events at or before T."""
    history = [no_show(at(1, month=11)), no_show(at(5, month=11)), no_show(at(10, month=11))]
    rules = (BanRule(),)
    now = at(12, month=11)
    assert check_bans(history, rules, now, person_id="child", hospital_code="H001") is not None
    lifted = at(12, 10, month=11)
    assert ban_until(history, rules, now, person_id="child", hospital_code="H001", forgiven_until=lifted) is None
    later = [*history, no_show(at(20, month=11)), no_show(at(25, month=11))]
    assert ban_until(later, rules, at(26), person_id="child", hospital_code="H001", forgiven_until=lifted) is None
    third = [*later, no_show(at(1, month=12))]
    until = ban_until(third, rules, at(2, month=12), person_id="child", hospital_code="H001", forgiven_until=lifted)
    assert until == at(1, month=12) + timedelta(days=90)


def test_current_bans_name_the_platform_and_each_hospital() -> None:
    history = [no_show(at(1, month=11)), no_show(at(5, month=11)), no_show(at(10, month=11), hospital="H002")]
    strict = BookingRules(no_show_rules=(NoShowRule(count=2, window_days=30, ban_days=30),))
    now = at(11, month=11)
    found = current_bans(
        BookingPolicy(), history, {"H001": strict, "H002": RULES}, now, person_id="child", forgiven_until=None
    )
    assert found == (
        CurrentBan(None, at(10, month=11) + timedelta(days=90)),
        CurrentBan("H001", at(5, month=11) + timedelta(days=30)),
    )
    assert current_bans(BookingPolicy(), history, {}, now, person_id="child", forgiven_until=now) == ()
