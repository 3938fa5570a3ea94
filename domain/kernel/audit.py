"""Audit records (SEC-L-01..05, DESIGN D13): who did what, when, with which outcome.

Identifiers in an audit record are masked or opaque ids; never a full ID number, phone, token or secret.
``redact`` is the safety net the repository applies to every event before it is written (SEC-L-05).

Writers only append records. A sealer later chains committed records in id order (``ChainLink``: the
position ``seq``, the record's id and the running hash); verification walks the links in ``seq`` order from
the genesis or from the latest ``anchor`` left behind when old partitions were dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol

from domain.privacy.scrub import REDACTED, is_secret_key, scrub_text

GENESIS_HASH: Final = "0" * 64
"""The previous hash of the first link of a chain that has no anchor."""


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: str
    """Dotted event type, e.g. ``auth.login``, ``patient.read``, ``booking.cancel``."""
    outcome: Outcome
    actor: str | None = None
    """``account:<id>``, ``staff:<id>``, ``system`` or None for an anonymous caller."""
    actor_role: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    source_ip: str | None = None
    device: str | None = None
    request_id: str | None = None
    reason: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    occurred_at: datetime
    event: AuditEvent


@dataclass(frozen=True, slots=True)
class ChainLink:
    seq: int
    """The position in the chain, from 1 without gaps (after an anchor: from the anchor's seq + 1)."""
    audit_id: int
    hash_hex: str


class ChainProblem(StrEnum):
    HASH_MISMATCH = "hash_mismatch"
    """The record (or the stored link) was changed after sealing."""
    RECORD_MISSING = "record_missing"
    """A link points to a record that is gone."""
    SEQ_GAP = "seq_gap"
    """Links are missing: the chain is broken."""


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    ok: bool
    checked: int
    first_bad_audit_id: int | None = None
    problem: ChainProblem | None = None


class AuditRepository(Protocol):
    async def record(self, event: AuditEvent, *, now: datetime) -> int:
        """Append one record (passed through ``redact``) in the current transaction; returns its id."""
        ...

    async def try_lock_sealer(self) -> bool:
        """Take the single sealer's lock for the current transaction; False when another sealer holds it."""
        ...

    async def unsealed(self, *, older_than: datetime, limit: int) -> Sequence[AuditRecord]:
        """Committed records not yet chained, in id order, written before ``older_than``."""
        ...

    async def chain_head(self) -> ChainLink | None:
        """The link with the highest seq, if any."""
        ...

    async def latest_anchor(self) -> ChainLink | None:
        """The link of the last record dropped with its partition, from which the remaining chain starts."""
        ...

    async def append_links(self, links: Sequence[ChainLink]) -> None: ...

    async def records_with_links(self, *, after_seq: int, limit: int) -> Sequence[tuple[ChainLink, AuditRecord | None]]:
        """Chain links in seq order with the record each points to (None where the record is gone)."""
        ...


def _scrub_optional(text: str | None) -> str | None:
    return None if text is None else scrub_text(text)


def redact(event: AuditEvent) -> AuditEvent:
    """The event with secrets removed and personal numbers masked (SEC-L-05, SEC-P-08).

    Details whose key names a secret (password, token, cookie, ...) keep the key with ``[redacted]``.
    Applying it twice changes nothing.
    """
    details = {key: REDACTED if is_secret_key(key) else scrub_text(value) for key, value in event.details.items()}
    return replace(
        event,
        actor=_scrub_optional(event.actor),
        actor_role=_scrub_optional(event.actor_role),
        object_type=_scrub_optional(event.object_type),
        object_id=_scrub_optional(event.object_id),
        source_ip=_scrub_optional(event.source_ip),
        device=_scrub_optional(event.device),
        request_id=_scrub_optional(event.request_id),
        reason=_scrub_optional(event.reason),
        details=details,
    )
