"""The fault plan of a simulator: what goes wrong with inbound requests and outbound callbacks.

Every random decision is taken with the simulator's seeded ``fault_random``, so that the same seed, plan and
sequence of requests give the same faults.
"""

from __future__ import annotations

import random
from typing import Annotated

import msgspec

Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0)]
HttpStatus = Annotated[int, msgspec.Meta(ge=100, le=599)]


class InboundFaults(msgspec.Struct, rename="camel", frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Faults applied to requests reaching the simulator.

    Order: the added latency, then the timeout decision (the request is held for ``timeoutSeconds`` of wall
    time or until the client gives up, then processed as usual: the vendor did the work but the answer came
    too late), then the error decision (answered with ``errorStatus`` and ``errorBody``, not processed).
    """

    path_prefix: str | None = None
    """Only requests whose vendor path (relative to the simulator's mount) starts with this are affected."""
    latency_ms: Seconds = 0.0
    error_rate: Rate = 0.0
    error_status: HttpStatus = 503
    error_body: str | None = None
    error_content_type: str = "application/json"
    timeout_rate: Rate = 0.0
    timeout_seconds: Seconds = 30.0

    def applies_to(self, path: str) -> bool:
        return self.path_prefix is None or path.startswith(self.path_prefix)


class CallbackFaults(msgspec.Struct, rename="camel", frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Faults applied to outbound callbacks.

    A dropped callback is never attempted (nor retried); a duplicated one is queued twice, each copy with its
    own retries; ``delaySeconds`` (on the shared clock) postpones the first attempt; with ``reorder`` every
    batch of callbacks that fall due together is delivered in a shuffled order.
    """

    drop_rate: Rate = 0.0
    duplicate_rate: Rate = 0.0
    reorder: bool = False
    delay_seconds: Seconds = 0.0


class FaultPlan(msgspec.Struct, rename="camel", frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A simulator's whole fault plan, as set by ``PUT /sandbox/admin/{simulator}/faults``."""

    inbound: InboundFaults = msgspec.field(default_factory=InboundFaults)
    callbacks: CallbackFaults = msgspec.field(default_factory=CallbackFaults)


NO_FAULTS = FaultPlan()


def chance(rng: random.Random, rate: float) -> bool:
    """True with probability ``rate``; rates of 0 and 1 draw nothing from ``rng``."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    return rng.random() < rate
