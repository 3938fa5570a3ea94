"""Daily reconciliation (对账), the pure part: one channel's bill of one Beijing day against our ledger of that
channel and day, line by line.

A payment line is keyed by its ``out_trade_no``, a refund line by its ``out_refund_no`` (a refund without one is
keyed by its ``out_trade_no``, as Alipay does when no request number was given). Our ledger lines of a day are
the attempts that succeeded then (the paying one, and any duplicate payment refunded at once) and the refunds
that succeeded then. Each key present on one side only, or with different amounts, is one typed difference;
everything else is matched. The result is deterministic: differences come sorted by line kind and key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Literal

from domain.kernel.clock import SHANGHAI
from domain.payment.ports import ChannelBillLine

LineKind = Literal["payment", "refund"]
LineKey = tuple[LineKind, str]
"""``("payment", out_trade_no)`` or ``("refund", out_refund_no)``."""


class DifferenceKind(StrEnum):
    MISSING_HERE = "missing_here"
    """The channel has the payment or refund; we do not have it as succeeded (a missed callback, a refund made
    in the merchant portal, a trade we never created)."""
    MISSING_THERE = "missing_there"
    """We have it as succeeded; the channel's bill of that day does not."""
    AMOUNT_MISMATCH = "amount_mismatch"
    """Both sides have it, with different amounts."""
    OTHER_DAY = "other_day"
    """Both sides have it, on different Beijing days (跨日: a success near midnight, or one we learnt of later).
    Never produced by ``compare``: the reconciliation service finds it out by asking the ledger or the channel
    about a line missing on one side."""


@dataclass(frozen=True, slots=True)
class LedgerLine:
    """One of our succeeded payments or refunds, in fen."""

    kind: LineKind
    out_trade_no: str
    amount_fen: int
    out_refund_no: str | None = None
    transaction_id: str | None = None
    at: datetime | None = None
    """When it succeeded as far as we know (the channel's payment time; for refunds and duplicate payments,
    when we learnt of the success)."""

    @property
    def key(self) -> LineKey:
        return line_key(self.kind, self.out_trade_no, self.out_refund_no)


def line_key(kind: LineKind, out_trade_no: str, out_refund_no: str | None) -> LineKey:
    if kind == "refund":
        return ("refund", out_refund_no or out_trade_no)
    return ("payment", out_trade_no)


def bill_key(line: ChannelBillLine) -> LineKey:
    return line_key(line.kind, line.out_trade_no, line.out_refund_no)


@dataclass(frozen=True, slots=True)
class Difference:
    kind: DifferenceKind
    line_kind: LineKind
    out_trade_no: str
    out_refund_no: str | None = None
    transaction_id: str | None = None
    channel_fen: int | None = None
    """The amount on the channel's bill (None: not on it)."""
    ledger_fen: int | None = None
    """The amount in our ledger (None: not in it)."""
    note: str | None = None
    """What the reconciliation found out when it looked closer (a query's answer, why a repair failed)."""

    @property
    def key(self) -> LineKey:
        return line_key(self.line_kind, self.out_trade_no, self.out_refund_no)


@dataclass(frozen=True, slots=True)
class Totals:
    payments: int = 0
    payment_fen: int = 0
    refunds: int = 0
    refund_fen: int = 0

    @property
    def net_fen(self) -> int:
        return self.payment_fen - self.refund_fen

    def plus(self, kind: LineKind, amount_fen: int) -> Totals:
        if kind == "payment":
            return Totals(self.payments + 1, self.payment_fen + amount_fen, self.refunds, self.refund_fen)
        return Totals(self.payments, self.payment_fen, self.refunds + 1, self.refund_fen + amount_fen)


@dataclass(frozen=True, slots=True)
class Comparison:
    bill: Totals
    """Every line of the channel's bill."""
    ledger: Totals
    """Every line of our ledger."""
    matched: Totals
    """Lines present on both sides with the same amount (counted once, in fen)."""
    differences: tuple[Difference, ...]

    @property
    def clean(self) -> bool:
        return not self.differences


class RepairAction(StrEnum):
    PAYMENT_APPLIED = "payment_applied"
    """A payment missing here that the channel's query proved paid (a missed callback), applied through the
    payment machine: the order is paid (or paid late, or the duplicate is refunded)."""
    REFUND_APPLIED = "refund_applied"
    """A refund not succeeded here that the channel's refund query proved succeeded, applied through the
    payment machine."""


@dataclass(frozen=True, slots=True)
class Repair:
    action: RepairAction
    line_kind: LineKind
    out_trade_no: str
    out_refund_no: str | None
    transaction_id: str | None
    amount_fen: int
    result: str
    """What the ledger says after it: the attempt's and the order's states (``succeeded, order paid``)."""


class RunState(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    """The bill could not be had (not ready yet, the channel down): nothing was compared."""


@dataclass(frozen=True, slots=True)
class ReconciliationRun:
    """The report of one (day, channel): what was compared, repaired, and what is left for operators."""

    id: str
    day: date
    channel: str
    state: RunState
    actor: str
    """``system`` (the daily task) or ``staff:<id>`` (an operator ran it again)."""
    started_at: datetime
    finished_at: datetime
    bill: Totals = field(default_factory=Totals)
    ledger: Totals = field(default_factory=Totals)
    matched: Totals = field(default_factory=Totals)
    differences: tuple[Difference, ...] = ()
    """What is left after the repairs."""
    repairs: tuple[Repair, ...] = ()
    failure: str | None = None
    """The error code when the run failed."""


@dataclass(frozen=True, slots=True)
class _Side:
    amount_fen: int
    out_trade_no: str
    out_refund_no: str | None
    transaction_id: str | None


def _group(lines: Iterable[tuple[LineKey, int, str, str | None, str | None]]) -> dict[LineKey, _Side]:
    grouped: dict[LineKey, _Side] = {}
    for key, amount, out_trade_no, out_refund_no, transaction_id in lines:
        side = grouped.get(key)
        if side is None:
            grouped[key] = _Side(amount, out_trade_no, out_refund_no, transaction_id)
        else:
            # The same key twice on one side (a bill listing a line twice): the amounts add up, so that it shows
            # as one amount mismatch instead of passing unnoticed.
            grouped[key] = _Side(side.amount_fen + amount, side.out_trade_no, side.out_refund_no, side.transaction_id)
    return grouped


def compare(bill: Sequence[ChannelBillLine], ledger: Sequence[LedgerLine]) -> Comparison:
    """Compare one channel's bill of a day with our ledger of that channel and day."""
    bill_totals, ledger_totals, matched = Totals(), Totals(), Totals()
    for b in bill:
        bill_totals = bill_totals.plus(b.kind, b.amount_fen)
    for lg in ledger:
        ledger_totals = ledger_totals.plus(lg.kind, lg.amount_fen)
    there = _group((bill_key(b), b.amount_fen, b.out_trade_no, b.out_refund_no, b.transaction_id) for b in bill)
    here = _group((lg.key, lg.amount_fen, lg.out_trade_no, lg.out_refund_no, lg.transaction_id) for lg in ledger)
    differences: list[Difference] = []
    for key in sorted(there.keys() | here.keys()):
        kind = key[0]
        t, h = there.get(key), here.get(key)
        if t is not None and h is not None:
            if t.amount_fen == h.amount_fen:
                matched = matched.plus(kind, t.amount_fen)
                continue
            differences.append(
                Difference(
                    DifferenceKind.AMOUNT_MISMATCH,
                    kind,
                    t.out_trade_no,
                    t.out_refund_no if kind == "refund" else None,
                    t.transaction_id or h.transaction_id,
                    channel_fen=t.amount_fen,
                    ledger_fen=h.amount_fen,
                )
            )
        elif t is not None:
            differences.append(
                Difference(
                    DifferenceKind.MISSING_HERE,
                    kind,
                    t.out_trade_no,
                    t.out_refund_no if kind == "refund" else None,
                    t.transaction_id,
                    channel_fen=t.amount_fen,
                )
            )
        elif h is not None:
            differences.append(
                Difference(
                    DifferenceKind.MISSING_THERE,
                    kind,
                    h.out_trade_no,
                    h.out_refund_no if kind == "refund" else None,
                    h.transaction_id,
                    ledger_fen=h.amount_fen,
                )
            )
    return Comparison(bill_totals, ledger_totals, matched, tuple(differences))


def beijing_day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC instants [start, end) of a Beijing calendar day."""
    start = datetime.combine(day, time(0), tzinfo=SHANGHAI).astimezone(UTC)
    return start, start + timedelta(days=1)


def beijing_day(instant: datetime) -> date:
    return instant.astimezone(SHANGHAI).date()
