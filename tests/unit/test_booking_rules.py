"""Booking rules APT-002..010 (shared/reference/domain-rules.md §4): each enforced, at its boundaries, with the
numbers as configuration. Limits are counted per person, never per account (DESIGN D4)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time, timedelta

import pytest

from domain.booking.errors import BannedError, LimitExceededError
from domain.booking.machine import (
    CancelRequested,
    CheckedIn,
    CheckInWindowPassed,
    HisConfirmed,
    Hold,
    HoldExpired,
    Paid,
    RescheduleRequested,
    SessionStopped,
    apply,
    hold,
)
from domain.booking.model import Booking, BookingState
from domain.booking.rules import (
    BanEvent,
    BanRule,
    BookingIdentity,
    BookingPolicy,
    Candidate,
    IdentityMode,
    LimitBasis,
    PersonLimits,
    WindowKind,
    add_months,
    admit,
    ban_until,
    check_bans,
    check_limits,
    check_open_hours,
    check_real_name,
    check_window,
    deadlines,
)
from domain.booking.slots import SlotOffer, SlotStock
from domain.catalogue.model import SessionStatus
from domain.catalogue.rules import BookingRules, NoShowRule
from domain.kernel.clock import SHANGHAI

RULES = BookingRules()
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=SHANGHAI)
VISIT = datetime(2026, 11, 25, 9, 0, tzinfo=SHANGHAI)
SECOND = timedelta(seconds=1)


def at(day: int, hour: int = 9, minute: int = 0, second: int = 0, month: int = 11, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=SHANGHAI)


_counter = iter(range(1, 1_000_000))


def booking(
    start: datetime = VISIT,
    *,
    person: str = "child",
    account: str = "acct-mum",
    hospital: str = "H001",
    department: str = "D1",
    state: BookingState = BookingState.CONFIRMED,
    created_at: datetime = NOW,
    rules: BookingRules = RULES,
    ended_at: datetime | None = None,
    end_reason: str | None = None,
) -> Booking:
    return Booking(
        id=f"b{next(_counter)}",
        account_id=account,
        person_id=person,
        hospital_code=hospital,
        department_code=department,
        doctor_code=None,
        session_id="S1",
        slot_id="A",
        slot_start=start,
        slot_end=start + timedelta(minutes=30),
        fee_fen=500,
        created_at=created_at,
        deadlines=deadlines(rules, start, created_at, free=False),
        state=state,
        payment_order_id="o1",
        paid_at=None if state is BookingState.HELD else created_at,
        his_registration_id=None if state is BookingState.HELD else "R1",
        ended_at=ended_at,
        end_reason=end_reason,
    )


def candidate(
    start: datetime = VISIT, *, person: str = "child", hospital: str = "H001", department: str = "D1"
) -> Candidate:
    return Candidate.at(person, hospital, department, start, replacing=None)


def offer(start: datetime = VISIT, *, slot: str = "A", taken: int = 0, capacity: int = 2) -> SlotOffer:
    return SlotOffer(
        hospital_code="H001",
        session_id="S1",
        slot_id=slot,
        department_code="D1",
        doctor_code=None,
        start=start,
        end=start + timedelta(minutes=30),
        fee_fen=500,
        session_status=SessionStatus.OPEN,
        stock=SlotStock("H001", slot, capacity, taken),
    )


def code(error: Exception | None) -> str | None:
    return getattr(error, "code", None) if error is not None else None


# ---------------------------------------------------------------------------------------------- APT-002/003 real name


def test_apt002_booking_requires_a_verified_real_name_person() -> None:
    unverified = BookingIdentity("p1", verified=False, has_document=True)
    assert code(check_real_name(unverified, IdentityMode.OWN_DOCUMENT)) == "booking.real_name_required"
    verified = BookingIdentity("p1", verified=True, has_document=True)
    assert check_real_name(verified, IdentityMode.OWN_DOCUMENT) is None


def test_apt002_the_number_is_collected_only_by_the_person_booked() -> None:
    confirmed = booking()
    opens = confirmed.deadlines.checkin_opens_at
    with pytest.raises(Exception) as caught:
        apply(confirmed, CheckedIn("someone-else", opens))
    assert code(caught.value) == "booking.identity_mismatch"
    assert apply(confirmed, CheckedIn("child", opens)).booking.state is BookingState.CHECKED_IN


def test_apt003_a_child_without_a_document_follows_the_hospital_identity_mode() -> None:
    child = BookingIdentity("kid", verified=True, has_document=False, guardian_verified=False)
    assert code(check_real_name(child, IdentityMode.OWN_DOCUMENT)) == "booking.document_required"
    assert code(check_real_name(child, IdentityMode.GUARDIAN)) == "booking.guardian_required"
    with_guardian = BookingIdentity("kid", verified=True, has_document=False, guardian_verified=True)
    assert check_real_name(with_guardian, IdentityMode.GUARDIAN) is None
    policy = BookingPolicy(identity_modes={"H002": IdentityMode.GUARDIAN})
    assert (policy.mode_for("H001"), policy.mode_for("H002")) == (IdentityMode.OWN_DOCUMENT, IdentityMode.GUARDIAN)


# ---------------------------------------------------------------------------------------------- APT-004 window


def test_apt004_a_day_opens_exactly_at_the_release_time_window_days_before() -> None:
    rules = BookingRules(window_days=7, release_time=time(15, 0))
    slot = at(1, month=12)
    assert code(check_window(rules, slot, at(24, 14, 59, 59))) == "booking.not_open_yet"
    assert check_window(rules, slot, at(24, 15, 0)) is None
    assert code(check_window(rules, slot, at(23, 23, 0))) == "booking.not_open_yet", "8 days ahead"
    refused = check_window(rules, slot, at(24, 8))
    assert refused is not None
    assert refused.extra["opensAt"] == at(24, 15).isoformat()
    assert "11月24日 15:00" in refused.message


def test_apt004_same_day_only_where_allowed_and_never_a_started_slot() -> None:
    slot = at(22, 16)
    assert code(check_window(RULES, slot, at(22, 8))) == "booking.same_day_not_allowed"
    same_day = BookingRules(allow_same_day=True)
    assert check_window(same_day, slot, at(22, 15, 59, 59)) is None
    assert code(check_window(same_day, slot, slot)) == "booking.slot_past"
    assert code(check_window(RULES, at(21, 9), at(22, 8))) == "booking.slot_past"


def test_apt004_hold_refuses_a_slot_outside_the_window() -> None:
    far = at(10, month=12)
    with pytest.raises(Exception) as caught:
        hold(Hold("b1", "acct", "p1", offer(far), RULES, NOW, "o1"))
    assert code(caught.value) == "booking.not_open_yet"


# ---------------------------------------------------------------------------------------------- APT-005 limits


def test_apt005_one_booking_per_department_per_visit_day_per_hospital() -> None:
    mine = [booking(at(25, 9))]
    refused = check_limits(mine, candidate(at(25, 15)), PersonLimits(), NOW)
    assert code(refused) == "booking.limit_department_day"
    assert isinstance(refused, LimitExceededError)
    assert refused.message == "同一就诊人同一就诊日在同一医院同一科室只能预约1个号"
    assert check_limits(mine, candidate(at(25, 15), department="D2"), PersonLimits(), NOW) is None
    assert check_limits(mine, candidate(at(25, 15), hospital="H002"), PersonLimits(), NOW) is None
    assert check_limits(mine, candidate(at(26, 9)), PersonLimits(), NOW) is None


def test_apt005_two_bookings_per_visit_day_the_third_refused() -> None:
    mine = [booking(at(25, 9), department="D1")]
    second = candidate(at(25, 10), department="D2")
    assert check_limits(mine, second, PersonLimits(), NOW) is None
    mine.append(booking(at(25, 10), department="D2"))
    refused = check_limits(mine, candidate(at(25, 14), department="D3"), PersonLimits(), NOW)
    assert code(refused) == "booking.limit_day"
    assert refused is not None
    assert "最多预约2个号" in refused.message


def test_apt005_three_within_any_7_days_by_visit_day() -> None:
    mine = [booking(at(23)), booking(at(25)), booking(at(27))]
    assert code(check_limits(mine, candidate(at(29)), PersonLimits(), NOW)) == "booking.limit_short_window"
    assert check_limits(mine, candidate(at(30)), PersonLimits(), NOW) is None, "23..29 holds 3; 24..30 holds 2"
    assert code(check_limits(mine, candidate(at(24)), PersonLimits(), NOW)) == "booking.limit_short_window"
    # Booked out of order: an earlier day is checked against every 7-day run it falls in.
    later = [booking(at(26)), booking(at(28)), booking(at(30))]
    assert code(check_limits(later, candidate(at(24)), PersonLimits(), NOW)) == "booking.limit_short_window"
    assert check_limits(later, candidate(at(23)), PersonLimits(), NOW) is None, "23..29 holds 26 and 28 only"


def test_apt005_five_within_3_months_at_the_month_boundary() -> None:
    first = at(1, month=12)
    mine = [booking(first + timedelta(days=10 * i)) for i in range(5)]  # 1, 11, 21, 31 Dec, 10 Jan
    assert code(check_limits(mine, candidate(at(20, year=2027, month=1)), PersonLimits(), NOW)) == (
        "booking.limit_long_window"
    )
    three_months_later = datetime.combine(add_months(first.date(), 3), time(9), tzinfo=SHANGHAI)
    assert three_months_later == at(1, year=2027, month=3)
    assert check_limits(mine, candidate(three_months_later), PersonLimits(), NOW) is None
    assert code(check_limits(mine, candidate(three_months_later - timedelta(days=1)), PersonLimits(), NOW)) == (
        "booking.limit_long_window"
    )


def test_apt005_only_bookings_that_hold_a_number_count() -> None:
    gone = [
        booking(at(25), state=BookingState.CANCELLED),
        booking(at(25), state=BookingState.EXPIRED),
        booking(at(25), state=BookingState.STOPPED),
        booking(at(25), state=BookingState.CONFIRM_FAILED),
        booking(at(25), state=BookingState.REFUNDED_LATE),
    ]
    assert check_limits(gone, candidate(at(25)), PersonLimits(), NOW) is None
    held = booking(at(25), state=BookingState.HELD)
    assert code(check_limits([held], candidate(at(25)), PersonLimits(), NOW)) == "booking.limit_department_day"
    expires = held.deadlines.hold_expires_at
    assert expires is not None
    assert check_limits([held], candidate(at(25)), PersonLimits(), expires) is None, "expired, not yet swept"
    for counted in (BookingState.NO_SHOW, BookingState.COMPLETED, BookingState.CHECKED_IN, BookingState.PAID):
        assert check_limits([booking(at(25), state=counted)], candidate(at(25)), PersonLimits(), NOW) is not None


def test_apt005_two_accounts_managing_one_child_share_the_quota() -> None:
    by_mum = booking(at(25), person="child", account="acct-mum")
    refused = check_limits([by_mum], candidate(at(25), person="child"), PersonLimits(), NOW)
    assert code(refused) == "booking.limit_department_day", "dad's account books the same child"
    mine = [by_mum, booking(at(26), person="child", account="acct-dad"), booking(at(27), account="acct-dad")]
    assert code(check_limits(mine, candidate(at(28)), PersonLimits(), NOW)) == "booking.limit_short_window"
    sibling = candidate(at(25), person="sibling")
    assert check_limits(mine, sibling, PersonLimits(), NOW) is None, "another person of the same accounts"


def test_apt005_a_reschedule_does_not_count_the_booking_it_moves() -> None:
    moving = booking(at(25, 9))
    same_day = Candidate.at("child", "H001", "D1", at(25, 15), replacing=moving.id)
    assert check_limits([moving], same_day, PersonLimits(), NOW) is None


def test_apt005_limits_are_configuration_and_may_count_by_booking_time() -> None:
    loose = PersonLimits(per_day=3, per_department_day=2)
    mine = [booking(at(25, 9)), booking(at(25, 10))]
    assert code(check_limits(mine, candidate(at(25, 11)), loose, NOW)) == "booking.limit_department_day"
    assert check_limits(mine, candidate(at(25, 11), department="D2"), loose, NOW) is None, "3 a day allowed"
    by_booking = PersonLimits(basis=LimitBasis.BOOKED_AT)
    made = [booking(at(day, month=12), created_at=NOW - timedelta(days=d)) for day, d in ((1, 0), (9, 1), (17, 6))]
    assert code(check_limits(made, candidate(at(25, month=12)), by_booking, NOW)) == "booking.limit_short_window"
    week_later = NOW + timedelta(days=1)  # the one made 6 days ago is 7 days old now: out of the window
    assert check_limits(made, candidate(at(25, month=12)), by_booking, week_later) is None


# ---------------------------------------------------------------------------------------------- APT-006 cut-off


def test_apt006_cancel_strictly_before_the_day_before_cut_off() -> None:
    confirmed = booking(at(25, 9))
    assert confirmed.deadlines.cancel_deadline == at(24, 15)
    assert apply(confirmed, CancelRequested(at(24, 14, 59, 59))).booking.state is BookingState.CANCELLED
    with pytest.raises(Exception) as caught:
        apply(confirmed, CancelRequested(at(24, 15)))
    assert code(caught.value) == "booking.cancel_too_late"


def test_apt006_cut_off_n_hours_before_the_slot() -> None:
    rules = BookingRules(cancel_cutoff_hours_before=2)
    confirmed = booking(at(25, 9), rules=rules)
    assert confirmed.deadlines.cancel_deadline == at(25, 7)
    assert apply(confirmed, CancelRequested(at(25, 6, 59, 59))).changed
    with pytest.raises(Exception, match="cancel_too_late"):
        apply(confirmed, CancelRequested(at(25, 7)))


def test_apt006_an_unpaid_hold_can_always_be_given_back_and_reschedule_follows_the_cut_off() -> None:
    held = booking(at(25, 9), state=BookingState.HELD)
    assert apply(held, CancelRequested(at(24, 16))).booking.state is BookingState.CANCELLED
    confirmed = booking(at(25, 9))
    target = offer(at(25, 10), slot="B")
    with pytest.raises(Exception) as caught:
        apply(confirmed, RescheduleRequested(target, RULES, at(24, 15)))
    assert code(caught.value) == "booking.reschedule_too_late"
    assert apply(confirmed, RescheduleRequested(target, RULES, at(24, 14, 59, 59))).booking.slot_id == "B"


# ---------------------------------------------------------------------------------------------- APT-007 no-show


def test_apt007_thirty_minutes_late_still_collects_later_is_a_no_show() -> None:
    confirmed = booking(at(25, 9))
    closes = confirmed.deadlines.checkin_closes_at
    assert closes == at(25, 9, 30)
    assert apply(confirmed, CheckedIn("child", closes)).booking.state is BookingState.CHECKED_IN
    with pytest.raises(Exception) as late:
        apply(confirmed, CheckedIn("child", closes + SECOND))
    assert code(late.value) == "booking.checkin_too_late"
    with pytest.raises(Exception) as early:
        apply(confirmed, CheckInWindowPassed(closes))
    assert code(early.value) == "booking.checkin_window_open"
    assert apply(confirmed, CheckInWindowPassed(closes + SECOND)).booking.state is BookingState.NO_SHOW


def test_apt007_a_stopped_session_is_never_a_no_show() -> None:
    stopped = apply(booking(at(25, 9)), SessionStopped("停诊", at(24, 18))).booking
    assert stopped.state is BookingState.STOPPED
    with pytest.raises(Exception, match="illegal_transition"):
        apply(stopped, CheckInWindowPassed(at(25, 12)))
    history = [stopped, stopped, stopped]
    assert ban_until(history, (BanRule(),), at(26), person_id="child", hospital_code="H001") is None


# ---------------------------------------------------------------------------------------------- APT-008 bans


def no_show(start: datetime, *, hospital: str = "H001", person: str = "child") -> Booking:
    return booking(
        start, state=BookingState.NO_SHOW, hospital=hospital, person=person, created_at=start - timedelta(days=1)
    )


def test_apt008_three_no_shows_in_90_days_suspend_online_booking_for_90_days() -> None:
    history = [no_show(at(1, month=9)), no_show(at(1, month=10)), no_show(at(20, month=11))]
    rules = (BanRule(),)
    third = at(20, month=11)
    assert ban_until(history[:2], rules, third, person_id="child", hospital_code="H001") is None, "two: no ban"
    until = ban_until(history, rules, third, person_id="child", hospital_code="H001")
    assert until == third + timedelta(days=90)
    refused = check_bans(history, rules, third + timedelta(days=89), person_id="child", hospital_code="H002")
    assert isinstance(refused, BannedError)
    assert refused.code == "booking.banned"
    assert "2027年02月18日" in refused.message
    assert check_bans(history, rules, until, person_id="child", hospital_code="H001") is None, "ends at 90 days"
    assert check_bans(history, rules, third, person_id="someone-else", hospital_code="H001") is None


def test_apt008_the_rolling_window_edge() -> None:
    first = at(1, month=9)
    inside = [no_show(first), no_show(first + timedelta(days=30)), no_show(first + timedelta(days=89))]
    outside = [no_show(first), no_show(first + timedelta(days=30)), no_show(first + timedelta(days=90))]
    when = first + timedelta(days=91)
    assert ban_until(inside, (BanRule(),), when, person_id="child", hospital_code="H001") is not None
    assert ban_until(outside, (BanRule(),), when, person_id="child", hospital_code="H001") is None


def test_apt008_bans_apply_to_online_booking_only() -> None:
    history = [no_show(at(1, month=10)), no_show(at(2, month=10)), no_show(at(3, month=10))]
    now = at(5, month=10)
    assert check_bans(history, (BanRule(),), now, person_id="child", hospital_code="H001") is not None
    assert check_bans(history, (BanRule(),), now, person_id="child", hospital_code="H001", online=False) is None


def test_apt008_a_calendar_year_table_with_escalation() -> None:
    # The 114 hospital: per calendar year, 1st no-show 30 days, 2nd 60, 3rd 90, and so on.
    rule = BanRule(count=1, window_kind=WindowKind.CALENDAR_YEAR, ban_days=30, escalation_days=30)
    one = [no_show(at(1, month=3))]
    assert ban_until(one, (rule,), at(2, month=3), person_id="child", hospital_code="H001") == at(31, month=3)
    two = [*one, no_show(at(1, month=6))]
    assert ban_until(two, (rule,), at(2, month=6), person_id="child", hospital_code="H001") == at(31, month=7)
    next_year = [*two, no_show(at(5, month=1, year=2027))]
    assert ban_until(next_year, (rule,), at(6, month=1, year=2027), person_id="child", hospital_code="H001") == (
        at(4, month=2, year=2027)
    ), "the count starts again each year"


def test_apt008_cancellations_can_be_a_rule_too() -> None:
    rule = BanRule(event=BanEvent.CANCELLATION, count=3, window_kind=WindowKind.CALENDAR_MONTH, ban_days=30)
    cancelled = [
        booking(at(25), state=BookingState.CANCELLED, ended_at=at(d, 10), end_reason="resident") for d in (3, 9, 15)
    ]
    assert ban_until(cancelled, (rule,), at(16), person_id="child", hospital_code="H001") == at(15, 10) + timedelta(
        days=30
    )
    stopped = [replace(b, state=BookingState.STOPPED, end_reason="stopped") for b in cancelled]
    assert ban_until(stopped, (rule,), at(16), person_id="child", hospital_code="H001") is None


def test_apt008_a_hospital_rule_counts_and_bans_at_that_hospital_only() -> None:
    hospital_rules = BookingRules(no_show_rules=(NoShowRule(count=1, window_days=30, ban_days=7),))
    policy = BookingPolicy(bans=())
    rules = policy.bans_at("H001", hospital_rules)
    history = [no_show(at(1, month=11), hospital="H001"), no_show(at(2, month=11), hospital="H002")]
    now = at(3, month=11)
    assert ban_until(history, rules, now, person_id="child", hospital_code="H001") == at(8, month=11)
    assert ban_until(history, rules, now, person_id="child", hospital_code="H002") is None, "not at H002"


# ------------------------------------------------------------------------------------------- APT-009 payment deadline


def test_apt009_an_unpaid_hold_expires_after_15_minutes_by_default() -> None:
    held = hold(Hold("b1", "acct", "child", offer(), RULES, NOW, "o1")).booking
    assert held.deadlines.hold_expires_at == NOW + timedelta(minutes=15)
    with pytest.raises(Exception, match="hold_not_expired"):
        apply(held, HoldExpired(NOW + timedelta(minutes=15) - SECOND))
    assert apply(held, HoldExpired(NOW + timedelta(minutes=15))).booking.state is BookingState.EXPIRED
    quick = BookingRules(payment_minutes=5)
    assert hold(Hold("b2", "acct", "child", offer(), quick, NOW, "o2")).booking.deadlines.hold_expires_at == (
        NOW + timedelta(minutes=5)
    )


def test_apt009_a_hold_never_outlives_its_slot() -> None:
    same_day = BookingRules(allow_same_day=True)
    soon = NOW + timedelta(minutes=10)
    held = hold(Hold("b1", "acct", "child", offer(soon), same_day, NOW, "o1")).booking
    assert held.deadlines.hold_expires_at == soon


def test_apt009_paid_in_time_goes_to_confirmation() -> None:
    held = hold(Hold("b1", "acct", "child", offer(), RULES, NOW, "o1")).booking
    paid = apply(held, Paid("o1", NOW + timedelta(minutes=14))).booking
    assert paid.state is BookingState.PAID
    assert apply(paid, HisConfirmed("R1", NOW + timedelta(minutes=15))).booking.state is BookingState.CONFIRMED


# ---------------------------------------------------------------------------------------------- APT-010 windows


def test_apt010_check_in_opens_an_hour_before_the_slot() -> None:
    confirmed = booking(at(25, 9))
    opens = confirmed.deadlines.checkin_opens_at
    assert opens == at(25, 8)
    with pytest.raises(Exception) as caught:
        apply(confirmed, CheckedIn("child", opens - SECOND))
    assert code(caught.value) == "booking.checkin_too_early"
    assert apply(confirmed, CheckedIn("child", opens)).changed
    assert apply(confirmed, CheckedIn("child", opens - timedelta(hours=5), at_his=True)).changed, "at the counter"


def test_apt010_no_booking_in_the_nightly_closed_hours() -> None:
    policy = BookingPolicy(closed_hours=(time(0, 0), time(6, 30)))
    assert code(check_open_hours(policy, at(23, 6, 29, 59))) == "booking.closed_hours"
    assert check_open_hours(policy, at(23, 6, 30)) is None
    assert check_open_hours(policy, at(23, 23, 59)) is None
    wraps = BookingPolicy(closed_hours=(time(23, 0), time(6, 0)))
    assert code(check_open_hours(wraps, at(23, 23, 30))) == "booking.closed_hours"
    assert check_open_hours(BookingPolicy(), at(23, 3)) is None


# ---------------------------------------------------------------------------------------------- all together


def test_admit_checks_real_name_then_bans_then_limits_per_person() -> None:
    policy = BookingPolicy()
    who = BookingIdentity("child", verified=True, has_document=True)
    mine = [booking(at(25, 9))]

    def admitted(identity: BookingIdentity, history: list[Booking], start: datetime) -> str | None:
        return code(
            admit(
                policy,
                identity=identity,
                person_bookings=history,
                candidate=candidate(start),
                hospital_rules=RULES,
                now=NOW,
            )
        )

    assert admitted(who, mine, at(25, 15)) == "booking.limit_department_day"
    assert admitted(who, mine, at(26, 15)) is None
    assert admitted(BookingIdentity("child", verified=False, has_document=True), mine, at(26)) == (
        "booking.real_name_required"
    )
    banned = [no_show(at(1, month=11)), no_show(at(5, month=11)), no_show(at(9, month=11))]
    assert admitted(who, banned, at(26)) == "booking.banned"
