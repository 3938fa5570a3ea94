"""The notification batch benchmark: N residents, one scheduled message each, all due now.

Phase 1 times ``run_due()`` (repeated until nothing is due) turning the scheduled rows into deliveries; phase 2
times the first pass of ``deliver(id)`` over every queued delivery with ``--concurrency`` coroutines, through an
SMS fake that fails transiently for a deterministic subset (half of it recovers on its 2nd attempt, the rest
keeps failing until the backoff schedule runs out) and finally for another subset. The clock is then moved past
each backoff and ``sweep()`` + ``deliver()`` run until nothing is due. The correctness counters are read from
the database afterwards; the baseline is pgbench running one delivery's SQL (claim, address lookups, settle)
on the same deliveries table with as many clients as ``--concurrency``.

    python -m load.notify_batch --json
    python -m load.notify_batch --recipients 1000 --concurrency 8

Exit status 1 when something is unsettled, a recipient got a message twice, or a recipient outside the
failing subsets did not get exactly one.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.kernel.crypto import FieldCipher
from domain.kernel.ids import new_id
from domain.notification.model import Channel, DeliveryState, EventClass
from domain.notification.ports import Address, ChannelFinalError, ChannelTransientError
from domain.notification.templates import NotificationTemplate, Rendered, TemplateRegistry
from domain.notification.timing import QuietHours
from domain.notification.use_cases import NotificationDeps, NotificationService
from integrations.crypto.keys import Keyring, generate_keyring_config
from integrations.crypto.suite import build_suite
from load.common import (
    BenchDatabase,
    PgbenchError,
    PgbenchResult,
    Stopwatch,
    create_benchmark_database,
    drop_benchmark_database,
    emit_json,
    machine,
    per_second,
    postgres_version,
    ratio,
    run_pgbench,
)
from persistence.account.tables import resident_accounts
from persistence.db import ConnectionSource, DatabaseConfig, create_engine
from persistence.uow import unit_of_work_factory

EVENT = "bench.notice"
SUBJECT_TYPE = "bench"
START = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: outside quiet hours
SEED = 20261122
SEED_BATCH = 1000
PGBENCH_SECONDS = 10
T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------------------------- fakes


class BenchClock:
    """A clock the benchmark moves itself (the service never reads the time)."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@dataclass
class ListQueue:
    """The task-runner port: remembers the delivery ids the service queues."""

    ids: list[int] = field(default_factory=list)

    async def enqueue(self, task: str, kwargs: Mapping[str, Any], *, countdown_seconds: float | None = None) -> None:
        if task == "notification.deliver":
            self.ids.append(int(kwargs["delivery_id"]))

    def take(self) -> list[int]:
        taken, self.ids = self.ids, []
        return taken


@dataclass(frozen=True)
class Plan:
    """Who fails how, by phone number; chosen once from a fixed seed."""

    phones: tuple[str, ...]
    fail_final: frozenset[str]
    transient_once: frozenset[str]
    """Fail transiently on the 1st attempt, then succeed."""
    transient_always: frozenset[str]
    """Fail transiently on every attempt: FAILED_FINAL once the backoff schedule is spent."""

    @property
    def failing(self) -> frozenset[str]:
        return self.fail_final | self.transient_once | self.transient_always

    @property
    def expected_sent(self) -> int:
        return len(self.phones) - len(self.fail_final) - len(self.transient_always)

    @property
    def expected_failed_final(self) -> int:
        return len(self.fail_final) + len(self.transient_always)


def make_plan(recipients: int, fail_transient: float, fail_final: float, *, seed: int = SEED) -> Plan:
    phones = tuple(f"139{i:08d}" for i in range(recipients))
    transient = min(recipients, round(recipients * fail_transient))
    final = min(recipients - transient, round(recipients * fail_final))
    chosen = random.Random(seed).sample(phones, transient + final)
    transient_set = chosen[:transient]
    return Plan(
        phones=phones,
        fail_final=frozenset(chosen[transient:]),
        transient_once=frozenset(transient_set[0::2]),
        transient_always=frozenset(transient_set[1::2]),
    )


@dataclass
class ScriptedSms:
    """The SMS channel port, failing as the plan says; counts attempts and successful sends per phone."""

    plan: Plan
    channel: Channel = Channel.SMS
    attempts: Counter[str] = field(default_factory=Counter)
    sends: Counter[str] = field(default_factory=Counter)

    async def send(self, address: Address, template: str | None, rendered: Rendered) -> tuple[str, str]:
        phone = address.value
        self.attempts[phone] += 1
        if phone in self.plan.fail_final:
            raise ChannelFinalError("number refused")
        if phone in self.plan.transient_always or (phone in self.plan.transient_once and self.attempts[phone] == 1):
            raise ChannelTransientError("provider busy")
        self.sends[phone] += 1
        return "bench", f"{phone}-{self.sends[phone]}"


def bench_registry() -> TemplateRegistry:
    registry = TemplateRegistry()
    registry.register(
        NotificationTemplate(
            event=EVENT,
            event_class=EventClass.URGENT,
            variables=("what", "time"),
            title="通知",
            body="{what}，时间{time}",
            sms_template="notice",
        )
    )
    return registry


async def _accept_all(subject_id: str) -> bool:
    return True


@dataclass
class DbCalls:
    """What the code asks of the database, counted from SQLAlchemy's events: statements, pool checkouts (each
    one a pre-ping: BEGIN, ``;``, ROLLBACK with the asyncpg dialect), transactions begun and committed."""

    counts: Counter[str] = field(default_factory=Counter)

    def attach(self, engine: AsyncEngine) -> None:
        sync = engine.sync_engine

        def bump(name: str) -> Any:
            def listener(*_args: object, **_kwargs: object) -> None:
                self.counts[name] += 1

            return listener

        event.listen(sync, "before_cursor_execute", bump("statements"))
        event.listen(sync, "begin", bump("begins"))
        event.listen(sync, "commit", bump("commits"))
        event.listen(sync, "rollback", bump("rollbacks"))
        event.listen(sync, "savepoint", bump("savepoints"))
        event.listen(sync.pool, "checkout", bump("checkouts"))

    def snapshot(self) -> Counter[str]:
        return Counter(self.counts)

    def per_item(self, before: Counter[str], items: int) -> dict[str, float]:
        return {k: (self.counts[k] - before[k]) / items for k in sorted(self.counts)} if items else {}


# --------------------------------------------------------------------------------------------- phases


async def seed_residents(source: ConnectionSource, cipher: FieldCipher, plan: Plan, now: datetime) -> dict[str, str]:
    """One resident per phone (encrypted as the service expects), in batches; returns {phone: account id}."""
    accounts = {phone: new_id() for phone in plan.phones}
    rows = [
        {
            "id": account_id,
            "created_at": now,
            "last_active_at": now,
            "phone_index": new_id(),
            "phone_cipher": cipher.encrypt(phone.encode(), context="account.phone"),
            "phone_bound_at": now,
            "merged_into": None,
        }
        for phone, account_id in accounts.items()
    ]
    for start in range(0, len(rows), SEED_BATCH):
        async with source.engine.begin() as conn:
            await conn.execute(resident_accounts.insert(), rows[start : start + SEED_BATCH])
    return accounts


async def run_pool(items: Sequence[T], worker_count: int, work: Callable[[T], Awaitable[R]]) -> list[R]:
    """Run ``await work(item)`` for every item with ``worker_count`` coroutines; results in item order."""
    results: dict[int, R] = {}
    cursor = iter(range(len(items)))

    async def worker() -> None:
        for index in cursor:  # one shared iterator: each index is taken by one worker
            results[index] = await work(items[index])

    await asyncio.gather(*(worker() for _ in range(max(1, worker_count))))
    return [results[i] for i in range(len(items))]


async def schedule_all(service: NotificationService, accounts: Sequence[str], concurrency: int) -> None:
    due = service.d.clock.now()

    async def one(account_id: str) -> int:
        return await service.schedule(
            key=f"bench:{account_id}",
            event_type=EVENT,
            account_id=account_id,
            subject_type=SUBJECT_TYPE,
            subject_id=account_id,
            values={"what": "停诊通知", "time": "2026-11-23 09:00"},
            due_at=due,
        )

    await run_pool(list(accounts), concurrency, one)


async def run_due_until_empty(service: NotificationService) -> tuple[int, int]:
    """Returns (scheduled rows processed, run_due calls)."""
    processed = calls = 0
    while True:
        report = await service.run_due()
        calls += 1
        handled = report.sent + report.skipped + report.failed
        processed += handled
        if handled == 0:
            return processed, calls


async def deliver_all(service: NotificationService, ids: Sequence[int], concurrency: int) -> Counter[str]:
    async def one(delivery_id: int) -> DeliveryState | None:
        return await service.deliver(delivery_id)

    results = await run_pool(list(ids), concurrency, one)
    return Counter(r.value if r is not None else "not_claimed" for r in results)


async def drain(service: NotificationService, queue: ListQueue, concurrency: int) -> int:
    """``sweep()`` and deliver what it queues until it finds nothing due; returns the deliveries attempted."""
    attempted = 0
    for _ in range(1000):
        if await service.sweep(limit=2000) == 0:
            break
        ids = queue.take()
        await deliver_all(service, ids, concurrency)
        attempted += len(ids)
    return attempted


async def claimable(source: ConnectionSource) -> int:
    async with source.engine.connect() as conn:
        found = await conn.scalar(
            sa.text("SELECT count(*) FROM notification_deliveries WHERE state NOT IN ('sent','failed_final','skipped')")
        )
    return int(found or 0)


async def retry_until_settled(
    service: NotificationService, queue: ListQueue, clock: BenchClock, source: ConnectionSource, concurrency: int
) -> tuple[int, int]:
    """Move the clock past each backoff in turn and drain; returns (rounds, deliveries attempted)."""
    backoff = service.d.backoff
    rounds = attempted = 0
    while rounds < len(backoff) + 3:
        clock.advance(backoff[min(rounds, len(backoff) - 1)] + 1)
        rounds += 1
        done = await drain(service, queue, concurrency)
        attempted += done
        if done == 0 and await claimable(source) == 0:
            break
    return rounds, attempted


# --------------------------------------------------------------------------------------------- counters


async def count_outcomes(
    source: ConnectionSource, plan: Plan, accounts: Mapping[str, str], sms: ScriptedSms
) -> dict[str, object]:
    async with source.engine.connect() as conn:

        async def scalar(sql: str) -> int:
            return int(await conn.scalar(sa.text(sql)) or 0)

        recipients = await scalar("SELECT count(*) FROM resident_accounts")
        scheduled_sent = await scalar("SELECT count(*) FROM scheduled_messages WHERE state = 'sent'")
        scheduled_pending = await scalar("SELECT count(*) FROM scheduled_messages WHERE state = 'pending'")
        deliveries = await scalar("SELECT count(*) FROM notification_deliveries")
        sent = await scalar("SELECT count(*) FROM notification_deliveries WHERE state = 'sent'")
        failed_final = await scalar("SELECT count(*) FROM notification_deliveries WHERE state = 'failed_final'")
        unsettled_deliveries = await scalar(
            "SELECT count(*) FROM notification_deliveries "
            "WHERE state NOT IN ('sent','failed_final','skipped') OR claimed_until IS NOT NULL"
        )
        sent_rows = {
            str(r[0]): int(r[1])
            for r in await conn.execute(
                sa.text(
                    "SELECT account_id, count(*) FROM notification_deliveries WHERE state = 'sent' GROUP BY account_id"
                )
            )
        }
    duplicated = {p for p, n in sms.sends.items() if n > 1} | {
        p for p in plan.phones if sent_rows.get(accounts[p], 0) > 1
    }
    others = [p for p in plan.phones if p not in plan.failing]
    every_other_settled = all(sms.sends[p] == 1 and sent_rows.get(accounts[p], 0) == 1 for p in others)
    recovered = sum(1 for p in plan.transient_once if sent_rows.get(accounts[p], 0) == 1)
    figures: dict[str, object] = {
        "recipients": recipients,
        "scheduled_sent": scheduled_sent,
        "deliveries": deliveries,
        "sent": sent,
        "failed_final": failed_final,
        "unsettled": unsettled_deliveries + scheduled_pending,
        "duplicates": len(duplicated),
        "every_other_settled": every_other_settled,
        "expected_sent": plan.expected_sent,
        "expected_failed_final": plan.expected_failed_final,
        "recovered": recovered,
        "as_expected": sent == plan.expected_sent and failed_final == plan.expected_failed_final,
    }
    return figures


# --------------------------------------------------------------------------------------------- pgbench baseline

PGBENCH_SCRIPT = r"""
-- One delivery's database work, as NotificationService.deliver does it (persistence/notification/repository.py
-- claim and settle, persistence/account/repository.py identities and resident): a transaction that claims the
-- row with a lease and reads the resident's addresses, then a transaction that settles it. Each client walks
-- its own range of pending rows (:base + :client_id * :stride + n), so every claim finds a claimable row.
\set n :n + 1
\set id :base + :client_id * :stride + (:n % :stride)
BEGIN;
WITH claimed AS (
    UPDATE notification_deliveries
       SET claimed_until = now() + interval '60 seconds', attempts = attempts + 1, updated_at = now()
     WHERE id = :id
       AND state IN ('pending', 'failed_retryable', 'deferred')
       AND send_after <= now()
       AND (claimed_until IS NULL OR claimed_until < now())
    RETURNING *
)
SELECT coalesce((SELECT account_id FROM claimed), '') AS account_id \gset
SELECT provider, app_id, subject, account_id, union_id, created_at
  FROM account_identities WHERE account_id = :account_id ORDER BY created_at;
SELECT * FROM resident_accounts WHERE id = :account_id;
SELECT provider, token FROM push_devices WHERE account_id = :account_id ORDER BY registered_at DESC;
COMMIT;
BEGIN;
UPDATE notification_deliveries
   SET state = 'sent', updated_at = now(), claimed_until = NULL, failure = NULL,
       sent_at = now(), provider = 'bench', provider_message_id = :id
 WHERE id = :id;
COMMIT;
"""


async def prepare_pgbench_rows(owner_url: str, rows: int) -> int:
    """Insert ``rows`` pending SMS deliveries (real residents, a real sealed value) for pgbench; returns the
    first id. Run after the counters: these rows are not part of the benchmark's outcome."""
    engine = create_engine(DatabaseConfig(url=owner_url, pool_size=1, max_overflow=0))
    try:
        async with engine.begin() as conn:
            sealed = await conn.scalar(sa.text("SELECT values_cipher FROM notification_deliveries LIMIT 1"))
            base = int(await conn.scalar(sa.text("SELECT coalesce(max(id), 0) + 1 FROM notification_deliveries")))
            await conn.execute(
                sa.text(
                    "WITH acc AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS rn FROM resident_accounts), "
                    "total AS (SELECT count(*) AS c FROM acc) "
                    "INSERT INTO notification_deliveries "
                    "(id, event_id, event_type, account_id, channel, state, values_cipher, send_after, attempts, "
                    " created_at, updated_at) "
                    "SELECT :base + g, 'pgbench:' || g, :event, acc.id, 'sms', 'pending', :sealed, "
                    "       now() - interval '1 hour', 0, now(), now() "
                    "FROM generate_series(0, :rows - 1) AS g "
                    "JOIN acc ON acc.rn = g % (SELECT c FROM total)"
                ),
                {"base": base, "rows": rows, "event": EVENT, "sealed": sealed or "x"},
            )
            await conn.execute(sa.text("ANALYZE notification_deliveries"))
        return base
    finally:
        await engine.dispose()


async def pgbench_claims(owner_url: str) -> int:
    engine = create_engine(DatabaseConfig(url=owner_url, pool_size=1, max_overflow=0))
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                sa.text("SELECT count(*) FROM notification_deliveries WHERE event_id LIKE 'pgbench:%' AND attempts > 0")
            )
        return int(found or 0)
    finally:
        await engine.dispose()


def pgbench_baseline(db: BenchDatabase, clients: int, seconds: int) -> tuple[PgbenchResult, int]:
    """pgbench over the deliveries table; returns the result and how many claims missed their row."""
    stride = seconds * max(400, 4000 // clients)  # rows per client: more than one client can claim in ``seconds``
    base = asyncio.run(prepare_pgbench_rows(db.owner_url, clients * stride))
    with tempfile.TemporaryDirectory(prefix="hsp-load-") as tmp:
        script = Path(tmp) / "deliver.sql"
        script.write_text(PGBENCH_SCRIPT, encoding="utf-8")
        result = run_pgbench(
            db.libpq_url, script, clients=clients, seconds=seconds, defines={"base": base, "stride": stride, "n": 0}
        )
    claims = asyncio.run(pgbench_claims(db.owner_url))
    misses = max(0, (result.transactions or claims) - claims)
    return result, misses


# --------------------------------------------------------------------------------------------- the run


@dataclass
class Options:
    recipients: int
    fail_transient: float
    fail_final: float
    concurrency: int
    keep_db: bool
    json: bool
    profile: str | None
    pgbench_seconds: int


async def run_batch(db: BenchDatabase, opts: Options, watch: Stopwatch) -> dict[str, object]:
    cfg = generate_keyring_config()
    suite = build_suite("intl", Keyring.from_config(cfg["active_kid"], cfg["keys"], cfg["index_key"]))
    clock = BenchClock(START)
    plan = make_plan(opts.recipients, opts.fail_transient, opts.fail_final)
    sms, queue = ScriptedSms(plan), ListQueue()
    engine = create_engine(
        DatabaseConfig(url=db.app_url, pool_size=opts.concurrency + 2, max_overflow=opts.concurrency + 4)
    )
    source = ConnectionSource(engine)
    calls_counter = DbCalls()
    calls_counter.attach(engine)
    service = NotificationService(
        NotificationDeps(
            uow_factory=unit_of_work_factory(source, cipher=suite.cipher),
            clock=clock,
            cipher=suite.cipher,
            runner=queue,
            senders={Channel.SMS: sms},
            registry=bench_registry(),
            quiet=QuietHours(),
            subject_checks={SUBJECT_TYPE: _accept_all},
        )
    )
    profiler = cProfile.Profile() if opts.profile else None
    try:
        with watch.lap("seed"):
            accounts = await seed_residents(source, suite.cipher, plan, clock.now())
        with watch.lap("schedule"):
            await schedule_all(service, list(accounts.values()), opts.concurrency)
        if profiler is not None:
            profiler.enable()
        before_phase1 = calls_counter.snapshot()
        with watch.lap("phase1_run_due"):
            processed, calls = await run_due_until_empty(service)
        per_row = calls_counter.per_item(before_phase1, processed)
        first_ids = queue.take()
        before_phase2 = calls_counter.snapshot()
        with watch.lap("phase2_first_pass"):
            first_pass = await deliver_all(service, first_ids, opts.concurrency)
        per_delivery = calls_counter.per_item(before_phase2, len(first_ids))
        with watch.lap("retries"):
            rounds, retried = await retry_until_settled(service, queue, clock, source, opts.concurrency)
        if profiler is not None and opts.profile:
            profiler.disable()
            profiler.dump_stats(opts.profile)
        with watch.lap("count"):
            figures = await count_outcomes(source, plan, accounts, sms)
    finally:
        await engine.dispose()
    figures.update(
        {
            "run_due_rps": per_second(processed, watch.laps["phase1_run_due"]),
            "run_due_calls": calls,
            "deliveries_per_s": per_second(len(first_ids), watch.laps["phase2_first_pass"]),
            "schedule_per_s": per_second(len(accounts), watch.laps["schedule"]),
            "first_pass": dict(sorted(first_pass.items())),
            "retry_rounds": rounds,
            "retry_deliveries": retried,
            "db_calls_per_scheduled_row": per_row,
            "db_calls_per_delivery": per_delivery,
        }
    )
    return figures


def run(opts: Options) -> dict[str, object]:
    watch = Stopwatch()
    before = machine()
    name = f"hsp_load_notify_{os.getpid()}"
    with watch.lap("total"):
        with watch.lap("create_db"):
            db = create_benchmark_database(name)
        try:
            figures = asyncio.run(run_batch(db, opts, watch))
            pgbench: PgbenchResult | None = None
            misses: int | None = None
            error: str | None = None
            with watch.lap("pgbench"):
                try:
                    pgbench, misses = pgbench_baseline(db, opts.concurrency, opts.pgbench_seconds)
                except PgbenchError as exc:
                    error = str(exc)
        finally:
            if not opts.keep_db:
                drop_benchmark_database(name)
    tps = pgbench.tps if pgbench else None
    deliveries_per_s = figures["deliveries_per_s"]
    assert isinstance(deliveries_per_s, float)
    out: dict[str, object] = {
        "benchmark": "notify_batch",
        "date": datetime.now(UTC).date().isoformat(),
        "recipients_requested": opts.recipients,
        "fail_transient": opts.fail_transient,
        "fail_final": opts.fail_final,
        "concurrency": opts.concurrency,
        **figures,
        "pgbench_tps": tps,
        "ratio": ratio(deliveries_per_s, tps),
        "pgbench": {
            "clients": opts.concurrency,
            "seconds": opts.pgbench_seconds,
            "transactions": pgbench.transactions if pgbench else None,
            "failed": pgbench.failed if pgbench else None,
            "latency_ms": pgbench.latency_ms if pgbench else None,
            "claim_misses": misses,
            "error": error,
        },
        "timings_s": dict(watch.laps),
        "cpu_s": {
            lap: {"python": watch.cpu.get(lap), "postgres": watch.db_cpu.get(lap)}
            for lap in ("seed", "schedule", "phase1_run_due", "phase2_first_pass", "retries", "pgbench")
        },
        "database": name if opts.keep_db else None,
        "machine": {**before, "load_1m_after": machine()["load_1m"], "postgres": postgres_version()},
    }
    return out


def healthy(figures: Mapping[str, object]) -> bool:
    return figures["unsettled"] == 0 and figures["duplicates"] == 0 and figures["every_other_settled"] is True


def summary(f: Mapping[str, object]) -> str:
    pg = f["pgbench"]
    timings = f["timings_s"]
    assert isinstance(pg, Mapping)
    assert isinstance(timings, Mapping)

    def num(value: object, fmt: str = ".1f") -> str:
        return format(value, fmt) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)

    lines = [
        f"notify_batch  {f['date']}  recipients={f['recipients']}  concurrency={f['concurrency']}",
        f"  scheduled sent      {f['scheduled_sent']}",
        f"  deliveries          {f['deliveries']}  (sent {f['sent']}, failed_final {f['failed_final']}; "
        f"expected {f['expected_sent']} / {f['expected_failed_final']}; recovered {f['recovered']})",
        f"  unsettled           {f['unsettled']}",
        f"  duplicates          {f['duplicates']}",
        f"  every other settled {f['every_other_settled']}",
        f"  run_due             {num(f['run_due_rps'])} rows/s",
        f"  deliver (1st pass)  {num(f['deliveries_per_s'])} /s   first pass: {f['first_pass']}",
        f"  pgbench baseline    {num(f['pgbench_tps'])} tps ({pg['clients']} clients, {pg['seconds']} s, "
        f"claim misses {pg['claim_misses']}{', error ' + str(pg['error']) if pg['error'] else ''})",
        f"  ratio               {num(f['ratio'], '.3f')}  (deliveries_per_s / pgbench_tps)",
        "  timings (s)         " + ", ".join(f"{k} {num(v)}" for k, v in timings.items()),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m load.notify_batch", description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--fail-transient", type=float, default=0.01, help="fraction failing transiently")
    parser.add_argument("--fail-final", type=float, default=0.005, help="fraction failing for good")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="concurrent deliver coroutines (and pgbench clients)"
    )
    parser.add_argument("--keep-db", action="store_true", help="leave the benchmark database behind")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", metavar="FILE", help="write cProfile stats of phases 1-2 and the retries")
    parser.add_argument("--pgbench-seconds", type=int, default=PGBENCH_SECONDS)
    ns = parser.parse_args(argv)
    if ns.recipients < 1 or ns.concurrency < 1 or ns.pgbench_seconds < 1:
        parser.error("--recipients, --concurrency and --pgbench-seconds must be positive")
    if not (0 <= ns.fail_transient <= 1 and 0 <= ns.fail_final <= 1 and ns.fail_transient + ns.fail_final <= 1):
        parser.error("the failure fractions must lie in [0, 1] and add up to at most 1")
    return Options(
        recipients=ns.recipients,
        fail_transient=ns.fail_transient,
        fail_final=ns.fail_final,
        concurrency=ns.concurrency,
        keep_db=ns.keep_db,
        json=ns.json,
        profile=ns.profile,
        pgbench_seconds=ns.pgbench_seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    figures = run(opts)
    if opts.json:
        emit_json(figures)
    else:
        print(summary(figures))
    return 0 if healthy(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
