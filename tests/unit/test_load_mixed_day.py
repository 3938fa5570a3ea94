"""The mixed day's pure parts (load/mixed_day.py): how an answer is judged, which slots a resident sees as free,
the prepay id of a payment answer, locust's stats and the scenario's counters. Nothing runs locust or the app."""

from __future__ import annotations

import inspect
from datetime import date, timedelta
from types import ModuleType

import pytest

import domain.booking.errors
import domain.payment.machine
import domain.payment.use_cases
from load.mixed_day import (
    ACTION_WEIGHTS,
    EXPECTED_REFUSALS,
    FreeSlot,
    Outcome,
    bucket_percentile,
    free_slots,
    judge,
    parse_locust_stats,
    prepay_id_of,
    problem_code,
    scenario_summary,
)

TODAY = date(2026, 12, 6)


def _codes(*modules: ModuleType) -> set[str]:
    """The ``code`` of every error class of the modules."""
    found: set[str] = set()
    for module in modules:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            code = getattr(cls, "code", None)
            if isinstance(code, str):
                found.add(code)
    return found


def test_weights_are_the_issues_mix() -> None:
    assert ACTION_WEIGHTS == {"browse": 70, "book": 15, "pay": 10, "cancel": 5}
    assert sum(ACTION_WEIGHTS.values()) == 100


def test_expected_refusals_are_real_codes() -> None:
    booking = _codes(domain.booking.errors)
    payment = _codes(domain.payment.machine, domain.payment.use_cases)
    assert EXPECTED_REFUSALS["book"] <= booking
    assert EXPECTED_REFUSALS["cancel"] <= booking
    assert EXPECTED_REFUSALS["pay"] <= payment


@pytest.mark.parametrize(
    ("action", "status", "code", "expected"),
    [
        ("browse", 200, None, Outcome.OK),
        ("book", 201, None, Outcome.OK),
        ("book", 409, "booking.slot_full", Outcome.REFUSED),
        ("book", 409, "booking.limit_department_day", Outcome.REFUSED),
        ("book", 429, "rate_limited", Outcome.REFUSED),
        ("browse", 429, None, Outcome.REFUSED),
        ("pay", 409, "payment.already_paid", Outcome.REFUSED),
        ("cancel", 409, "booking.cancel_too_late", Outcome.REFUSED),
        # a refusal is expected only of the action that meets it
        ("cancel", 409, "booking.slot_full", Outcome.FAILED),
        ("browse", 404, "catalogue.doctor_not_found", Outcome.FAILED),
        ("book", 422, None, Outcome.FAILED),
        ("book", 401, "auth.invalid_token", Outcome.FAILED),
        ("book", 500, None, Outcome.FAILED),
        ("book", 503, "booking.slot_full", Outcome.FAILED),
        ("pay", 0, None, Outcome.FAILED),
        ("browse", 302, None, Outcome.FAILED),
    ],
)
def test_judge(action: str, status: int, code: str | None, expected: Outcome) -> None:
    assert judge(action, status, code) is expected


def test_problem_code() -> None:
    assert problem_code({"code": "booking.slot_full", "detail": "x"}) == "booking.slot_full"
    assert problem_code({"detail": "x"}) is None
    assert problem_code([1, 2]) is None
    assert problem_code(None) is None


def _session(day: date, *, status: str = "open", slots: object = None, **extra: object) -> dict[str, object]:
    return {
        "sessionId": f"S-{day}",
        "hospitalCode": "H001",
        "departmentCode": "NEI",
        "day": day.isoformat(),
        "status": status,
        "slots": slots if slots is not None else [{"slotId": f"{day}-1", "remaining": 2}],
        **extra,
    }


def test_free_slots_keeps_open_sessions_after_today_within_the_horizon() -> None:
    answer = {
        "items": [
            _session(TODAY),  # same day: not bookable
            _session(TODAY + timedelta(days=1)),
            _session(TODAY + timedelta(days=7)),
            _session(TODAY + timedelta(days=8)),  # beyond the window
            _session(TODAY + timedelta(days=2), status="stopped"),
            _session(
                TODAY + timedelta(days=3),
                slots=[{"slotId": "full", "remaining": 0}, {"slotId": "free", "remaining": 1}, "junk", {"x": 1}],
            ),
        ]
    }
    assert free_slots(answer, today=TODAY) == [
        FreeSlot("H001", "NEI", f"{TODAY + timedelta(days=1)}-1", TODAY + timedelta(days=1)),
        FreeSlot("H001", "NEI", f"{TODAY + timedelta(days=7)}-1", TODAY + timedelta(days=7)),
        FreeSlot("H001", "NEI", "free", TODAY + timedelta(days=3)),
    ]
    assert free_slots(answer, today=TODAY, horizon_days=1) == [
        FreeSlot("H001", "NEI", f"{TODAY + timedelta(days=1)}-1", TODAY + timedelta(days=1))
    ]


@pytest.mark.parametrize(
    "answer",
    [None, [], {"items": None}, {"items": ["x", {"status": "open", "day": "not a date"}]}, {"code": "x"}],
)
def test_free_slots_skips_what_it_cannot_read(answer: object) -> None:
    assert free_slots(answer, today=TODAY) == []


def test_prepay_id_of_app_and_mini_program_answers() -> None:
    app = {"orderId": "o", "channel": "wechat", "clientParams": {"kind": "app", "params": {"prepayid": "wx123"}}}
    jsapi = {"clientParams": {"kind": "requestPayment", "params": {"package": "prepay_id=wx456", "paySign": "s"}}}
    assert prepay_id_of(app) == "wx123"
    assert prepay_id_of(jsapi) == "wx456"


@pytest.mark.parametrize(
    "answer",
    [
        None,
        {},
        {"clientParams": None},
        {"clientParams": {"kind": "tradePay", "params": {"tradeNO": "2026"}}},
        {"clientParams": {"params": {"package": "prepay_id="}}},
        {"clientParams": {"params": {"prepayid": ""}}},
    ],
)
def test_prepay_id_of_answers_without_one(answer: object) -> None:
    assert prepay_id_of(answer) is None


def test_bucket_percentile_follows_locust() -> None:
    # 100 requests: 90 at 10 ms, 9 at 100 ms, 1 at 1000 ms. Locust's rule (stats.calculate_response_time_percentile):
    # the first bucket, from the slowest, with at most int(n * q) requests below it; a boundary goes up.
    times = {10: 90, 100: 9, 1000: 1}
    assert bucket_percentile(times, 0.5) == 10.0
    assert bucket_percentile(times, 0.89) == 10.0
    assert bucket_percentile(times, 0.9) == 100.0
    assert bucket_percentile(times, 0.95) == 100.0
    assert bucket_percentile(times, 0.99) == 1000.0
    assert bucket_percentile(times, 1.0) == 1000.0
    assert bucket_percentile({}, 0.5) is None
    assert bucket_percentile({42: 1}, 0.99) == 42.0


def test_parse_locust_stats_per_endpoint_and_aggregated() -> None:
    entries = [
        {
            "name": "/api/v1/patient/catalogue/hospitals",
            "method": "GET",
            "num_requests": 10,
            "num_failures": 0,
            "start_time": 1000.0,
            "last_request_timestamp": 1010.0,
            "response_times": {"10": 9, "50": 1},
        },
        {
            "name": "/api/v1/patient/bookings [hold]",
            "method": "POST",
            "num_requests": 10,
            "num_failures": 1,
            "start_time": 1005.0,
            "last_request_timestamp": 1020.0,
            "response_times": {"100": 10},
        },
        "junk",
    ]
    stats = parse_locust_stats(entries)
    hospitals = stats["GET /api/v1/patient/catalogue/hospitals"]
    assert (hospitals.requests, hospitals.failures, hospitals.p50_ms, hospitals.p95_ms) == (10, 0, 10.0, 50.0)
    assert hospitals.rps == pytest.approx(1.0)
    total = stats["Aggregated"]
    assert (total.requests, total.failures, total.p50_ms, total.p99_ms) == (20, 1, 100.0, 100.0)
    assert stats["POST /api/v1/patient/bookings [hold]"].failures == 1
    assert total.rps == pytest.approx(1.0)  # 20 requests from 1000 to 1020
    assert parse_locust_stats([])["Aggregated"].requests == 0
    assert parse_locust_stats(None)["Aggregated"].rps == 0.0


def test_scenario_summary() -> None:
    counts = {
        "action:browse:ok": 70,
        "action:book:ok": 5,
        "action:book:refused": 3,
        "action:book:failed": 2,
        "action:pay:failed": 1,
        "refusal:book:booking.slot_full": 2,
        "refusal:book:429": 1,
        "status:browse:200": 70,
        "status:book:201": 5,
        "status:book:409": 2,
        "status:book:429": 1,
        "status:book:500": 1,
        "status:book:422": 1,
        "status:pay:0": 1,
        "event:booked": 5,
    }
    summary = scenario_summary(counts)
    assert summary["actions"]["book"] == {"failed": 2, "ok": 5, "refused": 3}
    assert summary["refusals"] == {"book": {"booking.slot_full": 2, "429": 1}}
    assert summary["events"] == {"booked": 5}
    assert (summary["errors_5xx"], summary["transport_errors"], summary["unexpected"]) == (1, 1, 1)
