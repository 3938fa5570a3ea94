"""Alipay trade (payment) APIs on the gateway client (protocols §3.4-§3.6, DESIGN D9).

Every public value here is integer fen; yuan strings (``"25.00"``) exist only inside this module, converted
exactly with ``Decimal`` (``to_yuan`` / ``to_fen``). Times are aware UTC; Alipay's ``yyyy-MM-dd HH:mm:ss`` is
Beijing time.

Methods
    * ``alipay.trade.create`` (``product_code`` ``JSAPI_PAY``): the mini-program's order; the client then calls
      ``my.tradePay({tradeNO})`` with the returned ``trade_no``. The buyer is ``buyer_id`` (``2088`` + 12
      digits) or ``buyer_open_id`` with ``op_app_id`` (apps switched to open ids), ``time_expire`` in Beijing
      time, ``notify_url`` as a common parameter.
    * ``alipay.trade.app.pay`` (``QUICK_MSECURITY_PAY``): no HTTP call; the signed, form-encoded order string
      the patient app hands to the Alipay app SDK (what the official SDKs' ``sdk_execute`` / ``sdkExec``
      return).
    * ``alipay.trade.query``, ``alipay.trade.close``, ``alipay.trade.refund`` (``out_request_no`` is the
      idempotency key: a repeat answers ``fund_change`` ``N`` with the same cumulative ``refund_fee``),
      ``alipay.trade.fastpay.refund.query`` (``refund_status`` ``REFUND_SUCCESS``, absent = not (yet)
      refunded), ``alipay.data.dataservice.bill.downloadurl.query`` (a URL valid ~30 s of a zip of GBK CSVs).
    * Asynchronous notifications (``trade_status_sync``): ``parse_notification`` after ``verify_notify``.

Amounts
    Alipay's ``Price``: yuan with at most two decimals, 0.01 to 100000000.00 for a payment. ``to_yuan`` renders
    fen as exactly two decimals. ``to_fen`` accepts ``"1"``, ``"1.5"`` and ``"1.50"`` (every one an exact
    amount: 100, 150, 150 fen) and refuses anything else: three or more decimals (``"1.005"``, even
    ``"1.000"``), signs, exponents, spaces, non-ASCII digits, more than 12 integer digits.

Errors
    * ``20000``, ``isp.*`` / ``aop.*`` / ``*SYSTEM_ERROR`` sub codes, transport failures: ``AlipayUnavailableError``
      (``alipay.unavailable``, retry; after a ``20000`` on a write, query before retrying it).
    * Bad, unsigned or re-serialised answers, gateway refusals of our setup: the gateway client's own
      ``AlipayBadSignatureError`` / ``AlipayBadResponseError`` / ``AlipayMisconfiguredError``.
    * Business failures (``40004``, and any other failure answer): ``AlipayTradeRejectedError``
      (``alipay.trade_rejected``) carrying ``sub_code``; the subclasses in ``REJECTIONS`` for the sub codes a
      caller acts on.
    * Our own input refused before sending: ``AlipayTradeRequestError`` / ``AlipayAmountError``.
    Messages are Chinese and shown as is; no message or detail carries a buyer id (Alipay's ``sub_msg`` is
    kept on the error, not in its detail).

Unconfirmed
    The daily bill's exact columns (refund rows especially) and the sub_code of a bill that does not exist
    (``isp.bill_not_exist``, older documents ``BILL_NOT_EXIST``: both mapped).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import ClassVar, Final, Literal, NoReturn, get_args
from urllib.parse import urlencode

import httpx

from domain.account.ports import LoginCodeError, ProviderUnavailableError
from domain.kernel.errors import ConflictError, ValidationError
from integrations.alipay.client import (
    AlipayBadResponseError,
    AlipayBusinessError,
    AlipayClient,
    AlipayUnavailableError,
)
from integrations.alipay.signing import format_timestamp, load_public_key, parse_timestamp, verify_notify

TRADE_CREATE: Final = "alipay.trade.create"
TRADE_APP_PAY: Final = "alipay.trade.app.pay"
TRADE_QUERY: Final = "alipay.trade.query"
TRADE_CLOSE: Final = "alipay.trade.close"
TRADE_REFUND: Final = "alipay.trade.refund"
REFUND_QUERY: Final = "alipay.trade.fastpay.refund.query"
BILL_URL_QUERY: Final = "alipay.data.dataservice.bill.downloadurl.query"

JSAPI_PAY: Final = "JSAPI_PAY"
"""``product_code`` of mini-program payments (``alipay.trade.create`` + ``my.tradePay``)."""
APP_PAY: Final = "QUICK_MSECURITY_PAY"
"""``product_code`` of in-app payments (``alipay.trade.app.pay``)."""
TRADE_STATUS_SYNC: Final = "trade_status_sync"
REFUND_SUCCESS: Final = "REFUND_SUCCESS"

MIN_FEN: Final = 1
MAX_FEN: Final = 10_000_000_000
"""0.01 to 100000000.00 yuan: the documented range of ``total_amount`` and ``refund_amount``."""

TradeStatus = Literal["WAIT_BUYER_PAY", "TRADE_CLOSED", "TRADE_SUCCESS", "TRADE_FINISHED"]
TRADE_STATUSES: Final = frozenset(get_args(TradeStatus))
BillType = Literal["trade", "signcustomer"]

UNAVAILABLE_MESSAGE: Final = "支付宝支付服务暂时不可用，请稍后再试"
MAX_BILL_BYTES: Final = 64 * 1024 * 1024
MAX_BILL_MEMBER_BYTES: Final = 256 * 1024 * 1024

_USER_ID = re.compile(r"2088\d{12}")
_OUT_NO = re.compile(r"[0-9A-Za-z_\-]{1,64}")
_YUAN = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,2})?")
_SIGNED_YUAN = re.compile(r"-?[0-9]{1,12}(?:\.[0-9]{1,2})?")
_SUBJECT_FORBIDDEN = frozenset("/=&")
_CENT = Decimal("0.01")


# -- errors --------------------------------------------------------------------------------------------------------


class AlipayTradeRequestError(ValidationError):
    """Our own request is malformed (an order number, subject, buyer or URL Alipay would refuse)."""

    code = "alipay.invalid_request"
    message = "支付请求参数有误"


class AlipayAmountError(AlipayTradeRequestError):
    """An amount outside 0.01-100000000.00 yuan, or not integer fen."""

    code = "alipay.invalid_amount"
    message = "金额须在0.01元至100000000.00元之间"


class AlipayTradeRejectedError(ConflictError):
    """Alipay refused a trade call for a business reason (``40004`` and other failure answers). Final:
    retrying the same request gives the same answer. ``sub_code`` says why."""

    code = "alipay.trade_rejected"
    message = "支付宝未受理本次交易请求"
    SUB_CODES: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        detail: str | None = None,
        *,
        sub_code: str | None,
        alipay_code: str | None = None,
        sub_msg: str | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(detail, extra={**(extra or {}), "alipay_code": alipay_code, "sub_code": sub_code})
        self.sub_code = sub_code
        self.alipay_code = alipay_code
        self.sub_msg = sub_msg
        """Alipay's own explanation; kept off ``detail`` (it may echo request values)."""


class AlipayTradeNotFoundError(AlipayTradeRejectedError):
    """``ACQ.TRADE_NOT_EXIST``: no such trade (also: a created trade the buyer never opened, for a query)."""

    code = "alipay.trade_not_exist"
    message = "支付宝交易不存在"
    SUB_CODES = frozenset({"ACQ.TRADE_NOT_EXIST"})


class AlipayTradeHasSuccessError(AlipayTradeRejectedError):
    """``ACQ.TRADE_HAS_SUCCESS``: the trade is already paid (creating or paying it again)."""

    code = "alipay.trade_has_success"
    message = "该订单已支付，请勿重复支付"
    SUB_CODES = frozenset({"ACQ.TRADE_HAS_SUCCESS"})


class AlipayTradeStatusError(AlipayTradeRejectedError):
    """``ACQ.TRADE_STATUS_ERROR``: the trade's state forbids this (closing a paid trade, refunding an unpaid one)."""

    code = "alipay.trade_status_error"
    message = "交易当前状态不允许此操作"
    SUB_CODES = frozenset({"ACQ.TRADE_STATUS_ERROR"})


class AlipayTradeClosedError(AlipayTradeStatusError):
    """``ACQ.TRADE_HAS_CLOSE``: the trade is closed (expired unpaid, closed, or fully refunded)."""

    code = "alipay.trade_has_close"
    message = "该交易已关闭"
    SUB_CODES = frozenset({"ACQ.TRADE_HAS_CLOSE"})


class AlipayTradeFinishedError(AlipayTradeStatusError):
    """``ACQ.TRADE_HAS_FINISHED``: the trade is finished and can no longer be refunded."""

    code = "alipay.trade_has_finished"
    message = "该交易已完结，不能退款"
    SUB_CODES = frozenset({"ACQ.TRADE_HAS_FINISHED"})


class AlipaySellerBalanceNotEnoughError(AlipayTradeRejectedError):
    """``ACQ.SELLER_BALANCE_NOT_ENOUGH``: the merchant account cannot fund the refund now. Retry with the same
    ``out_request_no`` once the account is topped up."""

    code = "alipay.seller_balance_not_enough"
    message = "商户账户余额不足，退款暂时无法完成"
    SUB_CODES = frozenset({"ACQ.SELLER_BALANCE_NOT_ENOUGH"})


class AlipayRefundAmountError(AlipayTradeRejectedError):
    """The refund would exceed what is left to refund (``ACQ.REASON_TRADE_REFUND_FEE_ERR``) or, without an
    ``out_request_no``, differs from the total (``ACQ.REFUND_AMT_NOT_EQUAL_TOTAL``)."""

    code = "alipay.refund_amount_invalid"
    message = "退款金额超过可退金额"
    SUB_CODES = frozenset({"ACQ.REASON_TRADE_REFUND_FEE_ERR", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"})


class AlipayTradeInconsistentError(AlipayTradeRejectedError):
    """``ACQ.CONTEXT_INCONSISTENT``: the same ``out_trade_no`` was created before with other details (amount,
    buyer)."""

    code = "alipay.trade_context_inconsistent"
    message = "同一订单号的交易信息不一致"
    SUB_CODES = frozenset({"ACQ.CONTEXT_INCONSISTENT"})


class AlipayBillNotFoundError(AlipayTradeRejectedError):
    """No bill for that date (not generated yet: bills are for past days only)."""

    code = "alipay.bill_not_exist"
    message = "该日账单尚未生成或不存在"
    SUB_CODES = frozenset({"isp.bill_not_exist", "isv.bill_not_exist", "BILL_NOT_EXIST"})


REJECTIONS: Final[tuple[type[AlipayTradeRejectedError], ...]] = (
    AlipayTradeNotFoundError,
    AlipayTradeHasSuccessError,
    AlipayTradeStatusError,
    AlipayTradeClosedError,
    AlipayTradeFinishedError,
    AlipaySellerBalanceNotEnoughError,
    AlipayRefundAmountError,
    AlipayTradeInconsistentError,
    AlipayBillNotFoundError,
)
_REJECTION_BY_SUB_CODE: Final[Mapping[str, type[AlipayTradeRejectedError]]] = {
    sub_code: cls for cls in REJECTIONS for sub_code in cls.SUB_CODES
}


class AlipayNotificationError(ValidationError):
    """A notification we must not act on: its signature does not verify under the Alipay key, it is not a
    ``trade_status_sync``, or its fields are malformed. Answer anything but ``success``."""

    code = "alipay.notify_invalid"
    message = "支付宝通知验签失败"


class AlipayNotificationMismatchError(AlipayNotificationError):
    """A genuine notification for another app or seller account than ours."""

    code = "alipay.notify_mismatch"
    message = "支付宝通知与本商户不符"


# -- amounts and times ---------------------------------------------------------------------------------------------


def to_yuan(fen: int) -> str:
    """Integer fen as Alipay's yuan string with exactly two decimals: 1 -> ``"0.01"``, 100 -> ``"1.00"``."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise TypeError("amounts are integer fen")
    if fen < 0:
        raise ValueError("a negative amount")
    return str((Decimal(fen) / 100).quantize(_CENT))


def to_fen(yuan: str, *, signed: bool = False) -> int:
    """Alipay's yuan string as integer fen, exactly (see the module docstring for what is accepted).

    ``signed`` also accepts a leading ``-`` (bill rows of refunds and fees). Raises ``ValueError``.
    """
    if not isinstance(yuan, str) or (_SIGNED_YUAN if signed else _YUAN).fullmatch(yuan) is None:
        raise ValueError(f"not a yuan amount with at most two decimals: {yuan!r}")
    fen = Decimal(yuan) * 100
    if fen != fen.to_integral_value():  # pragma: no cover - the pattern allows two decimals at most
        raise ValueError(f"not an exact amount: {yuan!r}")
    return int(fen)


def _amount(fen: int, what: str) -> str:
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise AlipayAmountError(f"{what} must be integer fen")
    if not MIN_FEN <= fen <= MAX_FEN:
        raise AlipayAmountError(f"{what} {fen} fen is outside 1..{MAX_FEN}")
    return to_yuan(fen)


def parse_alipay_time(text: str) -> datetime:
    """``yyyy-MM-dd HH:mm:ss`` (optionally ``.SSS``, as ``gmt_refund`` has it), Beijing time, as aware UTC."""
    whole, dot, fraction = text.strip().partition(".")
    instant = parse_timestamp(whole)
    if dot:
        if not fraction.isdigit() or not fraction.isascii() or len(fraction) > 6:
            raise ValueError(f"bad fraction of a second in {text!r}")
        instant += timedelta(microseconds=int(fraction.ljust(6, "0")))
    return instant


# -- results -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlipayTrade:
    """An ``alipay.trade.query`` answer, in fen. Buyer ids are personal data: kept out of ``repr``."""

    trade_no: str
    out_trade_no: str
    status: TradeStatus
    total_fen: int
    buyer_pay_fen: int | None = None
    receipt_fen: int | None = None
    send_pay_date: datetime | None = None
    """When the buyer paid (UTC); None until then."""
    buyer_user_id: str | None = field(default=None, repr=False)
    buyer_open_id: str | None = field(default=None, repr=False)

    @property
    def is_paid(self) -> bool:
        """Paid: ``TRADE_SUCCESS`` (refundable) or ``TRADE_FINISHED`` (no longer refundable)."""
        return self.status in ("TRADE_SUCCESS", "TRADE_FINISHED")

    @property
    def is_closed(self) -> bool:
        """Closed: unpaid and expired or closed, or paid and fully refunded (``TRADE_CLOSED``)."""
        return self.status == "TRADE_CLOSED"


@dataclass(frozen=True, slots=True)
class AlipayRefund:
    """An ``alipay.trade.refund`` answer.

    ``fund_change`` False means no money moved by *this* call: usually a repeat of an ``out_request_no`` that
    already succeeded. Confirm with ``refund_query`` before treating it as done.
    """

    trade_no: str
    out_trade_no: str
    out_request_no: str
    requested_fen: int
    fund_change: bool
    refund_fen: int
    """Everything refunded on the trade so far (``refund_fee``, cumulative)."""
    gmt_refund_pay: datetime | None = None


@dataclass(frozen=True, slots=True)
class AlipayRefundStatus:
    """An ``alipay.trade.fastpay.refund.query`` answer. ``succeeded`` only when Alipay says ``REFUND_SUCCESS``;
    otherwise the refund was not received, failed, or is still in progress (ask again later)."""

    out_trade_no: str
    out_request_no: str
    succeeded: bool
    trade_no: str | None = None
    refund_fen: int | None = None
    """The amount of this refund request."""
    total_fen: int | None = None
    gmt_refund_pay: datetime | None = None


@dataclass(frozen=True, slots=True)
class AlipayNotification:
    """A verified ``trade_status_sync`` notification, in fen.

    A payment: ``TRADE_SUCCESS`` (or ``TRADE_FINISHED``) with ``gmt_payment``. A partial refund: still
    ``TRADE_SUCCESS`` with ``refund_fen`` (cumulative ``refund_fee``), ``gmt_refund`` and ``out_biz_no`` (the
    refund's ``out_request_no``); a full refund: ``TRADE_CLOSED``. Always confirm refunds with the refund API.
    """

    notify_id: str
    notify_time: datetime
    app_id: str
    trade_no: str
    out_trade_no: str
    trade_status: TradeStatus
    total_fen: int
    receipt_fen: int | None = None
    buyer_pay_fen: int | None = None
    refund_fen: int | None = None
    out_biz_no: str | None = None
    seller_id: str | None = None
    gmt_create: datetime | None = None
    gmt_payment: datetime | None = None
    gmt_refund: datetime | None = None
    gmt_close: datetime | None = None
    passback_params: str | None = None
    buyer_id: str | None = field(default=None, repr=False)
    buyer_open_id: str | None = field(default=None, repr=False)

    @property
    def is_refund(self) -> bool:
        return self.out_biz_no is not None or self.refund_fen is not None

    def matches(self, out_trade_no: str, total_fen: int) -> bool:
        """Whether it is about our order of that number and amount (protocols §3.5: check before acting)."""
        return self.out_trade_no == out_trade_no and self.total_fen == total_fen


@dataclass(frozen=True, slots=True)
class AlipayBillEntry:
    """One row of the daily trade bill's detail list (``业务明细``), in fen; refunds carry negative
    ``received_fen``."""

    trade_no: str
    out_trade_no: str
    kind: str
    """``交易`` (a payment) or ``退款`` (a refund)."""
    subject: str
    created_at: datetime | None
    finished_at: datetime | None
    total_fen: int
    received_fen: int
    out_request_no: str | None = None
    service_fee_fen: int | None = None


# -- helpers -------------------------------------------------------------------------------------------------------


def _text(payload: Mapping[str, object], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) and value else None


def _required(payload: Mapping[str, object], key: str, method: str) -> str:
    value = _text(payload, key)
    if value is None:
        raise AlipayBadResponseError(f"{method}: the answer has no {key}")
    return value


def _fen_of(payload: Mapping[str, object], key: str, method: str) -> int | None:
    value = _text(payload, key)
    if value is None:
        return None
    try:
        return to_fen(value)
    except ValueError as exc:
        raise AlipayBadResponseError(f"{method}: {key} is not a yuan amount") from exc


def _time_of(payload: Mapping[str, object], key: str, method: str) -> datetime | None:
    value = _text(payload, key)
    if value is None:
        return None
    try:
        return parse_alipay_time(value)
    except ValueError as exc:
        raise AlipayBadResponseError(f"{method}: {key} is not a Beijing time") from exc


def _out_no(value: str, what: str) -> str:
    if not isinstance(value, str) or _OUT_NO.fullmatch(value) is None:
        raise AlipayTradeRequestError(f"{what} must be 1-64 letters, digits, '_' or '-'")
    return value


def _subject(value: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise AlipayTradeRequestError("subject must be 1-256 characters")
    if _SUBJECT_FORBIDDEN.intersection(value):
        raise AlipayTradeRequestError("subject must not hold '/', '=' or '&'")
    return value


def _notify_url(value: str) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")) or len(value) > 256:
        raise AlipayTradeRequestError("notify_url must be an http(s) URL of at most 256 characters")
    return value


def _transient(sub_code: str | None) -> bool:
    return sub_code is not None and (sub_code.startswith(("isp.", "aop.")) or sub_code.upper().endswith("SYSTEM_ERROR"))


def _check_echo(payload: Mapping[str, object], key: str, expected: str, method: str) -> None:
    echoed = _text(payload, key)
    if echoed is not None and echoed != expected:
        raise AlipayBadResponseError(f"{method}: the answer is about another {key}")


# -- the client ----------------------------------------------------------------------------------------------------


class AlipayTradeClient:
    """One app's payments through its ``AlipayClient`` (which signs requests and verifies answers).

    ``alipay_public_key_pem`` (the same key the gateway client verifies answers with) verifies notifications;
    ``http`` downloads bills; ``seller_id`` (the merchant's ``2088`` id), when given, is checked on every
    notification.
    """

    def __init__(
        self,
        client: AlipayClient,
        *,
        alipay_public_key_pem: bytes,
        http: httpx.AsyncClient,
        seller_id: str | None = None,
        bill_timeout_seconds: float = 30.0,
        max_bill_bytes: int = MAX_BILL_BYTES,
    ) -> None:
        load_public_key(alipay_public_key_pem)  # an unusable key fails here, not on every notification
        self._client = client
        self._alipay_public_key = alipay_public_key_pem
        self._http = http
        self._seller_id = seller_id
        self._bill_timeout = bill_timeout_seconds
        self._max_bill_bytes = max_bill_bytes

    @property
    def app_id(self) -> str:
        return self._client.app_id

    # -- calls ------------------------------------------------------------------------------------------------------

    async def _call(self, method: str, biz_content: Mapping[str, object], **extra: str) -> dict[str, object]:
        try:
            return await self._client.call(method, biz_content=biz_content, extra_params=extra or None)
        except AlipayBusinessError as exc:
            self._raise_rejected(method, exc)
        except LoginCodeError as exc:  # 40002 isv.code-invalid: meaningless for trades, refused all the same
            raise AlipayTradeRejectedError(
                f"{method}: 40002 isv.code-invalid", sub_code="isv.code-invalid", alipay_code="40002"
            ) from exc
        except ProviderUnavailableError as exc:
            exc.message = UNAVAILABLE_MESSAGE
            raise

    def _raise_rejected(self, method: str, exc: AlipayBusinessError) -> NoReturn:
        detail = f"{method}: {exc.alipay_code} {exc.sub_code or ''}".strip()
        extra = {"method": method, "alipay_code": exc.alipay_code, "sub_code": exc.sub_code}
        rejection = _REJECTION_BY_SUB_CODE.get(exc.sub_code or "")
        if rejection is not None:
            raise rejection(detail, sub_code=exc.sub_code, alipay_code=exc.alipay_code, sub_msg=exc.sub_msg) from exc
        if _transient(exc.sub_code):
            raise AlipayUnavailableError(detail, message=UNAVAILABLE_MESSAGE, extra=extra) from exc
        raise AlipayTradeRejectedError(
            detail, sub_code=exc.sub_code, alipay_code=exc.alipay_code, sub_msg=exc.sub_msg
        ) from exc

    # -- paying -------------------------------------------------------------------------------------------------------

    def create_biz_content(
        self,
        out_trade_no: str,
        total_fen: int,
        subject: str,
        *,
        buyer_id: str | None = None,
        buyer_open_id: str | None = None,
        op_app_id: str | None = None,
        time_expire: datetime | None,
    ) -> dict[str, object]:
        """The checked ``biz_content`` of ``alipay.trade.create`` (raises ``AlipayTradeRequestError``)."""
        content: dict[str, object] = {
            "out_trade_no": _out_no(out_trade_no, "out_trade_no"),
            "total_amount": _amount(total_fen, "total"),
            "subject": _subject(subject),
            "product_code": JSAPI_PAY,
        }
        if (buyer_id is None) == (buyer_open_id is None):
            raise AlipayTradeRequestError("give exactly one of buyer_id and buyer_open_id")
        if buyer_id is not None:
            if _USER_ID.fullmatch(buyer_id) is None:
                raise AlipayTradeRequestError("buyer_id is 2088 followed by 12 digits")
            if op_app_id is not None:
                raise AlipayTradeRequestError("op_app_id goes with buyer_open_id only")
            content["buyer_id"] = buyer_id
        else:
            if not buyer_open_id or len(buyer_open_id) > 128:
                raise AlipayTradeRequestError("buyer_open_id must be 1-128 characters")
            content["buyer_open_id"] = buyer_open_id
            content["op_app_id"] = op_app_id or self._client.app_id
        if time_expire is not None:
            content["time_expire"] = format_timestamp(time_expire)
        return content

    async def create(
        self,
        out_trade_no: str,
        total_fen: int,
        subject: str,
        *,
        buyer_id: str | None = None,
        buyer_open_id: str | None = None,
        op_app_id: str | None = None,
        time_expire: datetime | None,
        notify_url: str,
    ) -> str:
        """``alipay.trade.create`` for the mini-program (``JSAPI_PAY``); returns the ``trade_no`` the client
        passes to ``my.tradePay({tradeNO})``.

        The buyer is ``buyer_id`` (apps in user-id mode) or ``buyer_open_id`` (open-id mode; ``op_app_id``
        defaults to this app, the mini-program). Creating the same ``out_trade_no`` again with the same details
        answers the same ``trade_no``; with another amount: ``AlipayTradeInconsistentError``; once paid:
        ``AlipayTradeHasSuccessError``; once closed: ``AlipayTradeClosedError``.
        """
        content = self.create_biz_content(
            out_trade_no,
            total_fen,
            subject,
            buyer_id=buyer_id,
            buyer_open_id=buyer_open_id,
            op_app_id=op_app_id,
            time_expire=time_expire,
        )
        payload = await self._call(TRADE_CREATE, content, notify_url=_notify_url(notify_url))
        _check_echo(payload, "out_trade_no", out_trade_no, TRADE_CREATE)
        return _required(payload, "trade_no", TRADE_CREATE)

    def app_pay_order_string(
        self,
        out_trade_no: str,
        total_fen: int,
        subject: str,
        *,
        time_expire: datetime | None,
        notify_url: str,
    ) -> str:
        """The signed ``alipay.trade.app.pay`` order string the patient app hands to the Alipay SDK (no HTTP).

        Every parameter (common ones, ``notify_url`` and ``biz_content``) form-encoded as the official SDKs'
        ``sdk_execute`` does (``quote_plus``, UTF-8), signed with the app key under the request rule.
        """
        content: dict[str, object] = {
            "out_trade_no": _out_no(out_trade_no, "out_trade_no"),
            "total_amount": _amount(total_fen, "total"),
            "subject": _subject(subject),
            "product_code": APP_PAY,
        }
        if time_expire is not None:
            content["time_expire"] = format_timestamp(time_expire)
        params = self._client.signed_params(
            TRADE_APP_PAY, biz_content=content, extra_params={"notify_url": _notify_url(notify_url)}
        )
        return urlencode(params, encoding="utf-8")

    # -- looking and closing ----------------------------------------------------------------------------------------

    async def query(self, out_trade_no: str) -> AlipayTrade:
        """``alipay.trade.query``. Raises ``AlipayTradeNotFoundError`` for ``ACQ.TRADE_NOT_EXIST``."""
        payload = await self._call(TRADE_QUERY, {"out_trade_no": _out_no(out_trade_no, "out_trade_no")})
        _check_echo(payload, "out_trade_no", out_trade_no, TRADE_QUERY)
        status = _required(payload, "trade_status", TRADE_QUERY)
        if status not in TRADE_STATUSES:
            raise AlipayBadResponseError(f"{TRADE_QUERY}: unknown trade_status {status!r}")
        total = _fen_of(payload, "total_amount", TRADE_QUERY)
        if total is None:
            raise AlipayBadResponseError(f"{TRADE_QUERY}: the answer has no total_amount")
        return AlipayTrade(
            trade_no=_required(payload, "trade_no", TRADE_QUERY),
            out_trade_no=out_trade_no,
            status=status,  # type: ignore[arg-type]  # checked against TRADE_STATUSES above
            total_fen=total,
            buyer_pay_fen=_fen_of(payload, "buyer_pay_amount", TRADE_QUERY),
            receipt_fen=_fen_of(payload, "receipt_amount", TRADE_QUERY),
            send_pay_date=_time_of(payload, "send_pay_date", TRADE_QUERY),
            buyer_user_id=_text(payload, "buyer_user_id"),
            buyer_open_id=_text(payload, "buyer_open_id"),
        )

    async def close(self, out_trade_no: str) -> None:
        """``alipay.trade.close`` of an unpaid trade. A paid or already closed trade: ``AlipayTradeStatusError``;
        unknown: ``AlipayTradeNotFoundError`` (nothing to close either way: the caller decides)."""
        payload = await self._call(TRADE_CLOSE, {"out_trade_no": _out_no(out_trade_no, "out_trade_no")})
        _check_echo(payload, "out_trade_no", out_trade_no, TRADE_CLOSE)

    # -- refunds -----------------------------------------------------------------------------------------------------

    async def refund(
        self, out_trade_no: str, refund_fen: int, out_request_no: str, reason: str | None = None
    ) -> AlipayRefund:
        """``alipay.trade.refund`` of ``refund_fen`` under the idempotency key ``out_request_no``.

        Refunds add up to at most the paid total (``AlipayRefundAmountError`` beyond). Retry a failed or
        unknown refund with the same ``out_request_no``.
        """
        content: dict[str, object] = {
            "out_trade_no": _out_no(out_trade_no, "out_trade_no"),
            "refund_amount": _amount(refund_fen, "refund"),
            "out_request_no": _out_no(out_request_no, "out_request_no"),
        }
        if reason:
            if len(reason) > 256:
                raise AlipayTradeRequestError("refund_reason must be at most 256 characters")
            content["refund_reason"] = reason
        payload = await self._call(TRADE_REFUND, content)
        _check_echo(payload, "out_trade_no", out_trade_no, TRADE_REFUND)
        fund_change = _text(payload, "fund_change")
        if fund_change not in ("Y", "N"):
            raise AlipayBadResponseError(f"{TRADE_REFUND}: fund_change is neither Y nor N")
        refunded = _fen_of(payload, "refund_fee", TRADE_REFUND)
        if refunded is None:
            raise AlipayBadResponseError(f"{TRADE_REFUND}: the answer has no refund_fee")
        return AlipayRefund(
            trade_no=_required(payload, "trade_no", TRADE_REFUND),
            out_trade_no=out_trade_no,
            out_request_no=out_request_no,
            requested_fen=refund_fen,
            fund_change=fund_change == "Y",
            refund_fen=refunded,
            gmt_refund_pay=_time_of(payload, "gmt_refund_pay", TRADE_REFUND),
        )

    async def refund_query(self, out_trade_no: str, out_request_no: str) -> AlipayRefundStatus:
        """``alipay.trade.fastpay.refund.query`` (with ``query_options`` ``gmt_refund_pay``)."""
        content: dict[str, object] = {
            "out_trade_no": _out_no(out_trade_no, "out_trade_no"),
            "out_request_no": _out_no(out_request_no, "out_request_no"),
            "query_options": ["gmt_refund_pay"],
        }
        payload = await self._call(REFUND_QUERY, content)
        _check_echo(payload, "out_trade_no", out_trade_no, REFUND_QUERY)
        _check_echo(payload, "out_request_no", out_request_no, REFUND_QUERY)
        return AlipayRefundStatus(
            out_trade_no=out_trade_no,
            out_request_no=out_request_no,
            succeeded=_text(payload, "refund_status") == REFUND_SUCCESS,
            trade_no=_text(payload, "trade_no"),
            refund_fen=_fen_of(payload, "refund_amount", REFUND_QUERY),
            total_fen=_fen_of(payload, "total_amount", REFUND_QUERY),
            gmt_refund_pay=_time_of(payload, "gmt_refund_pay", REFUND_QUERY),
        )

    # -- bills ---------------------------------------------------------------------------------------------------------

    async def bill_download_url(self, bill_date: date, bill_type: BillType = "trade") -> str:
        """``alipay.data.dataservice.bill.downloadurl.query`` for one past day; the URL is valid ~30 s.

        A day without a bill yet (today, the future): ``AlipayBillNotFoundError``.
        """
        if isinstance(bill_date, datetime) or not isinstance(bill_date, date):
            raise AlipayTradeRequestError("bill_date is a date (a Beijing calendar day)")
        if bill_type not in get_args(BillType):
            raise AlipayTradeRequestError("bill_type is 'trade' or 'signcustomer'")
        payload = await self._call(
            BILL_URL_QUERY, {"bill_type": bill_type, "bill_date": bill_date.strftime("%Y-%m-%d")}
        )
        url = _required(payload, "bill_download_url", BILL_URL_QUERY)
        if not url.startswith(("https://", "http://")):
            raise AlipayBadResponseError(f"{BILL_URL_QUERY}: bill_download_url is not an http(s) URL")
        return url

    async def download_bill(self, url: str) -> bytes:
        """The bill file behind a ``bill_download_url``: a zip of GBK CSVs (see ``parse_trade_bill``).

        An expired link, an HTTP error or a timeout: ``AlipayUnavailableError`` (ask for a new URL and retry);
        anything but a zip or over ``max_bill_bytes``: ``AlipayBadResponseError``.
        """
        if not url.startswith(("https://", "http://")):
            raise AlipayTradeRequestError("a bill URL is an http(s) URL")
        chunks: list[bytes] = []
        size = 0
        try:
            async with self._http.stream("GET", url, timeout=self._bill_timeout) as response:
                if response.status_code != 200:
                    raise AlipayUnavailableError(
                        f"bill download: HTTP {response.status_code}", message=UNAVAILABLE_MESSAGE
                    )
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self._max_bill_bytes:
                        raise AlipayBadResponseError("bill download: larger than allowed")
                    chunks.append(chunk)
        except httpx.TimeoutException as exc:
            raise AlipayUnavailableError("bill download: timed out", message=UNAVAILABLE_MESSAGE) from exc
        except httpx.HTTPError as exc:
            raise AlipayUnavailableError(f"bill download: {type(exc).__name__}", message=UNAVAILABLE_MESSAGE) from exc
        data = b"".join(chunks)
        if not data.startswith(b"PK\x03\x04"):
            raise AlipayBadResponseError("bill download: the file is not a zip")
        return data

    # -- notifications ------------------------------------------------------------------------------------------------

    def parse_notification(self, params: Mapping[str, str]) -> AlipayNotification:
        """``parse_notification`` with this app's Alipay key, app id and (when configured) seller id."""
        return parse_notification(
            params,
            alipay_public_key_pem=self._alipay_public_key,
            app_id=self._client.app_id,
            seller_id=self._seller_id,
        )


# -- notifications -------------------------------------------------------------------------------------------------


def _notify_fen(params: Mapping[str, str], key: str) -> int | None:
    value = params.get(key)
    if not value:
        return None
    try:
        return to_fen(value)
    except ValueError as exc:
        raise AlipayNotificationError(f"notification {key} is not a yuan amount") from exc


def _notify_time(params: Mapping[str, str], key: str) -> datetime | None:
    value = params.get(key)
    if not value:
        return None
    try:
        return parse_alipay_time(value)
    except ValueError as exc:
        raise AlipayNotificationError(f"notification {key} is not a Beijing time") from exc


def _notify_text(params: Mapping[str, str], key: str) -> str:
    value = params.get(key)
    if not value:
        raise AlipayNotificationError(f"notification without {key}")
    return value


def parse_notification(
    params: Mapping[str, str],
    *,
    alipay_public_key_pem: bytes,
    app_id: str | None = None,
    seller_id: str | None = None,
) -> AlipayNotification:
    """A ``trade_status_sync`` notification (the form fields as received, decoded once), verified and typed.

    Verifies with ``verify_notify`` under the trade rule only (``sign`` and ``sign_type`` left out), then
    checks ``app_id`` / ``seller_id`` when given. Raises ``AlipayNotificationError`` (bad signature, another
    notify type, malformed fields) or ``AlipayNotificationMismatchError``. The caller still checks
    ``out_trade_no`` and the amount against its order (``AlipayNotification.matches``) and answers ``success``
    only once the notification is durably handled.
    """
    if not verify_notify(params, alipay_public_key_pem=alipay_public_key_pem, try_with_sign_type=False):
        raise AlipayNotificationError("the notification's signature does not verify under the Alipay key")
    if params.get("notify_type") != TRADE_STATUS_SYNC:
        raise AlipayNotificationError("not a trade_status_sync notification")
    notified_app = _notify_text(params, "app_id")
    if app_id is not None and notified_app != app_id:
        raise AlipayNotificationMismatchError("the notification is for another app")
    notified_seller = params.get("seller_id") or None
    if seller_id is not None and notified_seller != seller_id:
        raise AlipayNotificationMismatchError("the notification is for another seller account")
    status = _notify_text(params, "trade_status")
    if status not in TRADE_STATUSES:
        raise AlipayNotificationError(f"unknown trade_status {status!r}")
    total = _notify_fen(params, "total_amount")
    notify_time = _notify_time(params, "notify_time")
    if total is None or notify_time is None:
        raise AlipayNotificationError("notification without total_amount or notify_time")
    return AlipayNotification(
        notify_id=_notify_text(params, "notify_id"),
        notify_time=notify_time,
        app_id=notified_app,
        trade_no=_notify_text(params, "trade_no"),
        out_trade_no=_notify_text(params, "out_trade_no"),
        trade_status=status,  # type: ignore[arg-type]  # checked against TRADE_STATUSES above
        total_fen=total,
        receipt_fen=_notify_fen(params, "receipt_amount"),
        buyer_pay_fen=_notify_fen(params, "buyer_pay_amount"),
        refund_fen=_notify_fen(params, "refund_fee"),
        out_biz_no=params.get("out_biz_no") or None,
        seller_id=notified_seller,
        gmt_create=_notify_time(params, "gmt_create"),
        gmt_payment=_notify_time(params, "gmt_payment"),
        gmt_refund=_notify_time(params, "gmt_refund"),
        gmt_close=_notify_time(params, "gmt_close"),
        passback_params=params.get("passback_params") or None,
        buyer_id=params.get("buyer_id") or None,
        buyer_open_id=params.get("buyer_open_id") or None,
    )


# -- bills ---------------------------------------------------------------------------------------------------------

BILL_HEADER_FIRST: Final = "支付宝交易号"
_BILL_STRIP: Final = " \t`\r\n\ufeff"


def _bill_column(name: str) -> str:
    return name.strip(_BILL_STRIP).replace("（", "(").replace("）", ")")


def _bill_cell(row: Mapping[str, str], column: str) -> str:
    return row.get(column, "").strip(_BILL_STRIP)


def _bill_fen(row: Mapping[str, str], column: str) -> int | None:
    text = _bill_cell(row, column)
    if not text:
        return None
    try:
        return to_fen(text, signed=True)
    except ValueError as exc:
        raise AlipayBadResponseError(f"bill: {column} is not a yuan amount") from exc


def _bill_amount(row: Mapping[str, str], column: str) -> int:
    fen = _bill_fen(row, column)
    if fen is None:
        raise AlipayBadResponseError(f"bill: a row without {column}")
    return fen


def _bill_time(row: Mapping[str, str], column: str) -> datetime | None:
    text = _bill_cell(row, column)
    if not text:
        return None
    try:
        return parse_alipay_time(text)
    except ValueError as exc:
        raise AlipayBadResponseError(f"bill: {column} is not a Beijing time") from exc


def _detail_rows(text: str) -> list[dict[str, str]] | None:
    """The detail list of one CSV of the bill, or None when the CSV is not the detail list (the summary)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip(_BILL_STRIP).startswith("#")]
    reader = csv.reader(lines)
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for cells in reader:
        if header is None:
            if cells and _bill_column(cells[0]) == BILL_HEADER_FIRST:
                header = [_bill_column(cell) for cell in cells]
            continue
        rows.append(dict(zip(header, cells, strict=False)))
    return rows if header is not None else None


def parse_trade_bill(data: bytes) -> list[AlipayBillEntry]:
    """The detail rows (``业务明细``) of a downloaded trade bill, in fen.

    The zip holds the detail CSV and a summary CSV (``业务明细(汇总)``), both GBK, with ``#`` comment lines
    around a header row that starts with ``支付宝交易号``; the detail CSV is found by that header, not by its
    member name (whose encoding varies). Columns are found by name, with half- or full-width brackets; cells
    are stripped of the tabs and backquotes Alipay pads ids with. Raises ``AlipayBadResponseError``.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise AlipayBadResponseError("bill: not a zip file") from exc
    rows: list[dict[str, str]] | None = None
    with archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.lower().endswith(".csv"):
                continue
            if info.file_size > MAX_BILL_MEMBER_BYTES:
                raise AlipayBadResponseError("bill: a member is larger than allowed")
            try:
                text = archive.read(info).decode("gb18030")
            except (zipfile.BadZipFile, UnicodeDecodeError, ValueError) as exc:
                raise AlipayBadResponseError("bill: a member is not a GBK CSV") from exc
            found = _detail_rows(text)
            if found is not None:
                rows = found
                break
    if rows is None:
        raise AlipayBadResponseError("bill: no detail list (业务明细) in the zip")
    entries: list[AlipayBillEntry] = []
    for row in rows:
        trade_no = _bill_cell(row, "支付宝交易号")
        if not trade_no:
            raise AlipayBadResponseError("bill: a row without 支付宝交易号")
        entries.append(
            AlipayBillEntry(
                trade_no=trade_no,
                out_trade_no=_bill_cell(row, "商户订单号"),
                kind=_bill_cell(row, "业务类型"),
                subject=_bill_cell(row, "商品名称"),
                created_at=_bill_time(row, "创建时间"),
                finished_at=_bill_time(row, "完成时间"),
                total_fen=_bill_amount(row, "订单金额(元)"),
                received_fen=_bill_amount(row, "商家实收(元)"),
                out_request_no=_bill_cell(row, "退款批次号/请求号") or None,
                service_fee_fen=_bill_fen(row, "服务费(元)"),
            )
        )
    return entries


__all__ = [
    "APP_PAY",
    "BILL_URL_QUERY",
    "JSAPI_PAY",
    "MAX_FEN",
    "MIN_FEN",
    "REFUND_QUERY",
    "REJECTIONS",
    "TRADE_APP_PAY",
    "TRADE_CLOSE",
    "TRADE_CREATE",
    "TRADE_QUERY",
    "TRADE_REFUND",
    "AlipayAmountError",
    "AlipayBillEntry",
    "AlipayBillNotFoundError",
    "AlipayNotification",
    "AlipayNotificationError",
    "AlipayNotificationMismatchError",
    "AlipayRefund",
    "AlipayRefundAmountError",
    "AlipayRefundStatus",
    "AlipaySellerBalanceNotEnoughError",
    "AlipayTrade",
    "AlipayTradeClient",
    "AlipayTradeClosedError",
    "AlipayTradeFinishedError",
    "AlipayTradeHasSuccessError",
    "AlipayTradeInconsistentError",
    "AlipayTradeNotFoundError",
    "AlipayTradeRejectedError",
    "AlipayTradeRequestError",
    "AlipayTradeStatusError",
    "BillType",
    "TradeStatus",
    "parse_alipay_time",
    "parse_notification",
    "parse_trade_bill",
    "to_fen",
    "to_yuan",
]
