"""The payment channels behind ``domain.payment.ports.PaymentChannel``: WeChat Pay v3 and Alipay.

Each adapter turns its vendor client's answers into the port's small vocabulary (open, paid, closed, not
found; refunds succeeded, processing, failed) and back. Yuan strings never leave the vendor clients; everything
here is integer fen. Vendor refusals that mean "nothing to do" (closing a closed order, an unknown trade) are
answered with the trade's state instead of an error; the rest propagate as domain errors (5xx: transient, tried
again by the payment service; 4xx: final).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qsl

from domain.kernel.clock import SHANGHAI, Clock
from domain.kernel.errors import UpstreamError
from domain.payment.machine import PaymentOrder
from domain.payment.ports import (
    ChannelBillLine,
    ChannelEvent,
    ChannelNotice,
    ChannelRefund,
    ChannelRefundState,
    ChannelTrade,
    ChannelTradeState,
    Payer,
)
from domain.payment.use_cases import NoticeMismatchError
from integrations.alipay.trade import (
    AlipayBillNotFoundError,
    AlipayNotificationError,
    AlipayTrade,
    AlipayTradeClient,
    AlipayTradeNotFoundError,
    AlipayTradeStatusError,
)
from integrations.alipay.trade import (
    parse_trade_bill as parse_alipay_bill,
)
from integrations.wechat.pay import (
    CLOSED,
    NOTPAY,
    PAID_STATES,
    PAYERROR,
    REFUND_ABNORMAL,
    REFUND_CLOSED,
    REFUND_SUCCESS,
    REVOKED,
    USERPAYING,
    WechatPayBadNotificationError,
    WechatPayBadResponseError,
    WechatPayClient,
    WechatPayRefund,
    WechatPayRejectedError,
    WechatPayTransaction,
    parse_refund,
    parse_transaction,
)
from integrations.wechat.pay import (
    parse_trade_bill as parse_wechatpay_bill,
)

log = logging.getLogger(__name__)

_WECHAT_KEPT = (
    "out_trade_no",
    "transaction_id",
    "trade_state",
    "trade_type",
    "amount",
    "success_time",
    "appid",
    "mchid",
    "out_refund_no",
    "refund_id",
    "refund_status",
)
"""What is stored of a WeChat Pay notification's resource: no payer, no account it was refunded to."""
_ALIPAY_KEPT = (
    "notify_id",
    "notify_time",
    "app_id",
    "trade_no",
    "out_trade_no",
    "trade_status",
    "total_amount",
    "refund_fee",
    "out_biz_no",
    "gmt_payment",
    "gmt_refund",
    "gmt_close",
)
"""What is stored of an Alipay notification: no buyer ids, no signature."""

WECHAT = "wechat"
ALIPAY = "alipay"
BILL_READY = time(10, 0)
"""WeChat Pay's bills are ready from 10:00 Beijing time the next day; Alipay's earlier (protocols §2.7, §3.7)."""


class BillNotReadyError(UpstreamError):
    code = "payment.bill_not_ready"
    message = "对账单尚未生成，请稍后再试"


def _bill_ready(day: date, now: datetime) -> bool:
    return now >= datetime.combine(day + timedelta(days=1), BILL_READY, SHANGHAI)


# --- WeChat Pay -------------------------------------------------------------------------------------------------


def wechat_trade(transaction: WechatPayTransaction) -> ChannelTrade:
    """A query answer or a decrypted ``TRANSACTION.SUCCESS`` resource, in the port's words."""
    state = transaction.trade_state
    if state in PAID_STATES:
        return ChannelTrade(
            transaction.out_trade_no,
            ChannelTradeState.PAID,
            transaction.transaction_id,
            transaction.total_fen,
            transaction.success_time,
        )
    if state in (NOTPAY, USERPAYING):
        return ChannelTrade(transaction.out_trade_no, ChannelTradeState.OPEN)
    if state in (CLOSED, REVOKED, PAYERROR):
        return ChannelTrade(transaction.out_trade_no, ChannelTradeState.CLOSED)
    return ChannelTrade(transaction.out_trade_no, ChannelTradeState.OPEN)


def wechat_refund(refund: WechatPayRefund) -> ChannelRefund:
    if refund.status == REFUND_SUCCESS:
        return ChannelRefund(refund.out_refund_no, ChannelRefundState.SUCCEEDED)
    if refund.status in (REFUND_CLOSED, REFUND_ABNORMAL):
        return ChannelRefund(refund.out_refund_no, ChannelRefundState.FAILED, refund.status)
    return ChannelRefund(refund.out_refund_no, ChannelRefundState.PROCESSING)


@dataclass
class WechatPayChannel:
    """WeChat Pay for one merchant: JSAPI in the mini-programs (the payer's openid), APP pay in the patient app
    (``app_appid``)."""

    client: WechatPayClient
    clock: Clock
    app_appid: str | None = None
    app_ids: frozenset[str] | None = None
    """The app ids whose payments notifications may be about (None: any of this merchant's)."""
    name: str = WECHAT

    async def prepay(
        self, order: PaymentOrder, out_trade_no: str, payer: Payer, *, notify_url: str
    ) -> Mapping[str, Any]:
        description, total_fen, expires = order.description, order.self_pay_fen, order.expires_at
        if payer.app:
            if not self.app_appid:
                raise UpstreamError("no app id for WeChat APP payments", code="payment.channel_misconfigured")
            prepay_id = await self.client.app_prepay(
                app_id=self.app_appid,
                description=description,
                out_trade_no=out_trade_no,
                total_fen=total_fen,
                notify_url=notify_url,
                time_expire=expires,
            )
            return {"kind": "app", "params": self.client.client_params_app(self.app_appid, prepay_id)}
        prepay_id = await self.client.jsapi_prepay(
            app_id=payer.app_id,
            description=description,
            out_trade_no=out_trade_no,
            total_fen=total_fen,
            payer_openid=payer.user_id,
            notify_url=notify_url,
            time_expire=expires,
        )
        return {"kind": "requestPayment", "params": self.client.client_params_jsapi(payer.app_id, prepay_id)}

    async def query(self, out_trade_no: str) -> ChannelTrade:
        try:
            return wechat_trade(await self.client.query_by_out_trade_no(out_trade_no))
        except WechatPayRejectedError as exc:
            if exc.vendor_code == "ORDER_NOT_EXIST":
                return ChannelTrade(out_trade_no, ChannelTradeState.NOT_FOUND)
            raise

    async def close(self, out_trade_no: str) -> ChannelTrade:
        try:
            await self.client.close(out_trade_no)
        except WechatPayRejectedError as exc:
            if exc.vendor_code not in ("ORDERPAID", "ORDER_CLOSED", "ORDER_NOT_EXIST"):
                raise
        # What the channel says now: CLOSED, or PAID when the resident was quicker.
        trade = await self.query(out_trade_no)
        if trade.state is ChannelTradeState.OPEN:
            return ChannelTrade(out_trade_no, ChannelTradeState.CLOSED)
        return trade

    async def refund(
        self, out_trade_no: str, out_refund_no: str, *, amount_fen: int, total_fen: int, reason: str
    ) -> ChannelRefund:
        answer = await self.client.refund(out_trade_no, out_refund_no, amount_fen, total_fen, reason[:80] or None)
        return wechat_refund(answer)

    async def query_refund(self, out_trade_no: str, out_refund_no: str) -> ChannelRefund:
        return wechat_refund(await self.client.query_refund(out_refund_no))

    async def read_notice(self, headers: Mapping[str, str], body: bytes) -> ChannelNotice:
        """Verify (signature, 300 s window, probes refused), decrypt, check merchant and app id; what is stored
        of it keeps no payer id."""
        envelope = await self.client.parse_notification(headers, body)
        event_id, event_type = envelope.get("id"), envelope.get("event_type")
        resource = envelope["resource"]
        if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
            raise WechatPayBadNotificationError("notification without id or event_type")
        try:
            if event_type == "TRANSACTION.SUCCESS":
                transaction = parse_transaction(resource)
                merchant, app_id = transaction.mchid, transaction.appid
            elif event_type.startswith("REFUND."):
                refund = parse_refund(resource)
                merchant, app_id = str(resource.get("mchid", "")), None
            else:
                raise WechatPayBadNotificationError(f"unknown event_type {event_type[:40]!r}")
        except WechatPayBadResponseError as exc:
            raise WechatPayBadNotificationError("the notification's resource is malformed") from exc
        if merchant != self.client.mchid:
            raise NoticeMismatchError("a notification for another merchant")
        if app_id is not None and self.app_ids is not None and app_id not in self.app_ids:
            raise NoticeMismatchError("a notification for an app id that is not ours")
        kept = {k: resource.get(k) for k in _WECHAT_KEPT if k in resource}
        kept.update({"id": event_id, "event_type": event_type, "create_time": envelope.get("create_time")})
        if event_type == "TRANSACTION.SUCCESS":
            event = ChannelEvent(self.name, event_id, transaction.out_trade_no, event_type, kept, self.clock.now())
            return ChannelNotice(event, trade=wechat_trade(transaction))
        event = ChannelEvent(self.name, event_id, refund.out_trade_no, event_type, kept, self.clock.now())
        return ChannelNotice(event, refund_out_trade_no=refund.out_trade_no, out_refund_no=refund.out_refund_no)

    async def bill(self, day: date) -> Sequence[ChannelBillLine]:
        if not _bill_ready(day, self.clock.now()):
            raise BillNotReadyError(f"the WeChat Pay bill of {day} is not ready")
        try:
            url, sha1 = await self.client.trade_bill(day)
        except WechatPayRejectedError as exc:
            if exc.vendor_code == "NO_STATEMENT_EXIST":
                return []  # past the ready time: nothing was paid or refunded that day
            raise
        rows = parse_wechatpay_bill(await self.client.download_bill(url, sha1))
        lines: list[ChannelBillLine] = []
        for row in rows:
            if row.out_refund_no is not None:
                lines.append(
                    ChannelBillLine(
                        "refund",
                        row.out_trade_no,
                        row.transaction_id,
                        row.refund_fen,
                        row.out_refund_no,
                        row.trade_time,
                    )
                )
            else:
                lines.append(
                    ChannelBillLine(
                        "payment", row.out_trade_no, row.transaction_id, row.total_fen, None, row.trade_time
                    )
                )
        return lines


# --- Alipay -----------------------------------------------------------------------------------------------------

_ALIPAY_USER_ID_PREFIX = "2088"


def alipay_trade(trade: AlipayTrade) -> ChannelTrade:
    if trade.is_paid or (trade.is_closed and trade.send_pay_date is not None):
        # A paid trade refunded in full is TRADE_CLOSED too, but it was paid: the payment stands.
        return ChannelTrade(
            trade.out_trade_no, ChannelTradeState.PAID, trade.trade_no, trade.total_fen, trade.send_pay_date
        )
    if trade.is_closed:
        return ChannelTrade(trade.out_trade_no, ChannelTradeState.CLOSED)
    return ChannelTrade(trade.out_trade_no, ChannelTradeState.OPEN)


@dataclass
class AlipayChannel:
    """Alipay for one app: ``alipay.trade.create`` in the mini-program (``my.tradePay({tradeNO})``), the
    ``alipay.trade.app.pay`` order string in the patient app."""

    trades: AlipayTradeClient
    clock: Clock
    name: str = ALIPAY

    async def prepay(
        self, order: PaymentOrder, out_trade_no: str, payer: Payer, *, notify_url: str
    ) -> Mapping[str, Any]:
        if payer.app:
            order_string = self.trades.app_pay_order_string(
                out_trade_no, order.self_pay_fen, order.description, time_expire=order.expires_at, notify_url=notify_url
            )
            return {"kind": "app", "params": {"orderStr": order_string}}
        user = payer.user_id
        is_user_id = user.startswith(_ALIPAY_USER_ID_PREFIX) and user.isdigit() and len(user) == 16
        trade_no = await self.trades.create(
            out_trade_no,
            order.self_pay_fen,
            order.description,
            buyer_id=user if is_user_id else None,
            buyer_open_id=None if is_user_id else user,
            time_expire=order.expires_at,
            notify_url=notify_url,
        )
        return {"kind": "tradePay", "params": {"tradeNO": trade_no}}

    async def query(self, out_trade_no: str) -> ChannelTrade:
        try:
            return alipay_trade(await self.trades.query(out_trade_no))
        except AlipayTradeNotFoundError:
            return ChannelTrade(out_trade_no, ChannelTradeState.NOT_FOUND)

    async def close(self, out_trade_no: str) -> ChannelTrade:
        try:
            await self.trades.close(out_trade_no)
        except AlipayTradeNotFoundError:
            # An app payment the resident never opened: there is nothing at Alipay to pay.
            return ChannelTrade(out_trade_no, ChannelTradeState.NOT_FOUND)
        except AlipayTradeStatusError:
            pass  # paid or closed already: the query says which
        trade = await self.query(out_trade_no)
        if trade.state is ChannelTradeState.OPEN:
            return ChannelTrade(out_trade_no, ChannelTradeState.CLOSED)
        return trade

    async def refund(
        self, out_trade_no: str, out_refund_no: str, *, amount_fen: int, total_fen: int, reason: str
    ) -> ChannelRefund:
        answer = await self.trades.refund(out_trade_no, amount_fen, out_refund_no, reason or None)
        if answer.fund_change:
            return ChannelRefund(out_refund_no, ChannelRefundState.SUCCEEDED)
        # fund_change N: usually a repeat of a refund that succeeded before; the refund query decides.
        return await self.query_refund(out_trade_no, out_refund_no)

    async def query_refund(self, out_trade_no: str, out_refund_no: str) -> ChannelRefund:
        status = await self.trades.refund_query(out_trade_no, out_refund_no)
        state = ChannelRefundState.SUCCEEDED if status.succeeded else ChannelRefundState.PROCESSING
        return ChannelRefund(out_refund_no, state)

    async def read_notice(self, headers: Mapping[str, str], body: bytes) -> ChannelNotice:
        """The form Alipay posts (``application/x-www-form-urlencoded``, UTF-8), decoded once, verified under the
        Alipay key, checked for our app id and seller."""
        try:
            params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
        except (UnicodeDecodeError, ValueError) as exc:
            raise AlipayNotificationError("the notification is not a UTF-8 form") from exc
        notice = self.trades.parse_notification(params)
        kept = {k: params[k] for k in _ALIPAY_KEPT if k in params}
        event = ChannelEvent(
            self.name, notice.notify_id, notice.out_trade_no, notice.trade_status, kept, self.clock.now()
        )
        if notice.is_refund:
            return ChannelNotice(event, refund_out_trade_no=notice.out_trade_no, out_refund_no=notice.out_biz_no)
        if notice.trade_status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
            trade = ChannelTrade(
                notice.out_trade_no, ChannelTradeState.PAID, notice.trade_no, notice.total_fen, notice.gmt_payment
            )
        elif notice.trade_status == "TRADE_CLOSED":
            trade = ChannelTrade(notice.out_trade_no, ChannelTradeState.CLOSED)
        else:
            trade = ChannelTrade(notice.out_trade_no, ChannelTradeState.OPEN)
        return ChannelNotice(event, trade=trade)

    async def bill(self, day: date) -> Sequence[ChannelBillLine]:
        try:
            url = await self.trades.bill_download_url(day)
        except AlipayBillNotFoundError as exc:
            raise BillNotReadyError(f"the Alipay bill of {day} is not ready") from exc
        lines: list[ChannelBillLine] = []
        for entry in parse_alipay_bill(await self.trades.download_bill(url)):
            if entry.kind == "退款":
                lines.append(
                    ChannelBillLine(
                        "refund",
                        entry.out_trade_no,
                        entry.trade_no,
                        abs(entry.received_fen),
                        entry.out_request_no,
                        entry.finished_at,
                    )
                )
            elif entry.kind == "交易":
                lines.append(
                    ChannelBillLine(
                        "payment", entry.out_trade_no, entry.trade_no, entry.total_fen, None, entry.finished_at
                    )
                )
            else:
                log.info("alipay_bill_row_skipped", extra={"kind": entry.kind})
        return lines
