"""The booking storm's pure parts (load/storm_logic.py): the simulated resident's retry policy, percentiles, the
sold-out window and the correctness counters computed from rows. No benchmark runs here and nothing is timed."""

from __future__ import annotations

import random
from datetime import date

import pytest

from load.http_client import build_request, parse_head
from load.storm import PGBENCH_SCRIPT, citizen_id
from load.storm_logic import (
    LIVE_STATES,
    Answer,
    BookingRow,
    ClientPolicy,
    Done,
    Outcome,
    ResidentTry,
    SlotRow,
    Try,
    Verdict,
    Wait,
    after_wait,
    classify,
    correctness,
    count_verdicts,
    first_choices,
    hard_targets_met,
    next_step,
    past_gate,
    percentile,
    resident_address,
    retry_after_seconds,
    session_sizes,
    sold_out_window,
    targets,
)
from persistence.booking.tables import LIVE_STATES as TABLE_LIVE_STATES

SESSION = ("S-0", "S-1", "S-2", "S-3", "S-4", "S-5")
DAY = date(2026, 12, 9)


# --------------------------------------------------------------------------------------------- answers


def test_classify_answers() -> None:
    assert classify(201, None) is Verdict.BOOKED
    assert classify(409, "booking.slot_full") is Verdict.FULL
    assert classify(409, "booking.limit_department_day") is Verdict.REFUSED
    assert classify(400, "booking.limit_day") is Verdict.REFUSED
    assert classify(429, "rate_limited") is Verdict.THROTTLED
    assert classify(500, "internal.error") is Verdict.SERVER_ERROR
    assert classify(503, "service.unavailable") is Verdict.SERVER_ERROR
    assert classify(None, None) is Verdict.TRANSPORT


def test_past_gate_tells_gate_refusals_from_postgres_ones() -> None:
    assert past_gate(201, None, None)
    assert past_gate(409, "booking.slot_full", "slot S-1 full")  # PostgreSQL's conditional update said no
    assert not past_gate(409, "booking.slot_full", "sold out (gate)")
    assert past_gate(409, "booking.limit_day", "day limit")
    assert not past_gate(429, "rate_limited", None)
    assert not past_gate(None, "transport", "reset")
    assert past_gate(500, "internal.error", None)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), (" 12 ", 12.0), ("0", 0.0), (None, 1.0), ("Wed, 21 Oct 2026 07:28:00 GMT", 1.0), ("-4", 1.0)],
)
def test_retry_after(header: str | None, expected: float) -> None:
    assert retry_after_seconds(header) == expected


# --------------------------------------------------------------------------------------------- the client policy


def _resident(first: str = "S-0") -> tuple[ResidentTry, Try]:
    state = ResidentTry(session_slots=SESSION)
    return state, state.start(first)


def test_booked_at_once_ends_the_try() -> None:
    state, step = _resident()
    assert step == Try("S-0", new_key=True)
    assert next_step(ClientPolicy(), state, Verdict.BOOKED, None, random.Random(1)) == Done(Outcome.BOOKED)


def test_full_moves_to_at_most_three_other_slots_of_the_session() -> None:
    state, _ = _resident()
    rng = random.Random(7)
    policy = ClientPolicy()
    tried = []
    for _ in range(3):
        step = next_step(policy, state, Verdict.FULL, None, rng)
        assert isinstance(step, Try)
        assert step.new_key
        assert step.slot_id in SESSION
        tried.append(step.slot_id)
    assert len(set(tried)) == 3
    assert "S-0" not in tried
    assert next_step(policy, state, Verdict.FULL, None, rng) == Done(Outcome.SOLD_OUT)
    assert len(state.tried) == 4


def test_full_on_a_small_session_stops_when_every_slot_was_tried() -> None:
    state = ResidentTry(session_slots=("A", "B"))
    state.start("A")
    rng = random.Random(3)
    assert next_step(ClientPolicy(), state, Verdict.FULL, None, rng) == Try("B", new_key=True)
    assert next_step(ClientPolicy(), state, Verdict.FULL, None, rng) == Done(Outcome.SOLD_OUT)


def test_throttled_waits_retry_after_at_most_three_times_with_the_same_key() -> None:
    state, _ = _resident("S-2")
    rng = random.Random(1)
    for _ in range(3):
        assert next_step(ClientPolicy(), state, Verdict.THROTTLED, 2.0, rng) == Wait(2.0)
        assert after_wait(state) == Try("S-2", new_key=False)
    assert next_step(ClientPolicy(), state, Verdict.THROTTLED, 2.0, rng) == Done(Outcome.THROTTLED)


def test_throttled_then_booked() -> None:
    state, _ = _resident()
    rng = random.Random(1)
    assert isinstance(next_step(ClientPolicy(), state, Verdict.THROTTLED, None, rng), Wait)
    assert next_step(ClientPolicy(), state, Verdict.BOOKED, None, rng) == Done(Outcome.BOOKED)
    assert state.answers == 2


def test_a_retry_after_beyond_the_cap_ends_the_try() -> None:
    state, _ = _resident()
    policy = ClientPolicy(max_wait_seconds=30)
    assert next_step(policy, state, Verdict.THROTTLED, 31.0, random.Random(1)) == Done(Outcome.THROTTLED)


@pytest.mark.parametrize(
    ("verdict", "outcome"),
    [(Verdict.REFUSED, Outcome.REFUSED), (Verdict.SERVER_ERROR, Outcome.ERROR), (Verdict.TRANSPORT, Outcome.ERROR)],
)
def test_anything_else_ends_the_try(verdict: Verdict, outcome: Outcome) -> None:
    state, _ = _resident()
    assert next_step(ClientPolicy(), state, verdict, None, random.Random(1)) == Done(outcome)


def test_the_choice_of_another_slot_is_reproducible() -> None:
    def path(seed: int) -> list[str]:
        state, _ = _resident()
        rng = random.Random(seed)
        steps = [next_step(ClientPolicy(), state, Verdict.FULL, None, rng) for _ in range(3)]
        return [s.slot_id for s in steps if isinstance(s, Try)]

    assert path(11) == path(11)


# --------------------------------------------------------------------------------------------- percentiles


def test_percentiles_interpolate_like_numpy() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 40.0
    assert percentile(values, 50) == 25.0
    assert percentile(values, 95) == pytest.approx(38.5)
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # order does not matter


def test_percentile_bounds() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# --------------------------------------------------------------------------------------------- the storm's windows


def _answer(finished: float, status: int, code: str | None = None) -> Answer:
    return Answer(started=finished - 0.01, finished=finished, status=status, code=code)


def test_sold_out_window() -> None:
    answers = [
        _answer(0.5, 201),
        _answer(0.7, 409, "booking.slot_full"),  # before the sold-out instant: not counted in the rate
        _answer(1.0, 201),
        *[_answer(1.0 + 0.1 * i, 409, "booking.slot_full") for i in range(1, 21)],
    ]
    at, rate, after = sold_out_window(answers, capacity=2)
    assert at == 1.0
    assert after == 20
    assert rate == pytest.approx(20 / 2.0)


def test_never_sold_out() -> None:
    assert sold_out_window([_answer(0.5, 201)], capacity=2) == (None, None, 0)


def test_too_short_a_tail_has_no_rate() -> None:
    at, rate, after = sold_out_window([_answer(1.0, 201), _answer(1.5, 409, "booking.slot_full")], capacity=1)
    assert (at, rate, after) == (1.0, None, 1)


def test_count_verdicts_names_every_verdict() -> None:
    counts = count_verdicts([_answer(1, 201), _answer(2, 429), _answer(3, 503)])
    assert counts == {
        "booked": 1,
        "full": 0,
        "throttled": 1,
        "refused": 0,
        "server_error": 1,
        "transport": 0,
    }


# --------------------------------------------------------------------------------------------- counters


def _booking(n: int, person: str, slot: str, *, dept: str = "B000", state: str = "held") -> BookingRow:
    return BookingRow(f"b{n}", person, "STORM", dept, slot, DAY, state)


def test_live_states_match_the_bookings_table() -> None:
    assert frozenset(TABLE_LIVE_STATES) == LIVE_STATES


def test_a_clean_run_counts_nothing() -> None:
    slots = [SlotRow("STORM", "S-0", 1, 1), SlotRow("STORM", "S-1", 1, 0), SlotRow("STORM", "S-2", 5, 2)]
    bookings = [
        _booking(1, "p1", "S-0"),
        _booking(2, "p2", "S-2", dept="B001"),
        _booking(3, "p3", "S-2", dept="B001"),
        _booking(4, "p4", "S-1", state="expired"),
    ]
    assert correctness(slots, bookings) == {
        "oversold": 0,
        "oversold_slots": 0,
        "duplicate_bookings": 0,
        "duplicate_same_slot": 0,
        "taken_mismatch": 0,
        "live_bookings": 3,
    }


def test_oversold_from_taken_or_from_live_bookings() -> None:
    slots = [SlotRow("STORM", "S-0", 1, 2), SlotRow("STORM", "S-1", 1, 1)]
    bookings = [_booking(1, "p1", "S-0"), _booking(2, "p2", "S-0"), _booking(3, "p3", "S-1"), _booking(4, "p4", "S-1")]
    counters = correctness(slots, bookings)
    assert counters["oversold"] == 2  # one number too many on each slot
    assert counters["oversold_slots"] == 2
    assert counters["taken_mismatch"] == 1  # S-1: taken 1, two live bookings


def test_cancelled_bookings_do_not_oversell() -> None:
    slots = [SlotRow("STORM", "S-0", 1, 1)]
    bookings = [_booking(1, "p1", "S-0", state="cancelled"), _booking(2, "p2", "S-0")]
    assert correctness(slots, bookings)["oversold"] == 0


def test_duplicate_bookings_of_one_person() -> None:
    slots = [SlotRow("STORM", "S-0", 5, 2), SlotRow("STORM", "S-1", 5, 1)]
    bookings = [
        _booking(1, "p1", "S-0"),
        _booking(2, "p1", "S-0"),  # the same slot twice
        _booking(3, "p1", "S-1"),  # a third in the same department that day
        _booking(4, "p2", "S-1", dept="B009"),
        _booking(5, "p2", "S-0", state="expired"),
    ]
    counters = correctness(slots, bookings)
    assert counters["duplicate_bookings"] == 2
    assert counters["duplicate_same_slot"] == 1
    assert counters["oversold"] == 0


def test_other_departments_or_days_are_not_duplicates() -> None:
    bookings = [
        _booking(1, "p1", "S-0", dept="B000"),
        _booking(2, "p1", "S-1", dept="B001"),
        BookingRow("b3", "p1", "STORM", "B000", "S-9", date(2026, 12, 10), "held"),
    ]
    assert correctness([], bookings)["duplicate_bookings"] == 0


# --------------------------------------------------------------------------------------------- targets


def _figures(**changes: object) -> dict[str, object]:
    figures: dict[str, object] = {
        "oversold": 0,
        "duplicate_bookings": 0,
        "errors_5xx": 0,
        "booked": 500,
        "capacity": 500,
        "booking_tps_per_pgbench_tps": 0.45,
        "sold_out_rps_per_ping_rps": 0.6,
        "p99_ms": 800.0,
    }
    figures.update(changes)
    return figures


def test_targets_met() -> None:
    checks = targets(_figures())
    assert all(c["met"] is True for c in checks.values())
    assert hard_targets_met(checks)


def test_speed_targets_do_not_decide_the_exit_status() -> None:
    checks = targets(_figures(booking_tps_per_pgbench_tps=0.1, p99_ms=2500.0))
    assert checks["booking_tps >= 0.4 * pgbench_tps"]["met"] is False
    assert checks["p99_ms < 1000"]["met"] is False
    assert hard_targets_met(checks)


@pytest.mark.parametrize(
    "change", [{"oversold": 1}, {"duplicate_bookings": 2}, {"errors_5xx": 1}, {"booked": 499}, {"booked": None}]
)
def test_hard_targets(change: dict[str, object]) -> None:
    assert not hard_targets_met(targets(_figures(**change)))


def test_missing_ratios_are_unknown_not_met() -> None:
    checks = targets(_figures(booking_tps_per_pgbench_tps=None))
    assert checks["booking_tps >= 0.4 * pgbench_tps"]["met"] is None


# --------------------------------------------------------------------------------------------- the plan


def test_first_choices_cover_every_slot_and_are_reproducible() -> None:
    slots = [f"S-{i}" for i in range(50)]
    choices = first_choices(2000, slots, seed=5)
    assert choices == first_choices(2000, slots, seed=5)
    assert set(choices) == set(slots)


def test_session_sizes() -> None:
    assert session_sizes(500, 20) == [20] * 25
    assert session_sizes(45, 20) == [20, 20, 5]
    assert session_sizes(3, 20) == [3]
    with pytest.raises(ValueError):
        session_sizes(0, 20)


def test_resident_addresses_are_distinct_and_in_the_benchmark_range() -> None:
    assert resident_address(0) == "198.18.0.0"
    assert resident_address(258) == "198.18.1.2"
    assert resident_address(2**17 - 1) == "198.19.255.255"
    assert len({resident_address(i) for i in range(0, 2**17, 97)}) == len(range(0, 2**17, 97))
    with pytest.raises(ValueError):
        resident_address(2**17)


def test_citizen_ids_are_well_formed_and_distinct() -> None:
    ids = {citizen_id(i) for i in range(3000)}
    assert len(ids) == 3000
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    for number in list(ids)[:50]:
        assert len(number) == 18
        total = sum(int(d) * w for d, w in zip(number[:17], weights, strict=True))
        assert number[17] == "10X98765432"[total % 11]


def test_pgbench_script_is_one_transaction_of_the_two_writes() -> None:
    statements = [line for line in PGBENCH_SCRIPT.splitlines() if line and not line.startswith(("--", "\\", " "))]
    assert statements[0] == "BEGIN;"
    assert statements[-1] == "COMMIT;"
    assert any(s.startswith("UPDATE clinic_slots SET taken = taken + 1") for s in statements)
    assert "taken < capacity" in PGBENCH_SCRIPT
    assert any(s.startswith("INSERT INTO bench_bookings") for s in statements)


# --------------------------------------------------------------------------------------------- the HTTP client


def test_requests_and_answers_on_the_wire() -> None:
    raw = build_request("POST", "/p", "h", [("X-Forwarded-For", "198.18.0.1")], b'{"a":1}')
    assert raw == b'POST /p HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 198.18.0.1\r\nContent-Length: 7\r\n\r\n{"a":1}'
    assert build_request("GET", "/g", "h") == b"GET /g HTTP/1.1\r\nHost: h\r\n\r\n"
    status, headers = parse_head(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\ncontent-length: 0\r\n\r\n")
    assert status == 429
    assert headers == {"retry-after": "3", "content-length": "0"}
