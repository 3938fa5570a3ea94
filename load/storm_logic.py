"""The pure parts of the booking storm (``load/storm.py``): how a simulated resident behaves after each answer,
latency percentiles, the windows of the storm, and the correctness counters computed from the tables' rows.
Nothing here does I/O, so ``tests/unit/test_load_storm.py`` checks it without a server or a clock.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

LIVE_STATES = frozenset({"held", "paid", "confirmed", "checked_in"})
"""The states that hold a number (``persistence.booking.tables.LIVE_STATES``; the unit test pins them equal)."""
SLOT_FULL = "booking.slot_full"
GATE_DETAIL = "(gate)"
"""``BookingService.hold`` refuses at the Redis gate with ``SlotFullError("sold out (gate)")``: the problem's
``detail`` tells a gate refusal from PostgreSQL's."""


# --------------------------------------------------------------------------------------------- answers


class Verdict(StrEnum):
    BOOKED = "booked"
    """201: the booking is HELD."""
    FULL = "full"
    """409 ``booking.slot_full``: the gate or PostgreSQL says the slot has no number left."""
    THROTTLED = "throttled"
    """429 (with ``Retry-After``)."""
    REFUSED = "refused"
    """Any other 4xx: a limit of the person (``booking.limit_*``), a window, a ban, ..."""
    SERVER_ERROR = "server_error"
    """Any 5xx, 503 included."""
    TRANSPORT = "transport"
    """No HTTP answer: the connection failed or timed out."""


def classify(status: int | None, code: str | None) -> Verdict:
    if status is None:
        return Verdict.TRANSPORT
    if status == 201:
        return Verdict.BOOKED
    if status == 429:
        return Verdict.THROTTLED
    if status >= 500:
        return Verdict.SERVER_ERROR
    if status == 409 and code == SLOT_FULL:
        return Verdict.FULL
    return Verdict.REFUSED


def past_gate(status: int | None, code: str | None, detail: str | None) -> bool:
    """Whether the request went beyond the slot gate (and so, very likely, to PostgreSQL's hold transaction):
    everything but a 429 of the rate limits, a gate refusal and a transport failure."""
    if status is None or status == 429:
        return False
    return not (status == 409 and code == SLOT_FULL and detail is not None and GATE_DETAIL in detail)


def retry_after_seconds(header: str | None, *, default: float = 1.0) -> float:
    """``Retry-After`` as seconds (delta-seconds only; an HTTP date or garbage gives ``default``)."""
    if header is None:
        return default
    try:
        value = float(header.strip())
    except ValueError:
        return default
    return value if math.isfinite(value) and value >= 0 else default


# --------------------------------------------------------------------------------------------- the client


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """How a resident in the storm tries (the issue's spec): on "full", at most ``other_slots`` other slots of the
    same session; on 429, honour ``Retry-After`` at most ``throttle_retries`` times; anything else ends the try."""

    other_slots: int = 3
    throttle_retries: int = 3
    max_wait_seconds: float = 120.0
    """A ``Retry-After`` longer than this ends the try instead (the benchmark must stop by itself)."""


class Outcome(StrEnum):
    BOOKED = "booked"
    SOLD_OUT = "sold_out"
    """Every slot tried was full."""
    THROTTLED = "throttled"
    """Still 429 after the retries allowed."""
    REFUSED = "refused"
    ERROR = "error"
    """A 5xx or a transport failure."""


@dataclass(frozen=True, slots=True)
class Try:
    slot_id: str
    new_key: bool
    """A new slot is a new request (a new ``Idempotency-Key``); a retry after 429 sends the same key again."""


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


@dataclass(frozen=True, slots=True)
class Done:
    outcome: Outcome


Step = Try | Wait | Done


@dataclass
class ResidentTry:
    """One resident's progress: the slots tried so far (the current one last) and the 429s met on it."""

    session_slots: Sequence[str]
    """Every slot of the session the resident wants, the first choice included."""
    tried: list[str] = field(default_factory=list)
    throttled: int = 0
    answers: int = 0

    @property
    def current(self) -> str:
        return self.tried[-1]

    def start(self, first: str) -> Try:
        self.tried = [first]
        return Try(first, new_key=True)


def next_step(
    policy: ClientPolicy, state: ResidentTry, verdict: Verdict, retry_after: float | None, rng: random.Random
) -> Step:
    """What the resident does after the answer ``verdict`` to its request for ``state.current``; updates
    ``state``. After ``Wait`` the caller sends the same request again (the returned step is followed by the
    ``Try`` of :func:`after_wait`)."""
    state.answers += 1
    if verdict is Verdict.BOOKED:
        return Done(Outcome.BOOKED)
    if verdict is Verdict.THROTTLED:
        wait = retry_after if retry_after is not None else 1.0
        if state.throttled >= policy.throttle_retries or wait > policy.max_wait_seconds:
            return Done(Outcome.THROTTLED)
        state.throttled += 1
        return Wait(wait)
    if verdict is Verdict.FULL:
        untried = [s for s in state.session_slots if s not in state.tried]
        if len(state.tried) - 1 >= policy.other_slots or not untried:
            return Done(Outcome.SOLD_OUT)
        choice = rng.choice(untried)
        state.tried.append(choice)
        return Try(choice, new_key=True)
    if verdict is Verdict.REFUSED:
        return Done(Outcome.REFUSED)
    return Done(Outcome.ERROR)


def after_wait(state: ResidentTry) -> Try:
    """The request sent again after honouring ``Retry-After``: same slot, same ``Idempotency-Key``."""
    return Try(state.current, new_key=False)


# --------------------------------------------------------------------------------------------- latencies


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks (numpy's default);
    None for no values."""
    if not 0 <= q <= 100:
        raise ValueError("q must lie in [0, 100]")
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(ordered[low])
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50/p95/p99/max in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else None,
    }


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer of the storm, as the client saw it; times in seconds from the release."""

    started: float
    finished: float
    status: int | None
    code: str | None = None
    detail: str | None = None

    @property
    def latency(self) -> float:
        return self.finished - self.started

    @property
    def verdict(self) -> Verdict:
        return classify(self.status, self.code)


def sold_out_window(answers: Sequence[Answer], capacity: int) -> tuple[float | None, float | None, int]:
    """(time to sold out, sold-out answers per second after it, how many): the sold-out instant is the moment the
    answer of the ``capacity``-th booking arrived; the rate counts the "full" answers that finished after it,
    over the time from that instant to the last answer. (None, None, 0) when the slots never sold out; the rate
    is None when less than a second of answers followed."""
    booked = sorted(a.finished for a in answers if a.verdict is Verdict.BOOKED)
    if capacity <= 0 or len(booked) < capacity:
        return None, None, 0
    sold_out_at = booked[capacity - 1]
    after = [a for a in answers if a.verdict is Verdict.FULL and a.finished > sold_out_at]
    last = max((a.finished for a in answers), default=sold_out_at)
    span = last - sold_out_at
    rate = len(after) / span if span >= 1.0 else None
    return sold_out_at, rate, len(after)


# --------------------------------------------------------------------------------------------- counters


@dataclass(frozen=True, slots=True)
class SlotRow:
    hospital_code: str
    slot_id: str
    capacity: int
    taken: int


@dataclass(frozen=True, slots=True)
class BookingRow:
    booking_id: str
    person_id: str
    hospital_code: str
    department_code: str
    slot_id: str
    visit_day: date
    state: str


def correctness(
    slots: Iterable[SlotRow], bookings: Iterable[BookingRow], *, live_states: frozenset[str] = LIVE_STATES
) -> dict[str, int]:
    """The correctness counters, from the rows of ``clinic_slots`` and ``bookings`` after the run.

    * ``oversold``: numbers handed out beyond capacity, summed over the slots: per slot ``max(taken, live
      bookings) - capacity`` when positive (``oversold_slots``: how many slots).
    * ``duplicate_bookings``: live bookings beyond the first of one person in one department of one hospital on
      one visit day (APT-005's first limit, which the unique index ``ux_bookings_live_person_department_day``
      backs), which includes two live bookings of one person on one slot (``duplicate_same_slot``).
    * ``taken_mismatch``: slots whose ``taken`` differs from their live bookings (a number lost or leaked; not
      an oversell by itself).
    * ``live_bookings``: all live bookings seen.
    """
    live = [b for b in bookings if b.state in live_states]
    per_slot = Counter((b.hospital_code, b.slot_id) for b in live)
    oversold = oversold_slots = mismatch = 0
    for slot in slots:
        held = per_slot.get((slot.hospital_code, slot.slot_id), 0)
        excess = max(slot.taken, held) - slot.capacity
        if excess > 0:
            oversold += excess
            oversold_slots += 1
        if slot.taken != held:
            mismatch += 1
    per_person_day = Counter((b.person_id, b.hospital_code, b.department_code, b.visit_day) for b in live)
    per_person_slot = Counter((b.person_id, b.hospital_code, b.slot_id) for b in live)
    return {
        "oversold": oversold,
        "oversold_slots": oversold_slots,
        "duplicate_bookings": sum(n - 1 for n in per_person_day.values() if n > 1),
        "duplicate_same_slot": sum(n - 1 for n in per_person_slot.values() if n > 1),
        "taken_mismatch": mismatch,
        "live_bookings": len(live),
    }


def count_verdicts(answers: Iterable[Answer]) -> dict[str, int]:
    counts = Counter(a.verdict.value for a in answers)
    return {v.value: counts.get(v.value, 0) for v in Verdict}


def refusal_codes(answers: Iterable[Answer]) -> dict[str, int]:
    """How often each problem code answered a request that was neither booked nor full (limits, 429, 5xx...)."""
    counts = Counter(f"{a.status}:{a.code or '-'}" for a in answers if a.verdict not in (Verdict.BOOKED, Verdict.FULL))
    return dict(sorted(counts.items()))


def targets(figures: Mapping[str, object]) -> dict[str, dict[str, object]]:
    """The issue's targets against the figures: hard ones (correctness) and speed ones (ratios, p99)."""

    def num(key: str) -> float | None:
        value = figures.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def at_least(value: float | None, bound: float) -> bool | None:
        return None if value is None else value >= bound

    booked, capacity = num("booked"), num("capacity")
    p99 = num("p99_ms")
    return {
        "oversold == 0": {"value": figures.get("oversold"), "met": figures.get("oversold") == 0, "kind": "hard"},
        "duplicate_bookings == 0": {
            "value": figures.get("duplicate_bookings"),
            "met": figures.get("duplicate_bookings") == 0,
            "kind": "hard",
        },
        "errors_5xx == 0": {"value": figures.get("errors_5xx"), "met": figures.get("errors_5xx") == 0, "kind": "hard"},
        "booked == capacity": {
            "value": [figures.get("booked"), figures.get("capacity")],
            "met": booked is not None and booked == capacity,
            "kind": "hard",
        },
        "booking_tps >= 0.4 * pgbench_tps": {
            "value": figures.get("booking_tps_per_pgbench_tps"),
            "met": at_least(num("booking_tps_per_pgbench_tps"), 0.4),
            "kind": "speed",
        },
        "sold_out_rps >= 0.5 * ping_rps": {
            "value": figures.get("sold_out_rps_per_ping_rps"),
            "met": at_least(num("sold_out_rps_per_ping_rps"), 0.5),
            "kind": "speed",
        },
        "p99_ms < 1000": {"value": p99, "met": None if p99 is None else p99 < 1000, "kind": "speed"},
    }


def hard_targets_met(checks: Mapping[str, Mapping[str, object]]) -> bool:
    return all(c.get("met") is True for c in checks.values() if c.get("kind") == "hard")


# --------------------------------------------------------------------------------------------- the plan


def first_choices(residents: int, slots: Sequence[str], seed: int) -> list[str]:
    """Each resident's first slot, uniformly at random from a fixed seed (every slot gets about
    ``residents / len(slots)`` first tries, so none stays untried when residents outnumber slots)."""
    rng = random.Random(seed)
    return [rng.choice(slots) for _ in range(residents)]


def session_sizes(slots: int, per_session: int) -> list[int]:
    """Split ``slots`` into sessions of ``per_session`` slots (the last one smaller)."""
    if slots < 1 or per_session < 1:
        raise ValueError("slots and per_session must be positive")
    full, rest = divmod(slots, per_session)
    return [per_session] * full + ([rest] if rest else [])


def resident_address(index: int) -> str:
    """A distinct client address per resident, for ``X-Forwarded-For``: 198.18.0.0/15, the range RFC 2544 sets
    aside for benchmarks (131,072 addresses). Never contacted: it only travels in a header to loopback."""
    if not 0 <= index < 2**17:
        raise ValueError("at most 131072 distinct addresses")
    value = (198 << 24) | (18 << 16) | index
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))
