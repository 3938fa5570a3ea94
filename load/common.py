"""Helpers shared by the benchmarks under ``load/``: a fresh migrated database, pgbench and redis-benchmark
baselines, ratios, JSON output and the dated rows of ``load/RESULTS.md``.

Nothing here imports ``tests/``: the benchmark database is built the way the integration suite builds its own
(every migration as the owner, used through the limited application role), but by this module.

``LOAD_PG_ADMIN_URL`` (a superuser or CREATEDB/CREATEROLE login) and ``LOAD_REDIS_URL`` override the defaults.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bootstrap.migrate import upgrade

PG_ADMIN_URL = os.environ.get("LOAD_PG_ADMIN_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("LOAD_REDIS_URL", "redis://127.0.0.1:6379/0")
APP_ROLE = "hsp_app"


# --------------------------------------------------------------------------------------------- databases


@dataclass(frozen=True, slots=True)
class BenchDatabase:
    name: str
    owner_url: str
    """SQLAlchemy URL (asyncpg) as the schema owner."""
    app_url: str
    """SQLAlchemy URL (asyncpg) as the application role, with only the rights the migrations grant it."""

    @property
    def libpq_url(self) -> str:
        """The owner URL as a libpq connection URI, for pgbench and psql."""
        return libpq_url(self.owner_url)


def with_database(url: str, database: str, *, user: str | None = None) -> str:
    parsed = sa.make_url(url).set(database=database)
    if user is not None:
        parsed = parsed.set(username=user, password=None)
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """``postgresql+asyncpg://u@h:p/db`` -> ``postgresql://u@h:p/db`` (what libpq tools accept as DBNAME)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _quote_ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{name}"'


async def _execute(url: str, statements: Sequence[str]) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


def create_benchmark_database(name: str, *, admin_url: str = PG_ADMIN_URL, app_role: str = APP_ROLE) -> BenchDatabase:
    """Create (anew) database ``name`` migrated to head, usable by ``app_role``.

    Blocking, and it runs event loops of its own (the migrations do): call it outside a running loop.
    """
    db = _quote_ident(name)
    role = _quote_ident(app_role)
    asyncio.run(
        _execute(
            admin_url,
            [
                f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{app_role}') "
                f"THEN CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; END IF; END $$",
                f"DROP DATABASE IF EXISTS {db} WITH (FORCE)",
                f"CREATE DATABASE {db}",
                f"GRANT CONNECT, TEMP ON DATABASE {db} TO {role}",
            ],
        )
    )
    owner_url = with_database(admin_url, name)
    upgrade(owner_url, app_role=app_role)
    asyncio.run(_execute(owner_url, [f"GRANT USAGE ON SCHEMA public TO {role}"]))
    return BenchDatabase(name=name, owner_url=owner_url, app_url=with_database(admin_url, name, user=app_role))


def drop_benchmark_database(name: str, *, admin_url: str = PG_ADMIN_URL) -> None:
    """Drop database ``name`` (closing its sessions). Blocking; call it outside a running loop."""
    asyncio.run(_execute(admin_url, [f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)"]))


def postgres_version(admin_url: str = PG_ADMIN_URL) -> str:
    async def _read() -> str:
        engine = create_async_engine(admin_url)
        try:
            async with engine.connect() as conn:
                return str(await conn.scalar(sa.text("SHOW server_version")))
        finally:
            await engine.dispose()

    return asyncio.run(_read())


# --------------------------------------------------------------------------------------------- pgbench


@dataclass(frozen=True, slots=True)
class PgbenchResult:
    tps: float
    """Script executions per second, without the initial connection time."""
    transactions: int | None = None
    failed: int | None = None
    latency_ms: float | None = None
    clients: int | None = None
    threads: int | None = None


_TPS = re.compile(r"^tps = ([0-9.]+) \((.*)\)\s*$", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_CLIENTS = re.compile(r"^number of clients: (\d+)", re.MULTILINE)
_THREADS = re.compile(r"^number of threads: (\d+)", re.MULTILINE)


def parse_pgbench_output(text: str) -> PgbenchResult:
    """Read pgbench's summary. PostgreSQL 14+ prints one ``tps = N (without initial connection time)``; older
    versions print ``including connections establishing`` and ``excluding ...``: the latter is taken."""
    found = _TPS.findall(text)
    if not found:
        raise ValueError("no 'tps = ...' line in pgbench output")
    tps = next((float(v) for v, how in found if "without" in how or "excluding" in how), float(found[-1][0]))

    def _int(pattern: re.Pattern[str]) -> int | None:
        match = pattern.search(text)
        return int(match.group(1)) if match else None

    latency = _LATENCY.search(text)
    return PgbenchResult(
        tps=tps,
        transactions=_int(_PROCESSED),
        failed=_int(_FAILED),
        latency_ms=float(latency.group(1)) if latency else None,
        clients=_int(_CLIENTS),
        threads=_int(_THREADS),
    )


class PgbenchError(RuntimeError):
    pass


def run_pgbench(
    url: str,
    script_file: Path,
    *,
    clients: int,
    seconds: int,
    threads: int | None = None,
    defines: Mapping[str, str | int] | None = None,
    protocol: str = "prepared",
) -> PgbenchResult:
    """Run ``pgbench -n -f script_file`` for ``seconds`` with ``clients`` against ``url`` (SQLAlchemy or libpq URL).

    ``threads`` defaults to min(clients, cores). Raises PgbenchError if pgbench fails or aborts a client.
    """
    binary = shutil.which("pgbench")
    if binary is None:
        raise PgbenchError("pgbench is not installed")
    jobs = threads or max(1, min(clients, os.cpu_count() or 1))
    command = [binary, "-n", "-M", protocol, "-f", str(script_file), "-c", str(clients), "-j", str(jobs)]
    command += ["-T", str(seconds)]
    for name, value in (defines or {}).items():
        command += ["-D", f"{name}={value}"]
    command.append(libpq_url(url))
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 120)
    if done.returncode != 0:
        raise PgbenchError(f"pgbench exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return parse_pgbench_output(done.stdout)


# --------------------------------------------------------------------------------------------- redis-benchmark


def parse_redis_benchmark_csv(text: str) -> dict[str, float]:
    """``redis-benchmark --csv`` -> {test: requests per second}. Reads the headed CSV of Redis 6+ and the bare
    ``"SET","12345.67"`` rows of older versions."""
    rates: dict[str, float] = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) < 2 or row[0] == "test":
            continue
        try:
            rates[row[0]] = float(row[1])
        except ValueError:
            continue
    return rates


def run_redis_benchmark(
    url: str = REDIS_URL,
    *,
    tests: Sequence[str] = ("set", "get"),
    requests: int = 100_000,
    clients: int = 50,
    pipeline: int = 1,
) -> dict[str, float]:
    """Requests per second per test, from ``redis-benchmark`` against the Redis at ``url``."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError("redis-benchmark is not installed")
    parsed = sa.make_url(url)
    command = [binary, "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 6379)]
    if parsed.password:
        command += ["-a", str(parsed.password)]
    if parsed.database:
        command += ["--dbnum", str(parsed.database)]
    command += ["-t", ",".join(tests), "-n", str(requests), "-c", str(clients), "-P", str(pipeline), "-q", "--csv"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"redis-benchmark exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return parse_redis_benchmark_csv(done.stdout)


# --------------------------------------------------------------------------------------------- figures


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline``: what fraction of the bare database's rate the code reaches. None when either is
    missing, the baseline is not positive, or a figure is not finite."""
    if value is None or baseline is None:
        return None
    if not (math.isfinite(value) and math.isfinite(baseline)) or baseline <= 0:
        return None
    return value / baseline


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def postgres_cpu_seconds() -> float | None:
    """CPU seconds used so far by the local PostgreSQL server: its live processes plus the children the
    postmaster has reaped. Linux only (``/proc``); None elsewhere or when no server process is visible."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    seen = False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.find("(") + 1 : text.rfind(")")]
        if name != "postgres" and not name.startswith("postgres:"):
            continue
        fields = text[text.rfind(")") + 2 :].split()
        # fields[0] is the state (field 3 of proc(5)); utime, stime, cutime, cstime are fields 14-17.
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        total += utime + stime + cutime + cstime
        seen = True
    return total / ticks if seen else None


@dataclass
class Stopwatch:
    """Named laps: ``with watch.lap("seed"): ...``. ``laps`` holds wall seconds, ``cpu`` this process's CPU
    seconds and ``db_cpu`` the local PostgreSQL server's (when it can be read) during each lap."""

    laps: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    db_cpu: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def lap(self, name: str) -> Iterator[None]:
        start, cpu_start, db_start = time.perf_counter(), time.process_time(), postgres_cpu_seconds()
        try:
            yield
        finally:
            self.laps[name] = self.laps.get(name, 0.0) + time.perf_counter() - start
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu_start
            db_end = postgres_cpu_seconds()
            if db_start is not None and db_end is not None:
                self.db_cpu[name] = self.db_cpu.get(name, 0.0) + db_end - db_start


def rounded(value: object, digits: int = 3) -> object:
    """The value with every float rounded (recursively through mappings and sequences), for output."""
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


def to_json(figures: Mapping[str, object], *, digits: int = 3) -> str:
    """One JSON object on one line, floats rounded."""
    return json.dumps(rounded(figures, digits), ensure_ascii=False, default=str)


def emit_json(figures: Mapping[str, object], *, digits: int = 3) -> None:
    print(to_json(figures, digits=digits), flush=True)


def machine() -> dict[str, object]:
    """The machine, with its 1-minute load average: a busy neighbour (another test run) halves a 2-core figure."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cores": os.cpu_count(),
        "load_1m": load,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def dated_results_row(
    day: date | str,
    benchmark: str,
    command: str,
    figures: Mapping[str, object],
    *,
    keys: Sequence[str] | None = None,
    note: str = "",
) -> str:
    """One row of the table in ``load/RESULTS.md``: ``| date | benchmark | `command` | k=v, ... | note |``.

    ``keys`` picks and orders the figures shown (all of them by default); floats are rounded to 3 places.
    """
    shown = keys if keys is not None else list(figures)
    pairs = ", ".join(f"{k}={json.dumps(rounded(figures[k]), default=str)}" for k in shown if k in figures)
    day_text = day.isoformat() if isinstance(day, date) else day
    return f"| {_cell(day_text)} | {_cell(benchmark)} | `{_cell(command)}` | {_cell(pairs)} | {_cell(note)} |"


RESULTS_HEADER = "| date | benchmark | command | figures | note |\n|---|---|---|---|---|"
