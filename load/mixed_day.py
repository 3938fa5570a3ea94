"""A realistic mixed day of residents (browse, book, pay, cancel) on the real ``bff serve``, driven by locust.

Seeds verified residents with live sessions and tokens (``load/storm.py``'s seeding, imported), starts one
``bff serve`` with ``HSP_ENV=test`` and the sandboxes mounted (the HIS simulator's three hospitals are registered
and synced by the app itself, so browsing sees real-looking departments, doctors and sessions, confirmations
reach a HIS, and payments are completed through ``/sandbox/wechatpay/test/pay``), ``--workers`` ``bff worker``
processes and one ``bff beat``; then runs ``load/locustfile.py`` headless for ``--duration`` seconds with
``--users`` residents, each with its own token and ``X-Forwarded-For`` address, and prints a summary (``--json``:
one JSON object). Everything it started is stopped and its database dropped at the end.

    python -m load.mixed_day --json
    python -m load.mixed_day --users 20 --duration 30

Exit status 1 when a request failed (a 5xx, a transport failure or an unexpected answer), a number was oversold
or a person holds two live bookings in one department on one day.

The pure parts (how an answer is judged, which slots a resident sees as free, the prepay id of a payment answer,
locust's CSV, the counters) come first in this module; ``load/locustfile.py`` imports them and
``tests/unit/test_load_mixed_day.py`` checks them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from domain.kernel.clock import SHANGHAI
from load.common import (
    BenchDatabase,
    create_benchmark_database,
    drop_benchmark_database,
    emit_json,
    machine,
    postgres_version,
)
from load.storm import (
    BFF,
    ROOT,
    CpuLap,
    Fleet,
    Keys,
    Resident,
    app_env,
    app_log_summary,
    check_seed,
    cleanup_redis,
    free_port,
    seed_residents,
    wait_ready,
)
from load.storm_logic import BookingRow, SlotRow, correctness
from persistence.booking.tables import bookings
from persistence.catalogue.tables import clinic_slots
from persistence.db import DatabaseConfig, create_engine
from persistence.payment.tables import payment_attempts, payment_orders, payment_refunds

# --------------------------------------------------------------------------------------------- the scenario (pure)

ACTION_WEIGHTS: dict[str, int] = {"browse": 70, "book": 15, "pay": 10, "cancel": 5}
"""How often a resident does each thing, in tasks (a browse is several requests)."""
THINK_SECONDS = (1.0, 5.0)
"""Seconds a resident spends on a screen between two actions (locust's ``between``)."""
BOOKING_HORIZON_DAYS = 7
"""Slots a resident tries to book: after today and within the default booking window (APT-004). Days beyond
show in the catalogue (it lists 14 days) but the app would show them as not yet released."""
PAY_APP_ID = "wx0000000000demo1"
"""The sandbox's demo mini-program, sent as ``appId``; a patient-app session (what the seeding mints) pays with
an APP prepay, for which the server ignores it."""
PAY_CHECKS = 5
"""After paying, the booking is read up to this many times, a second apart, until it is no longer HELD."""
SEARCH_KEYWORDS = ("高血压", "糖尿病", "咳嗽", "头痛", "腹痛", "骨折", "儿童", "皮肤", "失眠", "王", "李")
LIVE_STATES = ("held", "paid", "confirmed")
"""The states a resident may still cancel (the server decides; ``checked_in`` is not reached in a run)."""


class Outcome(StrEnum):
    OK = "ok"
    """2xx."""
    REFUSED = "refused"
    """An expected refusal: a full slot, a limit, a window, a 429; a success of the scenario."""
    FAILED = "failed"
    """A 5xx, no answer (status 0) or an answer the scenario does not expect (a bug of the app or of the
    scenario)."""


RATE_LIMITED = 429
EXPECTED_REFUSALS: dict[str, frozenset[str]] = {
    "book": frozenset(
        {
            "booking.slot_full",
            "booking.session_not_open",
            "booking.window",
            "booking.not_open_yet",
            "booking.same_day_not_allowed",
            "booking.slot_past",
            "booking.closed_hours",
            "booking.limit",
            "booking.limit_department_day",
            "booking.limit_day",
            "booking.limit_short_window",
            "booking.limit_long_window",
            "booking.banned",
        }
    ),
    "pay": frozenset(
        {
            "payment.already_paid",
            "payment.expired",
            "payment.closed",
            "payment.illegal_transition",
        }
    ),
    "cancel": frozenset({"booking.cancel_too_late", "booking.illegal_transition"}),
}
"""Per action, the problem codes a resident meets in a normal day. Browsing and reading expect none."""


def judge(action: str, status: int, code: str | None) -> Outcome:
    """How the scenario counts one answer: 5xx and no answer fail, 2xx succeed, 429 and the action's expected
    refusal codes are refusals (successes of the scenario), anything else fails."""
    if status <= 0 or status >= 500:
        return Outcome.FAILED
    if 200 <= status < 300:
        return Outcome.OK
    if status == RATE_LIMITED:
        return Outcome.REFUSED
    if 400 <= status < 500 and code is not None and code in EXPECTED_REFUSALS.get(action, frozenset()):
        return Outcome.REFUSED
    return Outcome.FAILED


def problem_code(body: object) -> str | None:
    """The ``code`` of a problem answer (``{"code": ..., "detail": ...}``), if any."""
    if isinstance(body, Mapping):
        code = body.get("code")
        return str(code) if code is not None else None
    return None


@dataclass(frozen=True, slots=True)
class FreeSlot:
    hospital_code: str
    department_code: str
    slot_id: str
    day: date


def free_slots(sessions: object, *, today: date, horizon_days: int = BOOKING_HORIZON_DAYS) -> list[FreeSlot]:
    """The slots a resident would tap on in a sessions answer (``{"items": [session, ...]}``): open sessions
    after today and within the horizon, slots with numbers left. Anything malformed is skipped."""
    items = sessions.get("items") if isinstance(sessions, Mapping) else None
    found: list[FreeSlot] = []
    if not isinstance(items, list):
        return found
    for session in items:
        if not isinstance(session, Mapping) or session.get("status") != "open":
            continue
        try:
            day = date.fromisoformat(str(session.get("day")))
        except ValueError:
            continue
        if not 0 < (day - today).days <= horizon_days:
            continue
        hospital, department = session.get("hospitalCode"), session.get("departmentCode")
        slots = session.get("slots")
        if not isinstance(hospital, str) or not isinstance(department, str) or not isinstance(slots, list):
            continue
        for slot in slots:
            if not isinstance(slot, Mapping):
                continue
            slot_id, remaining = slot.get("slotId"), slot.get("remaining")
            if isinstance(slot_id, str) and isinstance(remaining, int) and remaining > 0:
                found.append(FreeSlot(hospital, department, slot_id, day))
    return found


def prepay_id_of(answer: object) -> str | None:
    """The WeChat Pay prepay id in a ``pay`` answer: ``clientParams.params.prepayid`` (APP pay) or the
    ``package`` ``prepay_id=...`` (``wx.requestPayment``)."""
    if not isinstance(answer, Mapping):
        return None
    client = answer.get("clientParams")
    params = client.get("params") if isinstance(client, Mapping) else None
    if not isinstance(params, Mapping):
        return None
    direct = params.get("prepayid")
    if isinstance(direct, str) and direct:
        return direct
    package = params.get("package")
    if isinstance(package, str) and package.startswith("prepay_id=") and len(package) > len("prepay_id="):
        return package.removeprefix("prepay_id=")
    return None


@dataclass(frozen=True, slots=True)
class EndpointStats:
    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    rps: float


def bucket_percentile(response_times: Mapping[int, int], q: float) -> float | None:
    """The ``q`` (0..1) percentile of locust's response-time buckets (rounded ms -> count), by locust's own rule
    (``stats.calculate_response_time_percentile``): walking down from the slowest bucket, the first one below
    which at most ``int(total * q)`` requests remain. None when there are none."""
    total = sum(response_times.values())
    if total == 0:
        return None
    wanted = int(total * q)
    above = 0
    for ms in sorted(response_times, reverse=True):
        above += response_times[ms]
        if total - above <= wanted:
            return float(ms)
    return float(min(response_times))


def _endpoint(times: Mapping[int, int], requests: int, failures: int, seconds: float) -> EndpointStats:
    return EndpointStats(
        requests=requests,
        failures=failures,
        p50_ms=bucket_percentile(times, 0.50),
        p95_ms=bucket_percentile(times, 0.95),
        p99_ms=bucket_percentile(times, 0.99),
        rps=requests / seconds if seconds > 0 else 0.0,
    )


def parse_locust_stats(entries: object) -> dict[str, EndpointStats]:
    """Locust's ``--json-file`` (a list of stats entries, written after the last user stopped): per
    ``"METHOD name"`` and for all of them (``"Aggregated"``), requests, failures, p50/p95/p99 in ms and requests
    per second between the entry's first request and its last."""
    out: dict[str, EndpointStats] = {}
    merged: Counter[int] = Counter()
    requests = failures = 0
    first: float | None = None
    last: float | None = None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        times = Counter({int(float(k)): int(v) for k, v in dict(entry.get("response_times") or {}).items()})
        n, failed = int(entry.get("num_requests") or 0), int(entry.get("num_failures") or 0)
        start, end = float(entry.get("start_time") or 0.0), float(entry.get("last_request_timestamp") or 0.0)
        out[f"{entry.get('method') or ''} {entry.get('name') or ''}".strip()] = _endpoint(times, n, failed, end - start)
        merged.update(times)
        requests, failures = requests + n, failures + failed
        first = start if first is None else min(first, start)
        last = end if last is None else max(last, end)
    out["Aggregated"] = _endpoint(merged, requests, failures, (last or 0.0) - (first or 0.0))
    return out


def scenario_summary(counts: Mapping[str, int]) -> dict[str, Any]:
    """The locustfile's counters (``"action:outcome"``, ``"refusal:action:code"``, ``"status:action:NNN"``,
    ``"event:name"``) arranged per action, with the 5xx and unexpected answers totalled."""
    actions: dict[str, dict[str, int]] = {}
    refusals: dict[str, dict[str, int]] = {}
    statuses: Counter[str] = Counter()
    events: dict[str, int] = {}
    for key, n in counts.items():
        kind, _, rest = key.partition(":")
        if kind == "action":
            action, _, outcome = rest.partition(":")
            actions.setdefault(action, {})[outcome] = actions.get(action, {}).get(outcome, 0) + n
        elif kind == "refusal":
            action, _, code = rest.partition(":")
            refusals.setdefault(action, {})[code] = refusals.get(action, {}).get(code, 0) + n
        elif kind == "status":
            statuses[rest] += n
        elif kind == "event":
            events[rest] = events.get(rest, 0) + n
    errors_5xx = sum(n for key, n in statuses.items() if key.rpartition(":")[2].startswith("5"))
    transport = sum(n for key, n in statuses.items() if key.rpartition(":")[2] == "0")
    failed = sum(by.get(Outcome.FAILED.value, 0) for by in actions.values())
    return {
        "actions": {k: dict(sorted(v.items())) for k, v in sorted(actions.items())},
        "refusals": {k: dict(sorted(v.items(), key=lambda kv: -kv[1])) for k, v in sorted(refusals.items())},
        "statuses": dict(sorted(statuses.items())),
        "events": dict(sorted(events.items())),
        "errors_5xx": errors_5xx,
        "transport_errors": transport,
        "unexpected": failed - errors_5xx - transport,
    }


def state_counts(states: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(states).items()))


# --------------------------------------------------------------------------------------------- the run (I/O)

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
SYNC_EVENT = "sandbox_hospitals_synced"
"""Logged by ``bootstrap.demo_seed.start_initial_sync`` once every sandbox hospital's catalogue is synced."""
ENV_RESIDENTS = "MIXED_DAY_RESIDENTS"
ENV_COUNTS = "MIXED_DAY_COUNTS"
ENV_SEED = "MIXED_DAY_SEED"
SEED = 20261206


@dataclass
class Options:
    users: int
    spawn_rate: float
    duration: int
    workers: int
    settle: float
    log_level: str
    keep_db: bool
    keep_logs: str | None
    json: bool
    seed: int = SEED
    app_settings: dict[str, str] = field(default_factory=dict)


def start_app(env: Mapping[str, str], workers: int, log_dir: Path) -> Fleet:
    """One ``bff serve`` (the simulators keep their state in its memory: a second process would not know the
    first one's prepays or HIS locks), ``workers`` ``bff worker`` and a ``bff beat`` that reach the sandboxes
    through the app's public address."""
    port, admin_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    fleet = Fleet([], [port], [admin_port], [], log_dir)
    try:
        app_env_ = {
            **env,
            "HSP_HTTP__BIND": f"127.0.0.1:{port}",
            "HSP_HTTP__ADMIN_BIND": f"127.0.0.1:{admin_port}",
            "HSP_HTTP__PUBLIC_BASE_URL": base,
        }
        with open(log_dir / "app-0.log", "wb") as log:
            fleet.apps.append(
                subprocess.Popen([BFF, "serve"], cwd=ROOT, env=app_env_, stdout=log, stderr=subprocess.STDOUT)
            )
        others = {**env, "HSP_HTTP__PUBLIC_BASE_URL": base}
        commands = [[BFF, "worker", "--pool", "solo", "--concurrency", "1"]] * workers
        commands += [[BFF, "beat"]] if workers else []
        for n, argv in enumerate(commands):
            name = "beat" if argv[1] == "beat" else f"worker-{n}"
            with open(log_dir / f"{name}.log", "wb") as log:
                fleet.workers.append(subprocess.Popen(argv, cwd=ROOT, env=others, stdout=log, stderr=subprocess.STDOUT))
    except BaseException:
        fleet.stop()
        raise
    return fleet


def wait_synced(fleet: Fleet, limit_seconds: float = 180.0) -> float:
    """Block until app process 0 has logged that the sandbox hospitals are synced; the seconds it took."""
    started = time.monotonic()
    log = fleet.log_dir / "app-0.log"
    while time.monotonic() - started < limit_seconds:
        fleet.check_alive()
        if log.exists() and SYNC_EVENT in log.read_text(encoding="utf-8", errors="replace"):
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"the sandbox hospitals were not synced after {limit_seconds:.0f} s (logs in {fleet.log_dir})")


def write_residents(path: Path, residents: Sequence[Resident]) -> None:
    rows = [{"token": r.token, "patientId": r.patient_id, "address": r.address} for r in residents]
    path.write_text(json.dumps(rows), encoding="utf-8")
    path.chmod(0o600)


def run_locust(opts: Options, host: str, work: Path, residents_file: Path) -> dict[str, Any]:
    stats_base = work / "locust-stats"  # locust adds ".json"
    counts_file = work / "counts.json"
    env = {
        **os.environ,
        ENV_RESIDENTS: str(residents_file),
        ENV_COUNTS: str(counts_file),
        ENV_SEED: str(opts.seed),
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    command += ["-u", str(opts.users), "-r", str(opts.spawn_rate), "-t", f"{opts.duration}s", "--host", host]
    command += ["--json-file", str(stats_base), "--stop-timeout", "10", "--loglevel", "WARNING"]
    command += ["--exit-code-on-error", "0"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(work / "logs" / "locust.log", "wb") as log:
        done = subprocess.run(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False, timeout=opts.duration + 180
        )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats_file = Path(f"{stats_base}.json")
    if done.returncode != 0 or not stats_file.exists():
        tail = (work / "logs" / "locust.log").read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"locust exited {done.returncode}: {tail}")
    counts = json.loads(counts_file.read_text(encoding="utf-8")) if counts_file.exists() else {}
    return {
        "stats": parse_locust_stats(json.loads(stats_file.read_text(encoding="utf-8"))),
        "counts": counts,
        "seconds": elapsed,
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    }


@dataclass
class Rows:
    slots: list[SlotRow]
    bookings: list[BookingRow]
    orders: dict[str, int]
    attempts: dict[str, int]
    refunds: dict[str, int]
    orders_paid_twice: int


async def read_rows(owner_url: str) -> Rows:
    engine = create_engine(DatabaseConfig(url=owner_url, pool_size=1, max_overflow=0))
    try:
        async with engine.connect() as conn:
            s = clinic_slots.c
            slot_rows = [
                SlotRow(r.hospital_code, r.id, int(r.capacity), int(r.taken))
                for r in await conn.execute(sa.select(s.hospital_code, s.id, s.capacity, s.taken))
            ]
            b = bookings.c
            booking_rows = [
                BookingRow(r.id, r.person_id, r.hospital_code, r.department_code, r.slot_id, r.visit_day, r.state)
                for r in await conn.execute(
                    sa.select(b.id, b.person_id, b.hospital_code, b.department_code, b.slot_id, b.visit_day, b.state)
                )
            ]
            orders = state_counts(str(v) for v in await conn.scalars(sa.select(payment_orders.c.state)))
            attempts = state_counts(str(v) for v in await conn.scalars(sa.select(payment_attempts.c.state)))
            refunds = state_counts(str(v) for v in await conn.scalars(sa.select(payment_refunds.c.state)))
            a = payment_attempts.c
            paid_per_order = (
                sa.select(a.order_id).where(a.state == "paid").group_by(a.order_id).having(sa.func.count() > 1)
            )
            twice = int(await conn.scalar(sa.select(sa.func.count()).select_from(paid_per_order.subquery())) or 0)
        return Rows(slot_rows, booking_rows, orders, attempts, refunds, twice)
    finally:
        await engine.dispose()


def run(opts: Options) -> dict[str, Any]:
    before = machine()
    timings: dict[str, float] = {}
    tag = f"mixed-{os.getpid()}-{secrets.token_hex(3)}"
    name = f"hsp_load_mixed_{os.getpid()}"
    keys = Keys.generate()
    suite = keys.suite()
    work = Path(tempfile.mkdtemp(prefix="hsp-mixed-"))
    data_dir = work / "data"
    log_dir = work / "logs"
    data_dir.mkdir()
    log_dir.mkdir()
    total = time.perf_counter()
    fleet: Fleet | None = None
    db: BenchDatabase | None = None
    try:
        t = time.perf_counter()
        db = create_benchmark_database(name)
        timings["create_db"] = time.perf_counter() - t

        async def _seed(url: str) -> list[Resident]:
            engine = create_engine(DatabaseConfig(url=url, pool_size=2, max_overflow=0))
            try:
                residents = await seed_residents(engine, suite, keys.tokens(), opts.users, datetime.now(UTC))
                await check_seed(engine, suite, residents[0])
                return residents
            finally:
                await engine.dispose()

        t = time.perf_counter()
        residents = asyncio.run(_seed(db.owner_url))
        residents_file = work / "residents.json"
        write_residents(residents_file, residents)
        timings["seed"] = time.perf_counter() - t

        env = app_env(db, keys, tag, data_dir, opts.log_level)
        # The simulators need the shared offset clock (read from PostgreSQL by every request and task).
        env |= {"HSP_SANDBOX__MOUNT": "true", "HSP_CLOCK__MODE": "offset"} | opts.app_settings
        t = time.perf_counter()
        fleet = start_app(env, opts.workers, log_dir)
        asyncio.run(wait_ready(fleet))
        timings["app_start"] = time.perf_counter() - t
        timings["sandbox_sync"] = wait_synced(fleet)

        with CpuLap(fleet) as lap:
            driven = run_locust(opts, f"http://127.0.0.1:{fleet.ports[0]}", work, residents_file)
            fleet.check_alive()
        cpu = dict(lap.used)
        cpu["loadgen"] = driven["cpu_s"]  # locust is a child process: its own CPU, not this process's
        if cpu.get("others") is not None and lap.used.get("loadgen") is not None:
            cpu["others"] = float(cpu["others"] or 0) + float(lap.used["loadgen"] or 0) - driven["cpu_s"]
        timings["locust"] = driven["seconds"]
        time.sleep(opts.settle)  # the worker finishes the last payments' confirmations and refunds
        timings["settle"] = opts.settle

        t = time.perf_counter()
        fleet.stop()
        rows = asyncio.run(read_rows(db.owner_url))
        timings["count"] = time.perf_counter() - t
    finally:
        if fleet is not None:
            fleet.stop()
        log_summary = app_log_summary(log_dir)
        if opts.keep_logs:
            shutil.copytree(log_dir, opts.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        redis_deleted = cleanup_redis(tag)
        if db is not None and not opts.keep_db:
            drop_benchmark_database(name)
    timings["total"] = time.perf_counter() - total
    return assemble(
        opts, driven, rows, cpu, timings, log_summary, redis_deleted, before, name if opts.keep_db else None
    )


def assemble(
    opts: Options,
    driven: Mapping[str, Any],
    rows: Rows,
    cpu: Mapping[str, float | None],
    timings: Mapping[str, float],
    log_summary: Mapping[str, object],
    redis_deleted: int,
    machine_before: Mapping[str, object],
    database: str | None,
) -> dict[str, Any]:
    stats: dict[str, EndpointStats] = driven["stats"]
    total = stats.get("Aggregated", EndpointStats(0, 0, None, None, None, 0.0))
    scenario = scenario_summary(driven["counts"])
    counters = correctness(rows.slots, rows.bookings)
    requests = total.requests
    figures: dict[str, Any] = {
        "benchmark": "mixed_day",
        "date": datetime.now(UTC).astimezone(SHANGHAI).date().isoformat(),
        "users": opts.users,
        "duration_s": opts.duration,
        "requests": requests,
        "rps": total.rps,
        "failures": total.failures,
        "errors_5xx": scenario["errors_5xx"],
        "unexpected": scenario["unexpected"],
        "transport_errors": scenario["transport_errors"],
        "p50_ms": total.p50_ms,
        "p95_ms": total.p95_ms,
        "p99_ms": total.p99_ms,
        "booked": scenario["events"].get("booked", 0),
        "paid": scenario["events"].get("paid_seen", 0),
        "cancelled": scenario["events"].get("cancelled", 0),
        "refused": sum(n for by in scenario["refusals"].values() for n in by.values()),
        "oversold": counters["oversold"],
        "duplicate_bookings": counters["duplicate_bookings"],
        "taken_mismatch": counters["taken_mismatch"],
        "orders_paid_twice": rows.orders_paid_twice,
        "bookings": state_counts(b.state for b in rows.bookings),
        "orders": rows.orders,
        "attempts": rows.attempts,
        "refunds": rows.refunds,
    }
    figures["ok"] = (
        total.failures == 0
        and figures["errors_5xx"] == 0
        and figures["oversold"] == 0
        and figures["duplicate_bookings"] == 0
        and figures["orders_paid_twice"] == 0
    )
    figures["scenario"] = scenario
    figures["endpoints"] = {
        k: {"requests": v.requests, "failures": v.failures, "p50_ms": v.p50_ms, "p95_ms": v.p95_ms, "rps": v.rps}
        for k, v in sorted(stats.items())
        if k != "Aggregated"
    }
    figures["correctness"] = counters
    figures["options"] = {
        "users": opts.users,
        "spawn_rate": opts.spawn_rate,
        "duration": opts.duration,
        "workers": opts.workers,
        "settle": opts.settle,
        "log_level": opts.log_level,
        "seed": opts.seed,
        "app_settings": opts.app_settings,
        "weights": ACTION_WEIGHTS,
        "think_seconds": THINK_SECONDS,
    }
    figures["app"] = {
        "env": "HSP_ENV=test, HSP_SANDBOX__MOUNT=true, HSP_CLOCK__MODE=offset, 1 bff serve, default pools and limits",
        "workers": f"{opts.workers} x bff worker --pool solo, 1 bff beat" if opts.workers else None,
        "log": log_summary,
    }
    figures["cpu_s"] = dict(cpu)
    figures["cpu_ms_per_request"] = {
        k: 1000 * v / requests
        for k, v in cpu.items()
        if v is not None and requests and k not in ("wall", "machine_busy")
    }
    figures["timings_s"] = dict(timings)
    figures["cleanup"] = {"redis_keys_deleted": redis_deleted, "database_kept": database}
    figures["machine"] = {**machine_before, "load_1m_after": machine()["load_1m"], "postgres": postgres_version()}
    return figures


def summary(f: Mapping[str, Any]) -> str:
    def num(value: object, fmt: str = ".1f") -> str:
        return format(value, fmt) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)

    s = f["scenario"]
    lines = [
        f"mixed_day  {f['date']}  users={f['users']} duration={f['duration_s']} s",
        f"  {f['requests']} requests, {num(f['rps'])} rps, p50/p95/p99 {num(f['p50_ms'], '.0f')}/"
        f"{num(f['p95_ms'], '.0f')}/{num(f['p99_ms'], '.0f')} ms; failures {f['failures']} "
        f"(5xx {f['errors_5xx']}, unexpected {f['unexpected']}, transport {f['transport_errors']})",
        f"  actions {json.dumps(s['actions'], ensure_ascii=False)}",
        f"  booked {f['booked']}, paid {f['paid']}, cancelled {f['cancelled']}, refusals "
        f"{json.dumps(s['refusals'], ensure_ascii=False)}",
        f"  bookings {json.dumps(f['bookings'])}, orders {json.dumps(f['orders'])}, refunds {json.dumps(f['refunds'])}",
        f"  oversold {f['oversold']}, duplicates {f['duplicate_bookings']}, taken_mismatch {f['taken_mismatch']}, "
        f"paid twice {f['orders_paid_twice']} -> {'ok' if f['ok'] else 'NOT OK'}",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m load.mixed_day", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=40, help="residents (locust users), one token and address each")
    parser.add_argument("--spawn-rate", type=float, default=4.0, help="users started per second")
    parser.add_argument("--duration", type=int, default=60, help="seconds of the run (locust -t)")
    parser.add_argument("--workers", type=int, default=1, help="bff worker processes (0: no worker, no beat)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds for the worker after the run")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--keep-db", action="store_true", help="leave the benchmark database behind")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the app's, workers' and locust's logs to DIR")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the residents' choices")
    parser.add_argument(
        "--set", action="append", default=[], metavar="HSP_NAME=VALUE", help="an extra setting for the app (repeatable)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    ns = parser.parse_args(argv)
    settings: dict[str, str] = {}
    for item in ns.set:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("HSP_"):
            parser.error(f"--set wants HSP_NAME=VALUE, not {item!r}")
        settings[key] = value
    if not 1 <= ns.users <= 2**17 or ns.duration < 1 or ns.spawn_rate <= 0 or ns.workers < 0 or ns.settle < 0:
        parser.error("--users in 1..131072, --duration and --spawn-rate positive, --workers and --settle >= 0")
    return Options(
        users=ns.users,
        spawn_rate=ns.spawn_rate,
        duration=ns.duration,
        workers=ns.workers,
        settle=ns.settle,
        log_level=ns.log_level,
        keep_db=ns.keep_db,
        keep_logs=ns.keep_logs,
        json=ns.json,
        seed=ns.seed,
        app_settings=settings,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    figures = run(opts)
    if opts.json:
        emit_json(figures)
    else:
        print(summary(figures))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
