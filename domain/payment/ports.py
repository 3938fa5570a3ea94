"""Ports of the payments feature: the channels (WeChat Pay, Alipay) and the ledger repository."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from domain.payment.machine import PaymentOrder


class ChannelTradeState(StrEnum):
    OPEN = "open"
    """Created, not paid (the resident may still pay)."""
    PAID = "paid"
    CLOSED = "closed"
    NOT_FOUND = "not_found"
    """The channel never saw it (the prepay failed before reaching it): as good as closed."""


class ChannelRefundState(StrEnum):
    SUCCEEDED = "succeeded"
    PROCESSING = "processing"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Payer:
    """Who pays, as the channel knows them: the mini-program's app id and the resident's id in it (openid,
    Alipay user id or open id); empty for app payments."""

    app_id: str = ""
    user_id: str = field(default="", repr=False)
    app: bool = False
    """Pay from the patient app (WeChat APP pay / alipay.trade.app.pay) instead of a mini-program."""


@dataclass(frozen=True, slots=True)
class ChannelTrade:
    out_trade_no: str
    state: ChannelTradeState
    transaction_id: str | None = None
    amount_fen: int | None = None
    paid_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChannelRefund:
    out_refund_no: str
    state: ChannelRefundState
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelBillLine:
    """One line of a channel's daily trade bill: a payment or a refund that settled that day, in fen."""

    kind: Literal["payment", "refund"]
    out_trade_no: str
    transaction_id: str
    amount_fen: int
    """A payment's paid amount; a refund's refunded amount (positive)."""
    out_refund_no: str | None = None
    at: datetime | None = None


class PaymentChannel(Protocol):
    name: str

    async def prepay(
        self, order: PaymentOrder, out_trade_no: str, payer: Payer, *, notify_url: str
    ) -> Mapping[str, Any]:
        """Create the channel's order; the signed parameters the front end passes to ``wx.requestPayment`` or
        ``my.tradePay`` (or the app SDKs)."""
        ...

    async def query(self, out_trade_no: str) -> ChannelTrade: ...

    async def close(self, out_trade_no: str) -> ChannelTrade:
        """Close an unpaid order; answers PAID (with the transaction) when the resident paid first."""
        ...

    async def refund(
        self, out_trade_no: str, out_refund_no: str, *, amount_fen: int, total_fen: int, reason: str
    ) -> ChannelRefund:
        """Idempotent by ``out_refund_no``: sending the same refund again never pays back twice."""
        ...

    async def query_refund(self, out_trade_no: str, out_refund_no: str) -> ChannelRefund: ...

    async def bill(self, day: date) -> Sequence[ChannelBillLine]:
        """The channel's trade bill of one Beijing day (payments and refunds that settled then); empty when the
        channel has no bill for that day because nothing happened. A bill not ready yet is UnavailableError."""
        ...


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """A verified notification, stored once (secrets removed) before it is applied."""

    channel: str
    event_key: str
    """The channel's own id for the notification (WeChat ``id``; Alipay ``notify_id``)."""
    out_trade_no: str
    kind: str
    body: Mapping[str, Any]
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ChannelNotice:
    """What a verified notification says: a trade's state (a payment, or an unpaid trade closed) or that a
    refund moved (confirmed with the refund query before it is applied)."""

    event: ChannelEvent
    trade: ChannelTrade | None = None
    refund_out_trade_no: str | None = None
    out_refund_no: str | None = None


@runtime_checkable
class NoticeReader(Protocol):
    """Verifies a channel's notification as it came over HTTP (headers and raw body) and says what it means.
    Forged, stale, probing or foreign notifications raise a DomainError below 500 and must change nothing."""

    async def read_notice(self, headers: Mapping[str, str], body: bytes) -> ChannelNotice: ...


class PaymentRepository(Protocol):
    async def add(self, order: PaymentOrder) -> None: ...

    async def get(self, order_id: str, *, lock: bool = False) -> PaymentOrder | None: ...

    async def by_out_trade_no(self, out_trade_no: str, *, lock: bool = False) -> PaymentOrder | None: ...

    async def by_refund(self, refund_id: str, *, lock: bool = False) -> PaymentOrder | None: ...

    async def save(self, before: PaymentOrder, after: PaymentOrder, *, now: datetime) -> None:
        """Write ``after`` (attempts and refunds added or changed); a version other than ``before``'s in the
        database is a concurrent change: ConflictError."""
        ...

    async def record_event(self, event: ChannelEvent) -> bool:
        """Store a channel event once; False when it was already stored."""
        ...

    async def mark_event_applied(self, channel: str, event_key: str, *, now: datetime) -> None: ...

    async def due_for_expiry(self, *, now: datetime, limit: int) -> Sequence[str]: ...

    async def awaiting_payment(self, *, now: datetime, older_than: datetime, limit: int) -> Sequence[tuple[str, int]]:
        """Orders paying without a verified success whose next query is due (first: paying since before
        ``older_than``), with the number of queries so far."""
        ...

    async def postpone_query(self, order_id: str, *, next_query_at: datetime, tries: int) -> None: ...

    async def refunds_to_submit(self, *, now: datetime, limit: int) -> Sequence[str]:
        """Refunds requested or processing whose next try is due."""
        ...

    async def set_refund_retry(self, refund_id: str, *, next_try_at: datetime | None, tries: int) -> None: ...

    async def refund_tries(self, refund_id: str) -> int: ...

    async def failed_refunds(self, *, limit: int) -> Sequence[tuple[str, str]]:
        """(order id, refund id) of refunds that failed for good: the operators' queue."""
        ...
