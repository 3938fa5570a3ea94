"""The morning-release booking storm (DESIGN §7): the real ``bff serve`` on PostgreSQL and Redis, over HTTP.

Seeds a hospital, its sessions and slots, and ``--patients`` verified residents (accounts, persons, patient links,
health-data consents, live sessions and access tokens minted the way the app mints them) directly in a fresh
database; measures the baselines (pgbench running the hold transaction's SQL, Redis running the gate's admit
script); starts ``--app-processes`` ``bff serve`` processes, ``--workers`` ``bff worker`` processes and one
``bff beat`` with ``HSP_ENV=test``; then, over ``--concurrency`` keep-alive connections spread over the app
processes, each resident with its own address in ``X-Forwarded-For`` (loopback is the trusted proxy):

* **ping**: the framework ceiling, ``GET /api/v1/patient/me`` (authenticated, the cheapest resident route);
* **phase A**, throughput: for ``--duration`` seconds clients book as fast as they can on slots with more numbers
  than demand, every booking by a different person;
* **phase B**, the storm: ``--patients`` residents released at once on ``--slots`` slots of capacity one, each
  trying like a real client (on "full", at most 3 other slots of the same session; on 429, ``Retry-After``
  honoured at most 3 times).

The correctness counters are read from the tables after the app is stopped. Everything it started is stopped
and its database dropped at the end (``--keep-db`` keeps the database).

    python -m load.storm --json
    python -m load.storm --patients 2000 --slots 200 --duration 10 --json

Exit status 1 when a hard target is missed (oversold, duplicate bookings, 5xx, booked != capacity).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bff.auth.tokens import AccessTokens, SigningKeys
from bootstrap.clock import SystemClock
from domain.account.model import AccountKind, Audience, Session
from domain.catalogue.model import Hospital, HospitalLevel, Period, SessionStatus
from domain.kernel.clock import SHANGHAI
from domain.kernel.crypto import CryptoSuite
from domain.kernel.ids import new_id
from domain.patient.model import ConsentKind, PatientState, Relationship, VerificationMethod
from integrations.crypto.keys import Keyring, generate_keyring_config
from integrations.crypto.suite import build_suite
from load.common import (
    REDIS_URL,
    BenchDatabase,
    PgbenchError,
    PgbenchResult,
    create_benchmark_database,
    drop_benchmark_database,
    emit_json,
    machine,
    per_second,
    postgres_cpu_seconds,
    postgres_version,
    ratio,
    run_pgbench,
)
from load.gate_baseline import GateBaseline, run_gate_baseline
from load.http_client import Pool, Reply, TransportError, build_request
from load.storm_logic import (
    LIVE_STATES,
    Answer,
    BookingRow,
    ClientPolicy,
    Done,
    ResidentTry,
    SlotRow,
    Try,
    Verdict,
    Wait,
    after_wait,
    correctness,
    count_verdicts,
    first_choices,
    hard_targets_met,
    latency_summary,
    next_step,
    past_gate,
    refusal_codes,
    resident_address,
    retry_after_seconds,
    session_sizes,
    sold_out_window,
    targets,
)
from persistence.account.tables import resident_accounts, sessions
from persistence.booking.tables import bookings
from persistence.catalogue.repository import SqlCatalogueRepository
from persistence.catalogue.tables import clinic_sessions, clinic_slots
from persistence.db import ConnectionSource, DatabaseConfig, create_engine
from persistence.patient.tables import consents, patients, persons
from persistence.uow import unit_of_work_factory

ROOT = Path(__file__).resolve().parent.parent
BFF = str(Path(sys.executable).parent / "bff")
HOSPITAL = "STORM"
PGBENCH_HOSPITAL = "PGBENCH"
FEE_FEN = 1500
SLOTS_PER_SESSION = 20
PHASE_A_SESSIONS = 10
SEED_BATCH = 1000
SEED = 20261206
PING_PATH = "/api/v1/patient/me"
HOLD_PATH = "/api/v1/patient/bookings"
CONSENT_VERSION = "2026-11"
"""``PatientSettings.consent_version``: ``usable`` checks only that a live health-data consent exists."""
TOKEN_TTL = timedelta(hours=2)
"""Our own tokens live longer than the app's 10 minutes so that a slow run never meets an expired one; the app
checks only the signature, the claims and the expiry written in them."""
PING_RESIDENTS = 512
"""The ping cycles over its own residents, each sending a few requests a second at most (under the per-account
limit of 600 a minute) with its session cached after its first request: the steady state of a logged-in app."""
IDLE_SECONDS = 30 * 60
"""``HSP_AUTH__RESIDENT_IDLE_MINUTES`` default."""
APP_POOL = (10, 10)
"""``HSP_DB__POOL_SIZE``, ``HSP_DB__MAX_OVERFLOW`` defaults: the connections one app process may open."""
LISTENERS_NOTE = (
    "bff serve runs one uvicorn server per process with no workers or SO_REUSEPORT setting "
    "(bootstrap/server.py, bootstrap/settings.py HttpSettings), so N processes listen on N ports and the "
    "client connections are spread round-robin over them"
)


# --------------------------------------------------------------------------------------------- options


@dataclass
class Options:
    patients: int
    slots: int
    concurrency: int
    duration: float
    app_processes: int
    workers: int
    phase_a_pool: int
    baseline_seconds: int
    pgbench_clients: int
    phase_b_timeout: float
    log_level: str
    keep_db: bool
    keep_logs: str | None
    profile: str | None
    json: bool
    seed: int = SEED
    app_settings: dict[str, str] = field(default_factory=dict)
    """Extra ``HSP_*`` settings for the app's processes (``--set``), for experiments."""


# --------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class Resident:
    index: int
    account_id: str
    person_id: str
    patient_id: str
    token: str
    address: str


@dataclass(frozen=True, slots=True)
class SessionPlan:
    session_id: str
    department_code: str
    day: date
    slot_ids: tuple[str, ...]
    capacity: int


@dataclass
class Plan:
    phase_a: list[SessionPlan]
    phase_b: list[SessionPlan]
    pgbench: SessionPlan
    residents: list[Resident] = field(default_factory=list)

    @property
    def slots_a(self) -> list[str]:
        return [s for session in self.phase_a for s in session.slot_ids]

    @property
    def slots_b(self) -> list[str]:
        return [s for session in self.phase_b for s in session.slot_ids]

    @property
    def capacity_b(self) -> int:
        return sum(len(s.slot_ids) * s.capacity for s in self.phase_b)

    def session_of(self) -> dict[str, tuple[str, ...]]:
        """Phase B slot id -> every slot of its session."""
        return {slot: s.slot_ids for s in self.phase_b for slot in s.slot_ids}


def make_plan(opts: Options, today: date) -> Plan:
    """Phase A on the day after tomorrow (Shanghai), phase B the day after: inside the default 7-day window
    released at 08:00 (APT-004), never the same day, and inside the gate's 15-day rebuild."""
    day_a, day_b = today + timedelta(days=2), today + timedelta(days=3)
    a_slots = PHASE_A_SESSIONS * SLOTS_PER_SESSION
    a_capacity = math.ceil(opts.phase_a_pool / a_slots) + 1  # more numbers than the whole pool could book

    def session(prefix: str, n: int, day: date, size: int, capacity: int) -> SessionPlan:
        sid = f"{prefix}-{day:%Y%m%d}-{n:03d}"
        return SessionPlan(sid, f"{prefix}{n:03d}", day, tuple(f"{sid}-{i:02d}" for i in range(size)), capacity)

    phase_a = [session("A", n, day_a, SLOTS_PER_SESSION, a_capacity) for n in range(PHASE_A_SESSIONS)]
    sizes = session_sizes(opts.slots, SLOTS_PER_SESSION)
    phase_b = [session("B", n, day_b, size, 1) for n, size in enumerate(sizes)]
    far = today + timedelta(days=60)  # outside the gate's rebuild: pgbench's rows never reach Redis
    bench = SessionPlan("PGB-SESSION", "PGB", far, tuple(f"PGB-S-{i}" for i in range(a_slots)), 10**9)
    return Plan(phase_a=phase_a, phase_b=phase_b, pgbench=bench)


# --------------------------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Keys:
    crypto: dict[str, Any]
    signing_kid: str
    signing_pem: str

    @classmethod
    def generate(cls) -> Keys:
        return cls(dict(generate_keyring_config("storm-1")), "storm-sig-1", SigningKeys.generate_pem().decode())

    def suite(self) -> CryptoSuite:
        cfg = self.crypto
        return build_suite("intl", Keyring.from_config(cfg["active_kid"], cfg["keys"], cfg["index_key"]))

    def tokens(self) -> AccessTokens:
        keys = SigningKeys.from_pem(self.signing_kid, {self.signing_kid: self.signing_pem.encode()})
        return AccessTokens(keys, clock=SystemClock(), ttl=TOKEN_TTL)

    def env(self) -> dict[str, str]:
        return {
            "HSP_CRYPTO__SUITE": "intl",
            "HSP_CRYPTO__ACTIVE_KID": self.crypto["active_kid"],
            "HSP_CRYPTO__KEYS": json.dumps(self.crypto["keys"]),
            "HSP_CRYPTO__INDEX_KEY": self.crypto["index_key"],
            "HSP_AUTH__ACTIVE_KID": self.signing_kid,
            "HSP_AUTH__SIGNING_KEYS": json.dumps({self.signing_kid: self.signing_pem}),
        }


# --------------------------------------------------------------------------------------------- seeding

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def citizen_id(serial: int) -> str:
    """A well-formed resident ID number (GB 11643 check digit), distinct per serial (birth 1990-01-01 plus
    a day per 1000 serials)."""
    born = date(1960, 1, 1) + timedelta(days=serial // 1000)
    body = f"110105{born:%Y%m%d}{serial % 1000:03d}"
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]
    return body + check


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


async def seed_catalogue(engine: AsyncEngine, plan: Plan, now: datetime) -> None:
    """The hospital (default booking rules, no HIS adapter: nothing leaves the machine) and the sessions and
    slots of both phases and of pgbench."""
    hospital = Hospital(
        code=HOSPITAL,
        name="压测医院",
        level=HospitalLevel.TERTIARY,
        region_code="110105",
        adapter="fhir",
        adapter_settings={},  # no base_url: no adapter is built, the hold never calls a HIS
    )
    async with engine.begin() as conn:
        await SqlCatalogueRepository(conn).add_hospital(hospital, now=now)
        for code, session in [(HOSPITAL, s) for s in plan.phase_a + plan.phase_b] + [(PGBENCH_HOSPITAL, plan.pgbench)]:
            await conn.execute(
                clinic_sessions.insert().values(
                    hospital_code=code,
                    id=session.session_id,
                    department_code=session.department_code,
                    doctor_code=None,
                    day=session.day,
                    period=Period.MORNING.value,
                    status=SessionStatus.OPEN.value,
                    fee_fen=FEE_FEN,
                    stop_reason=None,
                    version="1",
                    synced_at=now,
                )
            )
            start = datetime.combine(session.day, datetime.min.time(), SHANGHAI).replace(hour=8)
            await conn.execute(
                clinic_slots.insert(),
                [
                    {
                        "hospital_code": code,
                        "id": slot_id,
                        "session_id": session.session_id,
                        "start_at": start + timedelta(minutes=10 * i),
                        "end_at": start + timedelta(minutes=10 * (i + 1)),
                        "capacity": session.capacity,
                        "taken": 0,
                        "his_booked": 0,
                        "synced_at": now,
                    }
                    for i, slot_id in enumerate(session.slot_ids)
                ],
            )


async def seed_residents(
    engine: AsyncEngine, suite: CryptoSuite, tokens: AccessTokens, count: int, now: datetime
) -> list[Resident]:
    """``count`` residents, each an account with a phone, a verified person (encrypted as the patients repository
    writes it), an active "self" patient link, a live health-data consent and a live patient-app session, with an
    access token for it. Batches of ``SEED_BATCH`` rows per table and transaction."""
    cipher = suite.cipher
    residents: list[Resident] = []
    for batch in _chunks(count, SEED_BATCH):
        rows: dict[str, list[dict[str, Any]]] = {"accounts": [], "persons": [], "links": [], "consents": []}
        session_rows: list[dict[str, Any]] = []
        for i in batch:
            account_id, person_id, patient_id, session_id = new_id(), new_id(), new_id(), new_id()
            phone = f"138{i:08d}"
            rows["accounts"].append(
                {
                    "id": account_id,
                    "created_at": now,
                    "last_active_at": now,
                    "phone_index": new_id(),
                    "phone_cipher": cipher.encrypt(phone.encode(), context="account.phone"),
                    "phone_bound_at": now,
                    "merged_into": None,
                }
            )
            rows["persons"].append(
                {
                    "id": person_id,
                    "name_cipher": cipher.encrypt(f"居民{i}".encode(), context="person.name"),
                    "sex": "F" if i % 2 else "M",
                    "birth_date": date(1990, 1, 1),
                    "doc_type": "01",
                    "doc_sub_type": None,
                    "doc_cipher": cipher.encrypt(citizen_id(i).encode(), context="person.document"),
                    "doc_index": new_id(),
                    "phone_cipher": None,
                    "phone_index": None,
                    "guardian_person_id": None,
                    "verified_at": now,
                    "verification": VerificationMethod.ID_TWO_FACTOR.value,
                    "health_card_id": None,
                    "phid": None,
                    "card_qr_cipher": None,
                    "merged_into": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            rows["links"].append(
                {
                    "id": patient_id,
                    "account_id": account_id,
                    "person_id": person_id,
                    "relationship": Relationship.SELF.value,
                    "state": PatientState.ACTIVE.value,
                    "created_at": now,
                    "confirmed_at": now,
                    "removed_at": None,
                    "confirm_code_hash": None,
                    "confirm_expires_at": None,
                    "confirm_attempts": 0,
                }
            )
            rows["consents"].append(
                {
                    "id": new_id(),
                    "account_id": account_id,
                    "person_id": person_id,
                    "kind": ConsentKind.HEALTH_DATA.value,
                    "version": CONSENT_VERSION,
                    "channel": "app",
                    "granted_at": now,
                    "withdrawn_at": None,
                }
            )
            session = Session(
                id=session_id,
                account_id=account_id,
                kind=AccountKind.RESIDENT,
                audience=Audience.PATIENT_APP,
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(days=30),
                idle_seconds=IDLE_SECONDS,
            )
            session_rows.append(
                {
                    "id": session.id,
                    "account_id": account_id,
                    "kind": session.kind.value,
                    "audience": session.audience.value,
                    "created_at": now,
                    "last_seen_at": now,
                    "expires_at": session.expires_at,
                    "idle_seconds": session.idle_seconds,
                    "roles": [],
                    "restriction": None,
                    "device": "storm",
                    "ip": resident_address(i),
                }
            )
            token, _ = tokens.mint(session)
            residents.append(Resident(i, account_id, person_id, patient_id, token, resident_address(i)))
        async with engine.begin() as conn:
            await conn.execute(resident_accounts.insert(), rows["accounts"])
            await conn.execute(persons.insert(), rows["persons"])
            await conn.execute(patients.insert(), rows["links"])
            await conn.execute(consents.insert(), rows["consents"])
            await conn.execute(sessions.insert(), session_rows)
    return residents


async def check_seed(engine: AsyncEngine, suite: CryptoSuite, resident: Resident) -> None:
    """Read one resident back through the app's own repositories: the person decrypts, the link is active."""
    factory = unit_of_work_factory(ConnectionSource(engine), cipher=suite.cipher)
    async with factory() as uow:
        person = await uow.patients.person(resident.person_id)
        links = await uow.patients.links(resident.account_id, states=(PatientState.ACTIVE,))
    if person is None or not person.verified or person.doc_number != citizen_id(resident.index):
        raise RuntimeError("seeded person does not read back as the app would read it")
    if [link.id for link in links] != [resident.patient_id]:
        raise RuntimeError("seeded patient link does not read back")


# --------------------------------------------------------------------------------------------- baselines

PGBENCH_SCRIPT = r"""
-- The hold transaction's two writes (persistence/booking/repository.py take and add): the conditional take of a
-- number and the booking row, in one transaction, on pgbench's own slots (hospital PGBENCH, as many as phase A
-- has, with room for every take) and a copy of the bookings table with the same columns and indexes.
\set n :n + 1
\set s random(0, :nslots - 1)
BEGIN;
UPDATE clinic_slots SET taken = taken + 1
 WHERE hospital_code = 'PGBENCH' AND id = 'PGB-S-' || :s AND taken < capacity;
INSERT INTO bench_bookings
    (id, account_id, person_id, hospital_code, department_code, doctor_code, session_id, slot_id, slot_start,
     slot_end, visit_day, fee_fen, created_at, hold_expires_at, cancel_deadline, checkin_opens_at,
     checkin_closes_at, state, payment_order_id, reschedules, version, updated_at)
VALUES ('pgb' || :client_id || 'n' || :n, 'acct' || :client_id, 'pers' || :client_id || 'n' || :n, 'PGBENCH',
        'PGB', NULL, 'PGB-SESSION', 'PGB-S-' || :s, now() + interval '2 days',
        now() + interval '2 days 10 minutes', current_date + 2, 1500, now(), now() + interval '15 minutes',
        now() + interval '1 day', now() + interval '47 hours', now() + interval '2 days 30 minutes', 'held',
        NULL, 0, 1, now());
COMMIT;
"""


async def prepare_pgbench(owner_url: str) -> None:
    engine = create_engine(DatabaseConfig(url=owner_url, pool_size=1, max_overflow=0))
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP TABLE IF EXISTS bench_bookings"))
            await conn.execute(sa.text("CREATE TABLE bench_bookings (LIKE bookings INCLUDING ALL)"))
            await conn.execute(sa.text("ANALYZE clinic_slots"))
    finally:
        await engine.dispose()


async def pgbench_rows(owner_url: str) -> tuple[int, int]:
    """(bench bookings inserted, numbers taken on pgbench's slots): equal when every take found its row."""
    engine = create_engine(DatabaseConfig(url=owner_url, pool_size=1, max_overflow=0))
    try:
        async with engine.connect() as conn:
            inserted = int(await conn.scalar(sa.text("SELECT count(*) FROM bench_bookings")) or 0)
            taken = int(
                await conn.scalar(
                    sa.text("SELECT coalesce(sum(taken), 0) FROM clinic_slots WHERE hospital_code = 'PGBENCH'")
                )
                or 0
            )
            await conn.execute(sa.text("DROP TABLE bench_bookings"))
            await conn.commit()
        return inserted, taken
    finally:
        await engine.dispose()


def pgbench_baseline(db: BenchDatabase, plan: Plan, clients: int, seconds: int) -> tuple[PgbenchResult, int, int]:
    asyncio.run(prepare_pgbench(db.owner_url))
    with tempfile.TemporaryDirectory(prefix="hsp-storm-") as tmp:
        script = Path(tmp) / "hold.sql"
        script.write_text(PGBENCH_SCRIPT, encoding="utf-8")
        result = run_pgbench(
            db.libpq_url,
            script,
            clients=clients,
            seconds=seconds,
            defines={"nslots": len(plan.pgbench.slot_ids), "n": 0},
        )
    inserted, taken = asyncio.run(pgbench_rows(db.owner_url))
    return result, inserted, taken


def gate_baseline(slots: int, ops: int) -> GateBaseline:
    return asyncio.run(run_gate_baseline(REDIS_URL, ops=ops, slots=slots, remaining=1, concurrency=16, pipeline=32))


# --------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_of_pid(pid: int) -> float | None:
    """CPU seconds of a process and its reaped children (``/proc/<pid>/stat``); None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(v) for v in fields[11:15]) / ticks


def cpu_of_named(name: str) -> float | None:
    total, seen = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if text[text.find("(") + 1 : text.rfind(")")] != name:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        seen = True
    return total if seen else None


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (all cores; ``/proc/stat``, everything but idle and iowait)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class Fleet:
    """The processes of the app under test: ``bff serve`` xN, ``bff worker`` xM, one ``bff beat``."""

    apps: list[subprocess.Popen[bytes]]
    ports: list[int]
    admin_ports: list[int]
    workers: list[subprocess.Popen[bytes]]
    log_dir: Path
    profile_base: str | None = None

    @property
    def all(self) -> list[subprocess.Popen[bytes]]:
        return [*self.apps, *self.workers]

    def cpu(self) -> dict[str, float]:
        def total(procs: Sequence[subprocess.Popen[bytes]]) -> float:
            return sum(c for c in (cpu_of_pid(p.pid) for p in procs) if c is not None)

        return {"app": total(self.apps), "workers": total(self.workers)}

    def check_alive(self) -> None:
        for proc in self.all:
            if proc.poll() is not None:
                raise RuntimeError(f"a process of the app exited with {proc.returncode} (logs in {self.log_dir})")

    def stop(self) -> None:
        for proc in self.all:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.all:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def app_env(db: BenchDatabase, keys: Keys, tag: str, data_dir: Path, log_level: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSP_")}
    env.update(keys.env())
    env.update(
        {
            "HSP_ENV": "test",
            "HSP_DB__URL": db.app_url,
            "HSP_DB__OWNER_URL": db.owner_url,
            "HSP_REDIS__URL": REDIS_URL,
            "HSP_REDIS__PREFIX": f"hsp-storm:{tag}:",
            "HSP_BROKER__TASK_DEFAULT_QUEUE": f"hsp-storm-{tag}",
            "HSP_BROKER__BEAT_SCHEDULE_PATH": str(data_dir / "celerybeat-schedule"),
            "HSP_CLOCK__MODE": "system",
            "HSP_SANDBOX__MOUNT": "false",
            "HSP_DEMO__DATA_DIR": str(data_dir),
            "HSP_BLOBS__ROOT": str(data_dir / "blobs"),
            "HSP_LOG__JSON": "true",
            "HSP_LOG__LEVEL": log_level,
            # The benchmark stands behind a "proxy" on loopback: each resident sends its own X-Forwarded-For.
            "HSP_HTTP__TRUSTED_PROXIES": '["127.0.0.0/8"]',
        }
    )
    return env


def start_fleet(env: Mapping[str, str], opts: Options, log_dir: Path) -> Fleet:
    apps: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    admin_ports: list[int] = []
    workers: list[subprocess.Popen[bytes]] = []
    profile_base = str(Path(opts.profile).resolve()) if opts.profile else None
    fleet = Fleet(apps, ports, admin_ports, workers, log_dir, profile_base)
    try:
        for n in range(opts.app_processes):
            port, admin_port = free_port(), free_port()
            proc_env = dict(env)
            proc_env["HSP_HTTP__BIND"] = f"127.0.0.1:{port}"
            proc_env["HSP_HTTP__ADMIN_BIND"] = f"127.0.0.1:{admin_port}"
            proc_env["HSP_HTTP__PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"
            argv = [BFF, "serve"]
            if n == 0 and profile_base is not None:
                argv = [sys.executable, "-m", "load.serve_profiled", profile_base]
            with open(log_dir / f"app-{n}.log", "wb") as log:
                apps.append(subprocess.Popen(argv, cwd=ROOT, env=proc_env, stdout=log, stderr=subprocess.STDOUT))
            ports.append(port)
            admin_ports.append(admin_port)
        for n in range(opts.workers):
            with open(log_dir / f"worker-{n}.log", "wb") as log:
                workers.append(
                    subprocess.Popen(
                        [BFF, "worker", "--pool", "solo", "--concurrency", "1"],
                        cwd=ROOT,
                        env=dict(env),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        if opts.workers:
            with open(log_dir / "beat.log", "wb") as log:
                workers.append(
                    subprocess.Popen([BFF, "beat"], cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
                )
    except BaseException:
        fleet.stop()
        raise
    return fleet


async def wait_ready(fleet: Fleet, limit_seconds: float = 120.0) -> None:
    """Every app process answers 200 on ``/readyz`` (its startup, the gate's rebuild included, is done)."""
    pending = set(zip(fleet.admin_ports, fleet.ports, strict=True))
    deadline = time.monotonic() + limit_seconds
    while pending:
        fleet.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"app not ready after {limit_seconds:.0f} s (logs in {fleet.log_dir})")
        for admin_port, port in list(pending):
            # The admin listener can answer a moment before the public one: both must (any answer proves the
            # public one listens).
            try:
                if await _status(admin_port, "/readyz") == 200 and await _status(port, "/readyz") is not None:
                    pending.discard((admin_port, port))
            except TransportError:
                pass
        if pending:
            await asyncio.sleep(0.3)


async def _status(port: int, path: str) -> int | None:
    pool = Pool([("127.0.0.1", port)], 1, timeout=5)
    try:
        async with pool.connection() as conn:
            return (await conn.send(build_request("GET", path, "127.0.0.1"))).status
    finally:
        await pool.close()


def profile_signal(fleet: Fleet, sig: signal.Signals) -> None:
    if fleet.profile_base is not None and fleet.apps:
        os.kill(fleet.apps[0].pid, sig)


def profile_dumped(fleet: Fleet, n: int, limit_seconds: float = 60.0) -> str | None:
    """Wait (blocking) until app process 0 has written its n-th profile; its path."""
    if fleet.profile_base is None:
        return None
    done = Path(f"{fleet.profile_base}.{n}.done")
    deadline = time.monotonic() + limit_seconds
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    done.unlink(missing_ok=True)
    return f"{fleet.profile_base}.{n}"


_ERROR_FIELDS = ("event", "error_type", "where", "path", "status", "exception", "error_code")


def app_log_summary(log_dir: Path) -> dict[str, object]:
    """What the app's JSON logs say about failures: records at error level (by event), 5xx access lines."""
    errors: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    samples: list[dict[str, str]] = []
    for path in sorted(log_dir.glob("*.log")):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if '"level"' not in line:
                    if "Traceback" in line:
                        errors[f"{path.stem}: traceback"] += 1
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(record, dict):
                    continue
                level = str(record.get("level", "")).lower()
                status = record.get("status")
                if record.get("event") == "request" and isinstance(status, int) and status >= 500:
                    statuses[status] += 1
                if level in ("error", "critical", "exception"):
                    errors[f"{path.stem.split('-')[0]}: {record.get('event')}"] += 1
                    sample = {k: str(record[k])[:200] for k in _ERROR_FIELDS if k in record}
                    if sample not in samples and len(samples) < 5:
                        samples.append(sample)
    return {"error_records": dict(errors.most_common(20)), "error_samples": samples, "access_5xx": dict(statuses)}


# --------------------------------------------------------------------------------------------- requests

_decoder = msgspec.json.Decoder()


def _problem(reply: Reply) -> tuple[str | None, str | None]:
    if reply.status < 400:
        return None, None
    try:
        body = _decoder.decode(reply.body)
    except msgspec.DecodeError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code, detail = body.get("code"), body.get("detail")
    return (str(code) if code is not None else None, str(detail) if detail is not None else None)


def _auth_headers(resident: Resident) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {resident.token}"), ("X-Forwarded-For", resident.address)]


def ping_request(resident: Resident) -> bytes:
    return build_request("GET", PING_PATH, "127.0.0.1", _auth_headers(resident))


def hold_request(resident: Resident, slot_id: str, key: str) -> bytes:
    body = json.dumps(
        {"patientId": resident.patient_id, "hospitalCode": HOSPITAL, "slotId": slot_id}, separators=(",", ":")
    ).encode()
    headers = [*_auth_headers(resident), ("Content-Type", "application/json"), ("Idempotency-Key", key)]
    return build_request("POST", HOLD_PATH, "127.0.0.1", headers, body)


@dataclass
class Sent:
    answer: Answer
    retry_after: float | None
    state: str | None = None


async def send(pool: Pool, request: bytes, t0: float) -> Sent:
    async with pool.connection() as conn:
        started = time.perf_counter() - t0
        try:
            reply = await conn.send(request)
        except TransportError as exc:
            return Sent(Answer(started, time.perf_counter() - t0, None, "transport", str(exc)[:200]), None)
    finished = time.perf_counter() - t0
    code, detail = _problem(reply)
    state = None
    if reply.status == 201:
        with contextlib.suppress(msgspec.DecodeError):
            body = _decoder.decode(reply.body)
            state = str(body.get("state")) if isinstance(body, dict) else None
    retry = retry_after_seconds(reply.headers.get("retry-after")) if reply.status == 429 else None
    return Sent(Answer(started, finished, reply.status, code, detail), retry, state)


def transport_errors(answers: Sequence[Answer]) -> dict[str, int]:
    return dict(Counter((a.detail or "?")[:80] for a in answers if a.status is None).most_common(5))


# --------------------------------------------------------------------------------------------- phases


@dataclass
class CpuLap:
    """CPU seconds per component during one phase: this load generator, the app processes, the workers and
    beat, PostgreSQL, Redis."""

    fleet: Fleet | None
    start: dict[str, float | None] = field(default_factory=dict)
    used: dict[str, float | None] = field(default_factory=dict)

    def _sample(self) -> dict[str, float | None]:
        sample: dict[str, float | None] = {
            "wall": time.perf_counter(),
            "machine_busy": machine_busy_seconds(),
            "loadgen": time.process_time(),
            "postgres": postgres_cpu_seconds(),
            "redis": cpu_of_named("redis-server"),
        }
        if self.fleet is not None:
            sample.update(self.fleet.cpu())
        return sample

    def __enter__(self) -> CpuLap:
        self.start = self._sample()
        return self

    def __exit__(self, *_exc: object) -> None:
        end = self._sample()
        for key, value in end.items():
            before = self.start.get(key)
            self.used[key] = None if value is None or before is None else value - before
        busy = self.used.get("machine_busy")
        ours = [self.used.get(k) for k in ("loadgen", "postgres", "redis", "app", "workers")]
        if busy is not None:
            # Everything else that ran on the machine meanwhile (another session's tests, say). PostgreSQL's
            # figure counts every database of the server, not only this benchmark's.
            self.used["others"] = busy - sum(v for v in ours if v is not None)


async def run_ping(pool: Pool, residents: Sequence[Resident], seconds: float) -> dict[str, Any]:
    """The framework ceiling: the cheapest authenticated resident route for ``seconds``, every request as the
    next resident (so that no per-account or per-address limit is met)."""
    loop = asyncio.get_running_loop()
    order = itertools.count()
    answers: list[Answer] = []
    t0 = time.perf_counter()
    deadline = loop.time() + seconds

    async def client() -> None:
        while loop.time() < deadline:
            resident = residents[next(order) % len(residents)]
            answers.append((await send(pool, ping_request(resident), t0)).answer)

    await asyncio.gather(*(client() for _ in range(len(pool.connections))))
    elapsed = time.perf_counter() - t0
    ok = sum(1 for a in answers if a.status == 200)
    in_window = sum(1 for a in answers if a.status == 200 and a.finished <= seconds)
    return {
        "path": PING_PATH,
        "requests": len(answers),
        "ok": ok,
        "not_ok": dict(Counter(f"{a.status}:{a.code or '-'}" for a in answers if a.status != 200)),
        "seconds": elapsed,
        "ping_rps": per_second(in_window, seconds),
        "errors_5xx": sum(1 for a in answers if a.status is not None and a.status >= 500),
        "latency": latency_summary([a.latency for a in answers if a.status == 200]),
    }


async def run_phase_a(
    pool: Pool, residents: Sequence[Resident], slots: Sequence[str], seconds: float
) -> dict[str, Any]:
    """Throughput: clients book as fast as they can, each booking by the next resident of the pool, slots taken
    round-robin (each has more numbers than the whole pool)."""
    loop = asyncio.get_running_loop()
    order = itertools.count()
    answers: list[Answer] = []
    states: Counter[str] = Counter()
    exhausted = False
    t0 = time.perf_counter()
    deadline = loop.time() + seconds

    async def client() -> None:
        nonlocal exhausted
        while loop.time() < deadline:
            i = next(order)
            if i >= len(residents):
                exhausted = True
                return
            sent = await send(pool, hold_request(residents[i], slots[i % len(slots)], new_id()), t0)
            answers.append(sent.answer)
            if sent.state is not None:
                states[sent.state] += 1

    await asyncio.gather(*(client() for _ in range(len(pool.connections))))
    elapsed = time.perf_counter() - t0
    verdicts = count_verdicts(answers)
    window = min(seconds, elapsed)  # a pool used up early ends the window with it
    in_window = sum(1 for a in answers if a.verdict is Verdict.BOOKED and a.finished <= window)
    return {
        "requests": len(answers),
        "booked": verdicts[Verdict.BOOKED.value],
        "booked_in_window": in_window,
        "states_answered": dict(states),
        "verdicts": verdicts,
        "refusals": refusal_codes(answers),
        "transport_errors": transport_errors(answers),
        "seconds": elapsed,
        "booking_tps": per_second(in_window, window),
        "pool_exhausted": exhausted,
        "errors_5xx": sum(1 for a in answers if a.status is not None and a.status >= 500),
        "latency": latency_summary([a.latency for a in answers if a.verdict is Verdict.BOOKED]),
    }


async def run_phase_b(
    pool: Pool,
    residents: Sequence[Resident],
    plan: Plan,
    policy: ClientPolicy,
    seed: int,
    limit_seconds: float,
) -> dict[str, Any]:
    """The storm: every resident released at the same instant, each trying as :class:`ClientPolicy` says."""
    slots = plan.slots_b
    session_of = plan.session_of()
    firsts = first_choices(len(residents), slots, seed)
    answers: list[Answer] = []
    outcomes: Counter[str] = Counter()
    states: Counter[str] = Counter()
    release = asyncio.Event()
    t0 = 0.0

    async def resident(i: int) -> None:
        person = residents[i]
        rng = random.Random(seed * 1_000_003 + i)
        state = ResidentTry(session_slots=session_of[firsts[i]])
        step: Try | Wait | Done = state.start(firsts[i])
        key = ""
        await release.wait()
        while True:
            if isinstance(step, Done):
                outcomes[step.outcome.value] += 1
                return
            if isinstance(step, Wait):
                await asyncio.sleep(step.seconds)
                step = after_wait(state)
                continue
            if step.new_key:
                key = new_id()
            sent = await send(pool, hold_request(person, step.slot_id, key), t0)
            answers.append(sent.answer)
            if sent.state is not None:
                states[sent.state] += 1
            step = next_step(policy, state, sent.answer.verdict, sent.retry_after, rng)

    tasks = [asyncio.create_task(resident(i)) for i in range(len(residents))]
    await asyncio.sleep(0)  # every resident is waiting for the release
    t0 = time.perf_counter()
    release.set()
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), limit_seconds)
    except TimeoutError:
        timed_out = True
    elapsed = time.perf_counter() - t0
    verdicts = count_verdicts(answers)
    admitted = [a.latency for a in answers if past_gate(a.status, a.code, a.detail)]
    gated = [a.latency for a in answers if not past_gate(a.status, a.code, a.detail) and a.status is not None]
    sold_out_at, sold_out_rps, after = sold_out_window(answers, plan.capacity_b)
    return {
        "answers": answers,
        "requests": len(answers),
        "verdicts": verdicts,
        "outcomes": dict(sorted(outcomes.items())),
        "states_answered": dict(states),
        "refusals": refusal_codes(answers),
        "transport_errors": transport_errors(answers),
        "seconds": elapsed,
        "timed_out": timed_out,
        "time_to_sold_out_s": sold_out_at,
        "sold_out_rps": sold_out_rps,
        "sold_out_answers_after": after,
        "past_gate": latency_summary(admitted),
        "gate_refused": latency_summary(gated),
        "all": latency_summary([a.latency for a in answers if a.status is not None]),
        "requests_per_s": per_second(len(answers), elapsed),
    }


# --------------------------------------------------------------------------------------------- counting


async def read_rows(owner_url: str) -> tuple[list[SlotRow], list[BookingRow]]:
    engine = create_engine(DatabaseConfig(url=owner_url, pool_size=1, max_overflow=0))
    try:
        async with engine.connect() as conn:
            slot_rows = [
                SlotRow(r.hospital_code, r.id, int(r.capacity), int(r.taken))
                for r in await conn.execute(
                    sa.select(
                        clinic_slots.c.hospital_code, clinic_slots.c.id, clinic_slots.c.capacity, clinic_slots.c.taken
                    ).where(clinic_slots.c.hospital_code == HOSPITAL)
                )
            ]
            b = bookings.c
            booking_rows = [
                BookingRow(r.id, r.person_id, r.hospital_code, r.department_code, r.slot_id, r.visit_day, r.state)
                for r in await conn.execute(
                    sa.select(b.id, b.person_id, b.hospital_code, b.department_code, b.slot_id, b.visit_day, b.state)
                )
            ]
        return slot_rows, booking_rows
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------------------------- the run


async def drive(fleet: Fleet, plan: Plan, opts: Options, timings: dict[str, float]) -> dict[str, Any]:
    started = time.perf_counter()
    await wait_ready(fleet)
    timings["app_start"] = time.perf_counter() - started
    pool = Pool([("127.0.0.1", p) for p in fleet.ports], opts.concurrency, timeout=60)
    cpu: dict[str, dict[str, float | None]] = {}
    profiles: dict[str, str | None] = {}
    try:
        await pool.warm()
        residents = plan.residents
        b_residents = residents[: opts.patients]
        a_residents = residents[opts.patients : opts.patients + opts.phase_a_pool]
        ping_residents = residents[opts.patients + opts.phase_a_pool :]
        profile_signal(fleet, signal.SIGUSR1)
        with CpuLap(fleet) as lap:
            ping = await run_ping(pool, ping_residents, opts.baseline_seconds)
        cpu["ping"] = lap.used
        profile_signal(fleet, signal.SIGUSR2)
        profiles["ping"] = await asyncio.to_thread(profile_dumped, fleet, 1)
        timings["ping"] = ping["seconds"]
        fleet.check_alive()

        profile_signal(fleet, signal.SIGUSR1)
        with CpuLap(fleet) as lap:
            phase_a = await run_phase_a(pool, a_residents, plan.slots_a, opts.duration)
        cpu["phase_a"] = lap.used
        profile_signal(fleet, signal.SIGUSR2)
        profiles["phase_a"] = await asyncio.to_thread(profile_dumped, fleet, 2)
        timings["phase_a"] = phase_a["seconds"]
        fleet.check_alive()

        await asyncio.sleep(1.0)  # let phase A's last commits and gate reports settle
        profile_signal(fleet, signal.SIGUSR1)
        with CpuLap(fleet) as lap:
            phase_b = await run_phase_b(pool, b_residents, plan, ClientPolicy(), opts.seed, opts.phase_b_timeout)
        cpu["phase_b"] = lap.used
        profile_signal(fleet, signal.SIGUSR2)
        profiles["phase_b"] = await asyncio.to_thread(profile_dumped, fleet, 3)
        timings["phase_b"] = phase_b["seconds"]
    finally:
        await pool.close()
    client = {"stale_connection_retries": sum(c.stale_retries for c in pool.connections)}
    return {
        "ping": ping,
        "phase_a": phase_a,
        "phase_b": phase_b,
        "cpu_s": cpu,
        "profiles": profiles,
        "client": client,
    }


def cleanup_redis(tag: str) -> int:
    """Delete the keys this run left in Redis: the app's prefix and the Celery queue's own keys."""

    async def _clean() -> int:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL)
        deleted = 0
        try:
            for pattern in (f"hsp-storm:{tag}:*", f"hsp-storm-{tag}*", f"_kombu.binding.hsp-storm-{tag}*"):
                keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
                for start in range(0, len(keys), 1000):
                    deleted += int(await client.delete(*keys[start : start + 1000]))
        finally:
            await client.aclose()
        return deleted

    return asyncio.run(_clean())


def run(opts: Options) -> dict[str, Any]:
    before = machine()
    timings: dict[str, float] = {}
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    name = f"hsp_load_storm_{os.getpid()}"
    today = datetime.now(UTC).astimezone(SHANGHAI).date()
    plan = make_plan(opts, today)
    keys = Keys.generate()
    suite = keys.suite()
    data_dir = Path(tempfile.mkdtemp(prefix="hsp-storm-"))
    log_dir = data_dir / "logs"
    log_dir.mkdir()
    total_start = time.perf_counter()
    fleet: Fleet | None = None
    db: BenchDatabase | None = None
    try:
        t = time.perf_counter()
        db = create_benchmark_database(name)
        timings["create_db"] = time.perf_counter() - t

        async def _seed() -> list[Resident]:
            assert db is not None
            engine = create_engine(DatabaseConfig(url=db.owner_url, pool_size=2, max_overflow=0))
            try:
                now = datetime.now(UTC)
                await seed_catalogue(engine, plan, now)
                residents = await seed_residents(
                    engine, suite, keys.tokens(), opts.patients + opts.phase_a_pool + PING_RESIDENTS, now
                )
                await check_seed(engine, suite, residents[0])
                async with engine.begin() as conn:
                    await conn.execute(sa.text("ANALYZE"))
                return residents
            finally:
                await engine.dispose()

        t = time.perf_counter()
        plan.residents = asyncio.run(_seed())
        timings["seed"] = time.perf_counter() - t

        t = time.perf_counter()
        with CpuLap(None) as lap:
            pgbench: PgbenchResult | None = None
            pgbench_error: str | None = None
            inserted = taken = 0
            try:
                pgbench, inserted, taken = pgbench_baseline(db, plan, opts.pgbench_clients, opts.baseline_seconds)
            except PgbenchError as exc:
                pgbench_error = str(exc)
        cpu_pgbench = lap.used
        timings["pgbench"] = time.perf_counter() - t

        t = time.perf_counter()
        with CpuLap(None) as lap:
            gate = gate_baseline(opts.slots, ops=100_000)
        cpu_gate = lap.used
        timings["redis_gate"] = time.perf_counter() - t

        env = app_env(db, keys, tag, data_dir, opts.log_level) | opts.app_settings
        fleet = start_fleet(env, opts, log_dir)
        driven = asyncio.run(drive(fleet, plan, opts, timings))
        t = time.perf_counter()
        fleet.stop()
        timings["app_stop"] = time.perf_counter() - t

        t = time.perf_counter()
        slot_rows, booking_rows = asyncio.run(read_rows(db.owner_url))
        timings["count"] = time.perf_counter() - t
    finally:
        if fleet is not None:
            fleet.stop()
        log_summary = app_log_summary(log_dir)
        if opts.keep_logs:
            shutil.copytree(log_dir, opts.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(data_dir, ignore_errors=True)
        redis_deleted = cleanup_redis(tag)
        if db is not None and not opts.keep_db:
            drop_benchmark_database(name)
    timings["total"] = time.perf_counter() - total_start
    return assemble(
        opts,
        plan,
        driven,
        slot_rows,
        booking_rows,
        pgbench=pgbench,
        pgbench_error=pgbench_error,
        pgbench_rows=(inserted, taken),
        gate=gate,
        fleet=fleet,
        cpu_baselines={"pgbench": cpu_pgbench, "redis_gate": cpu_gate},
        timings=timings,
        log_summary=log_summary,
        redis_deleted=redis_deleted,
        database=name if opts.keep_db else None,
        machine_before=before,
    )


def assemble(
    opts: Options,
    plan: Plan,
    driven: Mapping[str, Any],
    slot_rows: Sequence[SlotRow],
    booking_rows: Sequence[BookingRow],
    *,
    pgbench: PgbenchResult | None,
    pgbench_error: str | None,
    pgbench_rows: tuple[int, int],
    gate: GateBaseline,
    fleet: Fleet | None,
    cpu_baselines: Mapping[str, Mapping[str, float | None]],
    timings: Mapping[str, float],
    log_summary: Mapping[str, object],
    redis_deleted: int,
    database: str | None,
    machine_before: Mapping[str, object],
) -> dict[str, Any]:
    ping, phase_a, phase_b = driven["ping"], driven["phase_a"], driven["phase_b"]
    answers: list[Answer] = phase_b.pop("answers")
    b_slots = set(plan.slots_b)
    counters = correctness(slot_rows, booking_rows)
    booked_b = sum(1 for b in booking_rows if b.slot_id in b_slots and b.state in LIVE_STATES)
    booked_a = sum(1 for b in booking_rows if b.slot_id not in b_slots and b.state in LIVE_STATES)
    verdicts = phase_b["verdicts"]
    pgbench_tps = pgbench.tps if pgbench else None
    booking_tps = phase_a["booking_tps"]
    sold_out_rps = phase_b["sold_out_rps"]
    ping_rps = ping["ping_rps"]
    all_5xx = sum(1 for a in answers if a.status is not None and a.status >= 500)
    figures: dict[str, Any] = {
        "benchmark": "storm",
        "date": datetime.now(UTC).date().isoformat(),
        "requests": phase_b["requests"],
        "booked": booked_b,
        "capacity": plan.capacity_b,
        "oversold": counters["oversold"],
        "duplicate_bookings": counters["duplicate_bookings"],
        "rejected_sold_out": verdicts[Verdict.FULL.value],
        "throttled_429": verdicts[Verdict.THROTTLED.value],
        "errors_5xx": all_5xx + phase_a["errors_5xx"] + ping["errors_5xx"],
        "p50_ms": phase_b["past_gate"]["p50_ms"],
        "p95_ms": phase_b["past_gate"]["p95_ms"],
        "p99_ms": phase_b["past_gate"]["p99_ms"],
        "time_to_sold_out_s": phase_b["time_to_sold_out_s"],
        "booking_tps": booking_tps,
        "sold_out_rps": sold_out_rps,
        "pgbench_tps": pgbench_tps,
        "redis_gate_ops": gate.ops_per_s,
        "ping_rps": ping_rps,
        "booking_tps_per_pgbench_tps": ratio(booking_tps, pgbench_tps),
        "sold_out_rps_per_ping_rps": ratio(sold_out_rps, ping_rps),
    }
    checks = targets(figures)
    figures["targets"] = checks
    figures["hard_targets_met"] = hard_targets_met(checks)
    figures["correctness"] = {
        **counters,
        "booked_phase_a": booked_a,
        "booked_answered_201": verdicts[Verdict.BOOKED.value],
        # Bookings the database holds whose 201 never reached the client (an answer lost on a dropped
        # connection, a request that failed after its commit): the resident does not know it holds a number.
        "bookings_without_201": (booked_a - phase_a["booked"]) + (booked_b - verdicts[Verdict.BOOKED.value]),
        "transport_errors": verdicts[Verdict.TRANSPORT.value],
        "client_stale_connection_retries": driven["client"]["stale_connection_retries"],
    }
    figures["options"] = {
        "patients": opts.patients,
        "slots": opts.slots,
        "concurrency": opts.concurrency,
        "duration": opts.duration,
        "app_processes": opts.app_processes,
        "workers": opts.workers,
        "phase_a_pool": opts.phase_a_pool,
        "baseline_seconds": opts.baseline_seconds,
        "pgbench_clients": opts.pgbench_clients,
        "log_level": opts.log_level,
        "app_settings": opts.app_settings,
    }
    figures["app"] = {
        "listeners": f"{opts.app_processes} bff serve processes on ports {fleet.ports if fleet else []}",
        "why": LISTENERS_NOTE,
        "workers": f"{opts.workers} x bff worker --pool solo, 1 bff beat (Redis broker)" if opts.workers else None,
        "env": "HSP_ENV=test, HSP_CLOCK__MODE=system, HSP_SANDBOX__MOUNT=false, default pools and rate limits",
        "log": log_summary,
    }
    figures["ping"] = ping
    figures["phase_a"] = phase_a
    figures["phase_b"] = phase_b
    figures["pgbench"] = {
        "tps": pgbench_tps,
        "clients": opts.pgbench_clients,
        "seconds": opts.baseline_seconds,
        "transactions": pgbench.transactions if pgbench else None,
        "failed": pgbench.failed if pgbench else None,
        "latency_ms": pgbench.latency_ms if pgbench else None,
        "bookings_inserted": pgbench_rows[0],
        "numbers_taken": pgbench_rows[1],
        "error": pgbench_error,
    }
    figures["redis_gate"] = {
        "ops_per_s": gate.ops_per_s,
        "ops": gate.ops,
        "admitted": gate.admitted,
        "expected_admitted": gate.expected_admitted,
        "sold_out": gate.sold_out,
        "unknown": gate.unknown,
        "concurrency": 16,
        "pipeline": 32,
    }
    figures["cpu_s"] = {**driven["cpu_s"], **cpu_baselines}
    figures["cpu_ms_per_request"] = {
        phase: {
            k: 1000 * v / requests
            for k, v in driven["cpu_s"][phase].items()
            if v is not None and requests and k not in ("wall", "machine_busy")
        }
        for phase, requests in (
            ("ping", ping["requests"]),
            ("phase_a", phase_a["requests"]),
            ("phase_b", phase_b["requests"]),
        )
    }
    per_request = figures["cpu_ms_per_request"]
    ping_app, storm_app = per_request["ping"].get("app"), per_request["phase_b"].get("app")
    # What the ratio would be if the app processes' CPU were the only limit (it is on this machine): free of the
    # load other processes put on the cores during one phase and not the other.
    figures["sold_out_per_ping_by_app_cpu"] = ratio(ping_app, storm_app)
    figures["profiles"] = driven["profiles"]
    figures["timings_s"] = dict(timings)
    figures["cleanup"] = {"redis_keys_deleted": redis_deleted, "database_kept": database}
    figures["machine"] = {
        **machine_before,
        "load_1m_after": machine()["load_1m"],
        "postgres": postgres_version(),
    }
    return figures


def summary(f: Mapping[str, Any]) -> str:
    def num(value: object, fmt: str = ".1f") -> str:
        return format(value, fmt) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)

    lines = [
        f"storm  {f['date']}  patients={f['options']['patients']} slots={f['options']['slots']} "
        f"concurrency={f['options']['concurrency']} app_processes={f['options']['app_processes']}",
        f"  phase B: requests {f['requests']}, booked {f['booked']}/{f['capacity']}, oversold {f['oversold']}, "
        f"duplicates {f['duplicate_bookings']}, full {f['rejected_sold_out']}, 429 {f['throttled_429']}, "
        f"5xx {f['errors_5xx']}",
        f"  past the gate p50/p95/p99 {num(f['p50_ms'])}/{num(f['p95_ms'])}/{num(f['p99_ms'])} ms, "
        f"sold out after {num(f['time_to_sold_out_s'], '.2f')} s, then {num(f['sold_out_rps'])} full answers/s",
        f"  phase A: {num(f['booking_tps'])} bookings/s  vs pgbench {num(f['pgbench_tps'])} tps  "
        f"-> {num(f['booking_tps_per_pgbench_tps'], '.3f')}",
        f"  ping {num(f['ping_rps'])} rps -> sold_out/ping {num(f['sold_out_rps_per_ping_rps'], '.3f')}; "
        f"redis gate {num(f['redis_gate_ops'], '.0f')} ops/s",
        "  targets: "
        + ", ".join(
            f"{name} {'ok' if c['met'] else 'MISSED' if c['met'] is False else '?'}" for name, c in f["targets"].items()
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m load.storm", description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000, help="residents released in phase B")
    parser.add_argument("--slots", type=int, default=500, help="phase B slots, capacity one each")
    parser.add_argument("--concurrency", type=int, default=256, help="client connections")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of phase A")
    parser.add_argument("--app-processes", type=int, default=2, help="bff serve processes")
    parser.add_argument("--workers", type=int, default=2, help="bff worker processes (0: no worker, no beat)")
    parser.add_argument(
        "--phase-a-pool",
        type=int,
        default=None,
        help="residents kept for phase A, one booking each (default: max(2000, 500 x duration))",
    )
    parser.add_argument("--baseline-seconds", type=int, default=10, help="length of pgbench and of the ping")
    parser.add_argument(
        "--pgbench-clients",
        type=int,
        default=None,
        help="pgbench clients (default: the connections the app processes may open, 20 each)",
    )
    parser.add_argument("--phase-b-timeout", type=float, default=600.0, help="stop phase B after this long")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--keep-db", action="store_true", help="leave the benchmark database behind")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the app's logs to DIR")
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile app process 0: FILE.1 ping, FILE.2 phase A, FILE.3 phase B"
    )
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the residents' slot choices")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="HSP_NAME=VALUE",
        help="an extra setting for the app's processes (repeatable), e.g. HSP_DB__POOL_SIZE=20",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    ns = parser.parse_args(argv)
    settings: dict[str, str] = {}
    for item in ns.set:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("HSP_"):
            parser.error(f"--set wants HSP_NAME=VALUE, not {item!r}")
        settings[name] = value
    pool = ns.phase_a_pool if ns.phase_a_pool is not None else max(2000, int(500 * ns.duration))
    pg_clients = ns.pgbench_clients or ns.app_processes * sum(APP_POOL)
    if min(ns.patients, ns.slots, ns.concurrency, ns.app_processes, pool, pg_clients, ns.baseline_seconds) < 1:
        parser.error("counts and lengths must be positive")
    if ns.duration <= 0 or ns.workers < 0:
        parser.error("--duration must be positive, --workers not negative")
    if ns.patients + pool + PING_RESIDENTS > 2**17:
        parser.error("at most 131072 residents in all (one distinct address each)")
    if shutil.which("pgbench") is None:
        parser.error("pgbench is not on the PATH")
    return Options(
        patients=ns.patients,
        slots=ns.slots,
        concurrency=ns.concurrency,
        duration=ns.duration,
        app_processes=ns.app_processes,
        workers=ns.workers,
        phase_a_pool=pool,
        baseline_seconds=ns.baseline_seconds,
        pgbench_clients=pg_clients,
        phase_b_timeout=ns.phase_b_timeout,
        log_level=ns.log_level,
        keep_db=ns.keep_db,
        keep_logs=ns.keep_logs,
        profile=ns.profile,
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
    return 0 if figures["hard_targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
