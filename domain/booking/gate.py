"""The slot gate: a cache in front of slot booking that answers "sold out" without touching PostgreSQL
(DESIGN §3). It is never the truth: PostgreSQL's conditional update (``UPDATE clinic_slots SET taken = taken + 1
WHERE ... AND taken < capacity``) decides every take, so a wrong, lost or flushed gate can cost extra database
round trips but never an oversell, and a slot the gate wrongly calls sold out is set right by the next rebuild.

Semantics (one entry per slot, keyed ``"{hospital_code}:{slot_id}"``, see :func:`slot_key`):

* The entry holds ``remaining`` (R): what PostgreSQL had free (``capacity - taken``) when the entry was last
  rebuilt, adjusted since by the takes and releases reported to the gate; and the **tickets in flight** (T):
  requests the gate let through whose PostgreSQL outcome is not reported yet, each with a lease
  (``ticket_seconds``, a few seconds). The entry itself lives ``ttl`` after its last rebuild: if the rebuilds
  stop, the gate forgets and every request goes to PostgreSQL.
* ``admit`` (atomic): no entry -> ``UNKNOWN``. Otherwise drop the expired tickets; if ``R - |T| > 0`` add a new
  ticket and answer ``ADMIT`` with it, else ``SOLD_OUT``. While the entry is fresh at most R requests are in
  flight per slot; the rest are refused without a database round trip.
* ``taken(key, ticket)``: PostgreSQL **committed** the take. When the ticket is still in T it leaves T and R
  drops by one. A ticket that is no longer there (an ``admit`` dropped it after its lease ran out, a rebuild
  wiped it, the entry is gone) changes nothing: whether R already counts that take is unknown, and counting
  it twice could refuse a free number, while not counting it only admits one request too many, which
  PostgreSQL refuses.
* ``returned(key, ticket)``: the request did **not** take the slot (PostgreSQL said full, a booking rule refused,
  an error, a rollback, even an unsure commit). The ticket leaves T; R is unchanged. Always safe to call.
* ``released(key)``: PostgreSQL **committed** giving a number back (cancellation, hold expiry). R grows by one
  when the entry exists.
* ``set_remaining(items)``: the rebuild, from a PostgreSQL read. R is overwritten, T emptied, the entry's ``ttl``
  restarts. Tickets issued after this write belong to requests whose take commits after the read, so ``taken``
  for a ticket still in T is exact; older tickets are wiped and fall under the "changes nothing" rule above.
* ``forget(key)``: the entry goes (``UNKNOWN`` until the next rebuild), e.g. after a capacity change.
* Adapters never raise: an unreachable or failing store answers ``UNKNOWN`` (go to PostgreSQL) and the reports
  are best effort (dropped, logged).

Every error of the gate therefore errs towards admitting too many (harmless: PostgreSQL refuses), except three,
each bounded: a request that died between ``admit`` and its report holds a ticket until its lease ends; a lost
``released`` report, or a release committed between a rebuild's read and its write, and a capacity raised by the
catalogue sync, count low until the next rebuild. Nothing is refused for longer than the rebuild period.

How the booking use case calls it (outside any database transaction)::

    key = slot_key(hospital_code, slot_id)
    answer = await gate.admit(key)
    if answer.verdict is GateVerdict.SOLD_OUT:
        raise SlotFullError(...)                     # no database round trip
    try:
        ...one unit of work: the conditional take, the booking, the outbox; commit...
    except BaseException:
        await gate.returned(key, answer.ticket)      # no-op for ticket None (UNKNOWN)
        raise
    await gate.taken(key, answer.ticket)             # no-op for ticket None (UNKNOWN)

and after any committed release of a taken number: ``await gate.released(key)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


def slot_key(hospital_code: str, slot_id: str) -> str:
    """The gate's key of one slot."""
    return f"{hospital_code}:{slot_id}"


class GateVerdict(StrEnum):
    ADMIT = "admit"
    """The slot may have room: go to PostgreSQL, holding the answer's ticket."""
    SOLD_OUT = "sold_out"
    """The gate knows the slot has no number left (or all are in flight): refuse without PostgreSQL."""
    UNKNOWN = "unknown"
    """No entry for the slot, or the gate's store is down: go to PostgreSQL (no ticket)."""


@dataclass(frozen=True, slots=True)
class GateAnswer:
    verdict: GateVerdict
    ticket: str | None = None
    """Set with ``ADMIT`` only: report it back with ``taken`` or ``returned``."""

    @property
    def sold_out(self) -> bool:
        return self.verdict is GateVerdict.SOLD_OUT


SOLD_OUT = GateAnswer(GateVerdict.SOLD_OUT)
UNKNOWN = GateAnswer(GateVerdict.UNKNOWN)


class SlotGate(Protocol):
    """See the module docstring for the exact semantics. No method raises."""

    async def admit(self, slot_key: str) -> GateAnswer:
        """Reserve a ticket when the slot seems to have room (``ADMIT``), else ``SOLD_OUT`` or ``UNKNOWN``."""
        ...

    async def taken(self, slot_key: str, ticket: str | None) -> None:
        """PostgreSQL committed the take of an admitted request: count it (only if its ticket is in flight)."""
        ...

    async def returned(self, slot_key: str, ticket: str | None) -> None:
        """The admitted request did not take the slot: its ticket comes back unused."""
        ...

    async def released(self, slot_key: str) -> None:
        """PostgreSQL committed giving a taken number back: one more remains."""
        ...

    async def set_remaining(self, items: Mapping[str, int]) -> None:
        """Rebuild from PostgreSQL: ``remaining = capacity - taken`` per slot; tickets in flight are dropped."""
        ...

    async def forget(self, slot_key: str) -> None:
        """Drop the slot's entry: ``UNKNOWN`` until the next rebuild."""
        ...
