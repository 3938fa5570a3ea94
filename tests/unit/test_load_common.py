"""The benchmark helpers' arithmetic (load/common.py): reading pgbench's summary and the code-to-database ratio.
No benchmark runs here."""

from __future__ import annotations

import math

import pytest

from load.common import parse_pgbench_output, ratio

PG15 = """\
pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: /tmp/hsp-load-x/deliver.sql
scaling factor: 1
query mode: prepared
number of clients: 16
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 17767
number of failed transactions: 0 (0.000%)
latency average = 8.995 ms
initial connection time = 31.112 ms
tps = 1778.795321 (without initial connection time)
"""

PG13 = """\
transaction type: deliver.sql
scaling factor: 1
query mode: simple
number of clients: 4
number of threads: 2
duration: 10 s
number of transactions actually processed: 5000
latency average = 8.000 ms
tps = 498.123456 (including connections establishing)
tps = 500.654321 (excluding connections establishing)
"""


def test_pgbench_15_summary() -> None:
    result = parse_pgbench_output(PG15)
    assert result.tps == pytest.approx(1778.795321)
    assert (result.transactions, result.failed, result.clients, result.threads) == (17767, 0, 16, 2)
    assert result.latency_ms == pytest.approx(8.995)


def test_older_pgbench_reports_the_rate_excluding_connection_setup() -> None:
    result = parse_pgbench_output(PG13)
    assert result.tps == pytest.approx(500.654321)
    assert result.transactions == 5000
    assert result.failed is None, "no failure line before PostgreSQL 15"


def test_a_bare_tps_line_is_enough() -> None:
    result = parse_pgbench_output("tps = 42.5 (something else)\n")
    assert result.tps == pytest.approx(42.5)
    assert result.transactions is None


@pytest.mark.parametrize("text", ["", "pgbench: error: connection failed\n", "latency average = 1.0 ms\n"])
def test_output_without_tps_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="tps"):
        parse_pgbench_output(text)


@pytest.mark.parametrize(
    ("value", "baseline", "expected"),
    [(500.0, 2000.0, 0.25), (2000.0, 2000.0, 1.0), (3000.0, 1500.0, 2.0), (0.0, 100.0, 0.0)],
)
def test_ratio_is_value_over_baseline(value: float, baseline: float, expected: float) -> None:
    assert ratio(value, baseline) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "baseline"),
    [(100.0, 0.0), (100.0, -1.0), (None, 100.0), (100.0, None), (math.nan, 100.0), (100.0, math.inf)],
)
def test_ratio_without_a_usable_baseline_is_none(value: float | None, baseline: float | None) -> None:
    assert ratio(value, baseline) is None
