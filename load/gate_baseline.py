"""The Redis baseline of the booking storm (DESIGN §7): Redis running the slot gate's own admit script.

``--slots`` slots get ``--remaining`` numbers each (through ``RedisSlotGate.set_remaining``, as the rebuild
writes them); then ``--ops`` admits, spread round-robin over the slots, run the registered Lua script of
``persistence.ephemeral.slot_gate`` with ``--concurrency`` coroutines, each sending ``--pipeline`` script calls
per round trip (1: one round trip per admit). Like the storm, most admits find their slot sold out. Only the
admits are timed; the keys are deleted afterwards.

    python -m load.gate_baseline --json
    python -m load.gate_baseline --ops 20000 --pipeline 1

Exit status 1 when more or fewer admits passed than the slots had numbers, or any answered unknown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from domain.booking.gate import slot_key
from load.common import REDIS_URL, emit_json, machine, per_second
from persistence.ephemeral.slot_gate import RedisSlotGate


@dataclass(frozen=True, slots=True)
class GateBaseline:
    ops: int
    seconds: float
    ops_per_s: float
    admitted: int
    sold_out: int
    unknown: int
    expected_admitted: int
    """What the slots had: ``sum(min(remaining, admits on the slot))``."""

    @property
    def healthy(self) -> bool:
        return self.admitted == self.expected_admitted and self.unknown == 0


def expected_admitted(ops: int, slots: int, remaining: int) -> int:
    per_slot, extra = divmod(ops, slots)
    return sum(min(remaining, per_slot + (1 if i < extra else 0)) for i in range(slots))


async def run_gate_baseline(
    url: str = REDIS_URL,
    *,
    ops: int,
    slots: int,
    remaining: int,
    concurrency: int,
    pipeline: int,
    prefix: str | None = None,
) -> GateBaseline:
    """Run ``ops`` admits of the gate's Lua script against the Redis at ``url``; returns the rate and counts."""
    if min(ops, slots, concurrency, pipeline) < 1 or remaining < 0:
        raise ValueError("ops, slots, concurrency and pipeline must be positive, remaining not negative")
    prefix = prefix or f"hsp-load:{os.getpid()}:{secrets.token_hex(4)}:"
    gate = RedisSlotGate.from_url(url, prefix=prefix, ticket_seconds=3600, socket_timeout=10)
    keys = [gate.keys(slot_key("BENCH", f"S-{i}")) for i in range(slots)]
    script = gate.admit_script
    counts = {1: 0, 0: 0, -1: 0}

    async def worker(first: int) -> None:
        mine = range(first, ops, concurrency)
        for start in range(0, len(mine), pipeline):
            batch = mine[start : start + pipeline]
            if pipeline == 1:
                op = batch[0]
                results = [await script(keys=keys[op % slots], args=gate.admit_args(secrets.token_hex(8)))]
            else:
                async with gate.client.pipeline(transaction=False) as pipe:
                    for op in batch:
                        await script(keys=keys[op % slots], args=gate.admit_args(secrets.token_hex(8)), client=pipe)
                    results = await pipe.execute()
            for result in results:
                counts[int(result)] += 1

    try:
        await gate.set_remaining({slot_key("BENCH", f"S-{i}"): remaining for i in range(slots)})
        started = time.perf_counter()
        await asyncio.gather(*(worker(j) for j in range(concurrency)))
        seconds = time.perf_counter() - started
    finally:
        leftovers = [k async for k in gate.client.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(leftovers), 1000):
            await gate.client.delete(*leftovers[start : start + 1000])
        await gate.close()
    return GateBaseline(
        ops=ops,
        seconds=seconds,
        ops_per_s=per_second(ops, seconds),
        admitted=counts[1],
        sold_out=counts[0],
        unknown=counts[-1],
        expected_admitted=expected_admitted(ops, slots, remaining),
    )


@dataclass
class Options:
    ops: int
    slots: int
    remaining: int
    concurrency: int
    pipeline: int
    json: bool


def run(opts: Options) -> dict[str, object]:
    before = machine()
    result = asyncio.run(
        run_gate_baseline(
            REDIS_URL,
            ops=opts.ops,
            slots=opts.slots,
            remaining=opts.remaining,
            concurrency=opts.concurrency,
            pipeline=opts.pipeline,
        )
    )
    return {
        "benchmark": "gate_baseline",
        "date": datetime.now(UTC).date().isoformat(),
        "gate_ops_per_s": result.ops_per_s,
        **{k: v for k, v in asdict(result).items() if k != "ops_per_s"},
        "oversold": max(0, result.admitted - result.expected_admitted),
        "healthy": result.healthy,
        "slots": opts.slots,
        "remaining": opts.remaining,
        "concurrency": opts.concurrency,
        "pipeline": opts.pipeline,
        "machine": {**before, "load_1m_after": machine()["load_1m"]},
    }


def summary(f: Mapping[str, object]) -> str:
    return "\n".join(
        [
            f"gate_baseline  {f['date']}  ops={f['ops']}  slots={f['slots']}x{f['remaining']}  "
            f"concurrency={f['concurrency']}  pipeline={f['pipeline']}",
            f"  admit script   {f['gate_ops_per_s']:.0f} ops/s  ({f['seconds']:.2f} s)",
            f"  admitted       {f['admitted']} (expected {f['expected_admitted']}), sold out {f['sold_out']}, "
            f"unknown {f['unknown']}",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m load.gate_baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200_000, help="admits to run")
    parser.add_argument("--slots", type=int, default=500)
    parser.add_argument("--remaining", type=int, default=5, help="numbers per slot")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent coroutines (connections)")
    parser.add_argument("--pipeline", type=int, default=32, help="script calls per round trip")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    ns = parser.parse_args(argv)
    if min(ns.ops, ns.slots, ns.concurrency, ns.pipeline) < 1 or ns.remaining < 0:
        parser.error("--ops, --slots, --concurrency and --pipeline must be positive, --remaining not negative")
    return Options(
        ops=ns.ops,
        slots=ns.slots,
        remaining=ns.remaining,
        concurrency=ns.concurrency,
        pipeline=ns.pipeline,
        json=ns.json,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    figures = run(opts)
    if opts.json:
        emit_json(figures)
    else:
        print(summary(figures))
    return 0 if figures["healthy"] else 1


if __name__ == "__main__":
    sys.exit(main())
