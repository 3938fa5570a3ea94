"""The Alipay OpenAPI v2 simulator: ``gateway.do`` with RSA2 both ways (protocols §3, §7).

Vendor route: ``GET|POST /sandbox/alipay/gateway.do``. Parameters are read from the query string and the
``application/x-www-form-urlencoded`` body merged (the official SDKs put the common parameters in the query
and the rest in the body; python-alipay-sdk sends everything as a query). The request signature is checked
as the gateway does (every parameter but ``sign``, empty values dropped, sorted, raw ``k=v`` joined by
``&``, SHA256withRSA under the app's public key), then the ``timestamp`` against the shared clock, then the
``method`` is dispatched through ``AlipaySimulator.methods``. Answers are
``{"<method>_response" | "error_response": {...}, "sign": "..."}`` signed over the exact inner text with the
simulator's own "Alipay" private key; errors raised before the app is known (no or an unknown ``app_id``)
are not signed.

Methods now: ``alipay.system.oauth.token`` (``grant_type=authorization_code``). Auth codes come from the
helper ``POST /sandbox/alipay/test/auth-code`` (what ``my.getAuthCode`` gives a mini-program), are single
use and expire after ``auth_code_ttl_seconds`` of shared-clock time. Each app answers in ``user_id`` mode
(``2088`` + 12 digits) or ``open_id`` mode, optionally with a ``union_id``.

``alipay.open.app.mini.templatemessage.send`` with a subscribe template: ``biz_content`` holds ``to_user_id``
(apps in ``user_id`` mode) or ``to_open_id`` (apps in ``open_id`` mode), ``user_template_id``, an optional
``page`` and ``data`` (a JSON string, or an object, of ``{"keywordN": {"value": ...}}``). The helper
``POST /sandbox/alipay/test/subscribe-grant`` plays the user accepting ``my.requestSubscribeMessage``
``count`` times (one-time template: one send each) and makes the template known to the app, optionally with
its keyword count. A send checks, in order: the template (``40004 USER_TEMPLATE_ILLEGAL``), the data
(``40002 isv.invalid-parameter`` when malformed; ``USER_TEMPLATE_LACK_KEYWORD`` unless exactly ``keyword1``
.. ``keywordN``, none blank; ``USER_KEYWORD_LENGTH_ERROR`` over 50 characters), then takes one
authorisation of (app, user, template) or answers ``40004`` with ``refused_sub_code`` (default
``USER_NOT_SUBSCRIBED``: a stand-in, Alipay's own code for this case is not confirmed). A delivered message
goes to the ``messages`` stream of the recorder (the inbox:
``GET /sandbox/admin/alipay/requests?stream=messages``). The success answer is ``code``/``msg`` only, as
Alipay's: no message id.

Payments (protocols §3.4-§3.6; ``TRADE_METHODS``). Trades are kept per app, ``out_trade_no`` unique per app:
``alipay.trade.create`` (the same request again answers the same ``trade_no``; another amount, buyer or
subject ``ACQ.CONTEXT_INCONSISTENT``; once paid ``ACQ.TRADE_HAS_SUCCESS``; once closed ``ACQ.TRADE_HAS_CLOSE``),
``alipay.trade.query`` (``ACQ.TRADE_NOT_EXIST``), ``alipay.trade.close`` (unpaid only, else
``ACQ.TRADE_STATUS_ERROR``), ``alipay.trade.refund`` (``out_request_no`` idempotent: a repeat answers
``fund_change`` ``N``; refunds never add up beyond the paid total: ``ACQ.REASON_TRADE_REFUND_FEE_ERR``; a full
refund closes the trade), ``alipay.trade.fastpay.refund.query`` (``refund_status`` ``REFUND_SUCCESS``) and
``alipay.data.dataservice.bill.downloadurl.query`` (``trade`` bills of past Beijing days or months, else
``isp.bill_not_exist``; the link ``GET /sandbox/alipay/downloadBillFile.resource?...&fileId=`` serves, for 30 s
of shared-clock time, a zip of two GBK CSVs: ``<seller>_<yyyyMMdd>_业务明细.csv`` and its ``(汇总)`` summary).
Unpaid trades close at ``time_expire`` (default: 15 days) on the shared clock, without a notification.

Test and demo helpers: ``POST /test/trade/pay`` (``tradeNo`` or ``outTradeNo`` [+ ``appId``]) plays the
resident's ``my.tradePay`` (409, ``resultCode`` 4000, for a closed, expired or paid trade);
``POST /test/trade/app-pay`` (``orderString`` [+ ``userId``]) plays the Alipay app SDK paying an
``alipay.trade.app.pay`` order string, checked like a gateway request; ``GET /test/trades/{outTradeNo}``;
``PUT|DELETE /test/trade/faults``: failing refunds (``refundFailure``: ``subCode`` such as
``ACQ.SELLER_BALANCE_NOT_ENOUGH``, optional ``count``) and ``20000`` on any method (``unavailable``: method ->
``count``, ``processed`` to answer 20000 after doing the work).

Notifications: a payment (``TRADE_SUCCESS``), a partial refund (``TRADE_SUCCESS`` + ``refund_fee``,
``gmt_refund``, ``out_biz_no``) and a full refund (``TRADE_CLOSED``) each post a form-encoded
``trade_status_sync`` to the trade's ``notify_url``, signed by the Alipay key over every field but ``sign``
and ``sign_type``; retried after 4m, 10m, 10m, 1h, 2h, 6h, 15h of shared-clock time until the receiver
answers exactly ``success`` (2xx). The sandbox's ``callbacks`` fault plan drops, duplicates, delays and
reorders them. The ``trade-notifications`` stream records each notification's fields; the ``callbacks`` stream
each attempt and its outcome.

Extending it: write ``async def handler(simulator, call: GatewayCall) -> dict[str, object]`` returning the
inner response object (``ok(...)`` adds ``code``/``msg``), raise ``GatewayFailure`` (e.g.
``business_failed("ACQ.TRADE_NOT_EXIST", "交易不存在")``) for failures, register it in ``METHODS`` (or on
one instance's ``methods``), keep its state on the simulator and reset it in ``seed``, and send
notifications with ``sign_notification`` + ``ctx.callbacks.send``.

Unconfirmed against Alipay: the bill's exact layout (refund rows, summary columns, bracket width), the
sub_code for a missing bill, the default expiry without ``time_expire``, and whether an unpaid trade closed by
expiry is notified (it is not, here).

Simplifications: one Alipay key pair for every app (the real gateway keeps one per app), public-key mode only
(no certificates), UTF-8 only, JSON only, no refresh-token grant.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import parse_qsl, urlencode

import httpx
import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from litestar import Request, Response, delete, get, post, put, route
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException, ValidationException
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.types import ControllerRouterHandler

from sandbox.framework import Simulator

BEIJING: Final = timezone(timedelta(hours=8), "Asia/Shanghai")
TIMESTAMP_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
OAUTH_METHOD: Final = "alipay.system.oauth.token"
ERROR_RESPONSE: Final = "error_response"
GATEWAY_CONTENT_TYPE: Final = "text/html;charset=utf-8"
"""What the real gateway labels its JSON with; clients must not rely on it."""

AUTH_CODES: Final = "auth-codes"
"""Recorder stream: every auth code issued by the helper."""
LOGINS: Final = "logins"
"""Recorder stream: every successful ``alipay.system.oauth.token``."""
TEMPLATE_MESSAGE_METHOD: Final = "alipay.open.app.mini.templatemessage.send"
MESSAGES: Final = "messages"
"""Recorder stream: every delivered mini-program message (the inbox)."""
MESSAGE_VALUE_MAX: Final = 50
"""A keyword value's maximum length in characters (``USER_KEYWORD_LENGTH_ERROR`` beyond)."""
NOT_SUBSCRIBED_SUB_CODE: Final = "USER_NOT_SUBSCRIBED"
"""Answered when no authorisation is left. A stand-in: Alipay's own sub_code for this case is not confirmed."""

TRADE_CREATE_METHOD: Final = "alipay.trade.create"
TRADE_APP_PAY_METHOD: Final = "alipay.trade.app.pay"
TRADE_QUERY_METHOD: Final = "alipay.trade.query"
TRADE_CLOSE_METHOD: Final = "alipay.trade.close"
TRADE_REFUND_METHOD: Final = "alipay.trade.refund"
REFUND_QUERY_METHOD: Final = "alipay.trade.fastpay.refund.query"
BILL_URL_METHOD: Final = "alipay.data.dataservice.bill.downloadurl.query"
TRADE_NOTIFICATIONS: Final = "trade-notifications"
"""Recorder stream: every trade notification queued (its params, url and callback id); each delivery attempt
and its outcome is in the framework's ``callbacks`` stream under the same callback id."""
PAYMENTS: Final = "payments"
"""Recorder stream: every payment made through the test helpers (what ``my.tradePay`` / the app SDK did)."""
NOTIFY_RETRY_SCHEDULE: Final = (240.0, 600.0, 600.0, 3600.0, 7200.0, 21600.0, 54000.0)
"""Alipay's retries of an unacknowledged notification: 4m, 10m, 10m, 1h, 2h, 6h, 15h (protocols §3.5)."""
NOTIFY_ACK: Final = b"success"
BILL_URL_TTL: Final = timedelta(seconds=30)
DEFAULT_SELLER_ID: Final = "2088000000000001"
DEFAULT_TRADE_TTL_SECONDS: Final = 15 * 86400.0
"""Unpaid trades created without ``time_expire`` close after 15 days (``timeout_express``'s maximum; Alipay's
own default for ``alipay.trade.create`` is not confirmed)."""
MAX_TRADE_FEN: Final = 10_000_000_000

TradeStatus = Literal["WAIT_BUYER_PAY", "TRADE_CLOSED", "TRADE_SUCCESS", "TRADE_FINISHED"]
WAIT_BUYER_PAY: Final = "WAIT_BUYER_PAY"
TRADE_SUCCESS: Final = "TRADE_SUCCESS"
TRADE_CLOSED: Final = "TRADE_CLOSED"
TRADE_FINISHED: Final = "TRADE_FINISHED"
PRODUCT_CODES: Final = frozenset({"JSAPI_PAY", "FACE_TO_FACE_PAYMENT", "QUICK_MSECURITY_PAY"})

FAILURE_MESSAGES: Final[Mapping[str, str]] = {
    "ACQ.SELLER_BALANCE_NOT_ENOUGH": "卖家余额不足",
    "ACQ.SYSTEM_ERROR": "系统错误",
    "ACQ.TRADE_NOT_ALLOW_REFUND": "当前交易不允许退款",
    "ACQ.REFUND_CHARGE_ERROR": "退收费异常",
}
"""Sub messages of the refund failures the fault helper can inject (others answer a generic message)."""

_YUAN = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,2})?")
_OUT_NO = re.compile(r"[0-9A-Za-z_\-]{1,64}")
_CENT = Decimal("0.01")
BILL_COLUMNS: Final = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
)
"""The detail list's columns as public samples of Alipay's trade bill show them (bracket width unconfirmed)."""
SUMMARY_COLUMNS: Final = (
    "门店编号",
    "门店名称",
    "交易订单总笔数",
    "退款订单总笔数",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "卡消费金额（元）",
    "服务费（元）",
    "分润（元）",
    "实收净额（元）",
)

AppMode = Literal["user_id", "open_id"]
APP_MODES: Final = frozenset(get_args(AppMode))

_USER_ID = re.compile(r"2088\d{12}")
_ID_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
_MAX_PARAMS: Final = 200


# -- failures -------------------------------------------------------------------------------------------------


class GatewayFailure(Exception):  # noqa: N818 - an answer, not a crash of the simulator
    """An answer with a failure code. Raised by the gateway checks and by method handlers.

    ``error_response`` puts it under ``error_response`` (protocol errors, bad auth codes) rather than under
    ``<method>_response`` (business failures such as ``ACQ.*``).
    """

    def __init__(self, code: str, msg: str, sub_code: str, sub_msg: str, *, error_response: bool = False) -> None:
        super().__init__(f"{code} {sub_code}: {sub_msg}")
        self.code = code
        self.msg = msg
        self.sub_code = sub_code
        self.sub_msg = sub_msg
        self.error_response = error_response

    def payload(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg, "sub_code": self.sub_code, "sub_msg": self.sub_msg}


def missing_arguments(sub_code: str, sub_msg: str) -> GatewayFailure:
    """``40001`` (a required parameter is missing), answered as ``error_response``."""
    return GatewayFailure("40001", "Missing Required Arguments", sub_code, sub_msg, error_response=True)


def invalid_arguments(sub_code: str, sub_msg: str) -> GatewayFailure:
    """``40002`` (a parameter is invalid), answered as ``error_response``."""
    return GatewayFailure("40002", "Invalid Arguments", sub_code, sub_msg, error_response=True)


def business_failed(sub_code: str, sub_msg: str) -> GatewayFailure:
    """``40004`` (business failure, ``ACQ.*``), answered under ``<method>_response``."""
    return GatewayFailure("40004", "Business Failed", sub_code, sub_msg)


def service_unavailable() -> GatewayFailure:
    """``20000`` (service unavailable: the result is unknown, query before retrying a write)."""
    return GatewayFailure("20000", "Service Currently Unavailable", "isp.unknow-error", "系统繁忙")


def ok(**fields: object) -> dict[str, object]:
    """A success object as ``alipay.trade.*`` answer it: ``code`` 10000 and ``msg`` first."""
    return {"code": "10000", "msg": "Success", **fields}


# -- state ------------------------------------------------------------------------------------------------------


@dataclass
class SimulatedApp:
    """A mini-program registered with the simulated Alipay."""

    app_id: str
    public_key_pem: bytes
    mode: AppMode = "user_id"
    union_id: bool = False
    """Whether logins also return a ``union_id`` (the app is bound to an open-platform entity)."""
    public_key: rsa.RSAPublicKey = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.public_key = _load_public_key(self.public_key_pem)


@dataclass
class SimulatedUser:
    user_id: str
    union_id: str


@dataclass
class IssuedAuthCode:
    code: str
    app_id: str
    user_id: str
    issued_at: datetime
    used: bool = False


@dataclass
class SimulatedRefund:
    out_request_no: str
    refund_fen: int
    at: datetime
    reason: str | None = None


@dataclass
class SimulatedTrade:
    """One trade of one app, keyed by (app id, ``out_trade_no``)."""

    app_id: str
    out_trade_no: str
    trade_no: str
    total_fen: int
    subject: str
    product_code: str
    created_at: datetime
    time_expire: datetime | None
    notify_url: str | None
    user_id: str | None
    """The ``2088`` user paying (known at creation for ``JSAPI_PAY``, at payment for app payments)."""
    open_id: str | None = None
    """The buyer's open id under ``op_app_id`` when the trade is addressed by open id."""
    body: str | None = None
    passback_params: str | None = None
    status: TradeStatus = WAIT_BUYER_PAY
    buyer_logon_id: str | None = None
    paid_at: datetime | None = None
    closed_at: datetime | None = None
    refunds: dict[str, SimulatedRefund] = field(default_factory=dict)

    @property
    def refunded_fen(self) -> int:
        return sum(refund.refund_fen for refund in self.refunds.values())

    def buyer_fields(self, *, user_key: str) -> dict[str, str]:
        """The buyer as the answers name it: ``buyer_open_id`` for open-id trades, else ``user_key``."""
        if self.open_id is not None:
            return {"buyer_open_id": self.open_id}
        return {user_key: self.user_id} if self.user_id is not None else {}


@dataclass
class IssuedBill:
    file_name: str
    data: bytes
    expires_at: datetime


@dataclass
class MethodOutage:
    """A method answering ``20000``: ``remaining`` more times (None: until cleared); ``processed``: after doing
    the work."""

    remaining: int | None = None
    processed: bool = False


@dataclass
class TradeFaults:
    """Faults of the trade service (notification faults are the framework's ``callbacks`` plan)."""

    refund_failure: str | None = None
    """The sub_code ``alipay.trade.refund`` answers (``40004``) instead of refunding, e.g.
    ``ACQ.SELLER_BALANCE_NOT_ENOUGH``."""
    refund_failure_msg: str | None = None
    refund_failures_left: int | None = None
    """How many refunds fail (None: every one until cleared)."""
    outages: dict[str, MethodOutage] = field(default_factory=dict)

    def take_refund_failure(self) -> GatewayFailure | None:
        if self.refund_failure is None or self.refund_failures_left == 0:
            return None
        if self.refund_failures_left is not None:
            self.refund_failures_left -= 1
        message = self.refund_failure_msg or FAILURE_MESSAGES.get(self.refund_failure, "业务处理失败")
        return business_failed(self.refund_failure, message)

    def take_outage(self, method: str) -> MethodOutage | None:
        outage = self.outages.get(method)
        if outage is None or outage.remaining == 0:
            return None
        if outage.remaining is not None:
            outage.remaining -= 1
        return outage


class TradeStateError(Exception):
    """A test helper asked for something the trade's state forbids (paying a closed trade)."""


@dataclass(frozen=True)
class GatewayCall:
    """One verified gateway request, as a method handler sees it."""

    app: SimulatedApp
    method: str
    params: Mapping[str, str]
    now: datetime
    base_url: str = ""
    """Where the simulator is mounted as the caller reached it (``http://host:port/sandbox/alipay``), for
    links such as bill download URLs."""

    def biz_content(self) -> dict[str, Any]:
        """The parsed ``biz_content``; ``40002 isv.invalid-parameter`` when absent or not a JSON object."""
        raw = self.params.get("biz_content")
        try:
            value = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise invalid_arguments("isv.invalid-parameter", "biz_content参数无效")
        return value


MethodHandler = Callable[["AlipaySimulator", GatewayCall], Awaitable[dict[str, object]]]


def _load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    text = pem.strip()
    key = (
        serialization.load_pem_public_key(text)
        if text.startswith(b"-----BEGIN")
        else serialization.load_der_public_key(base64.b64decode(b"".join(text.split())))
    )
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("an app public key must be RSA")
    return key


def _rsa2_content(params: Mapping[str, str], excluded: frozenset[str]) -> str:
    return "&".join(f"{key}={value}" for key, value in sorted(params.items()) if key not in excluded and value)


# -- the simulator -------------------------------------------------------------------------------------------------


class AlipaySimulator(Simulator):
    """Simulated Alipay: its own RSA key pair, the registered apps, auth codes and users."""

    name = "alipay"

    def __init__(
        self,
        *,
        apps: Mapping[str, bytes] | None = None,
        name: str | None = None,
        alipay_private_key_pem: bytes | None = None,
        auth_code_ttl_seconds: float = 300.0,
        timestamp_tolerance_seconds: float = 900.0,
        seller_id: str = DEFAULT_SELLER_ID,
        default_trade_ttl_seconds: float = DEFAULT_TRADE_TTL_SECONDS,
    ) -> None:
        """``apps`` maps app ids to app public keys (PEM or bare Base64, SPKI or PKCS#1), in ``user_id``
        mode; ``alipay_private_key_pem`` pins the simulator's key pair (a fresh 2048-bit pair otherwise);
        ``seller_id`` is the merchant (``2088`` id) every app's trades are paid to; unpaid trades created
        without ``time_expire`` close after ``default_trade_ttl_seconds``."""
        super().__init__(name=name)
        if alipay_private_key_pem is None:
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            loaded = serialization.load_pem_private_key(alipay_private_key_pem, password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError("the Alipay key must be RSA")
            private_key = loaded
        self._private_key = private_key
        self.public_key_pem: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        """The "Alipay public key" a client verifies answers and notifications with (SPKI PEM)."""
        self.apps: dict[str, SimulatedApp] = {}
        for app_id, pem in (apps or {}).items():
            self.register_app(app_id, pem)
        self.methods: dict[str, MethodHandler] = {**METHODS, **TRADE_METHODS}
        self.auth_code_ttl = timedelta(seconds=auth_code_ttl_seconds)
        self.timestamp_tolerance = timedelta(seconds=timestamp_tolerance_seconds)
        self.users: dict[str, SimulatedUser] = {}
        self.open_ids: dict[tuple[str, str], str] = {}
        """(app id, user id) -> open id."""
        self.open_id_owners: dict[str, tuple[str, str]] = {}
        self.auth_codes: dict[str, IssuedAuthCode] = {}
        self.message_templates: dict[tuple[str, str], int | None] = {}
        """(app id, template id) -> its keyword count (None: any count) for the templates the app has."""
        self.message_grants: dict[tuple[str, str, str], int] = {}
        """(app id, user id, template id) -> one-time authorisations left."""
        self.refused_sub_code = NOT_SUBSCRIBED_SUB_CODE
        if not _USER_ID.fullmatch(seller_id):
            raise ValueError("seller_id is 2088 followed by 12 digits")
        self.seller_id = seller_id
        self.default_trade_ttl = timedelta(seconds=default_trade_ttl_seconds)
        self.trades: dict[tuple[str, str], SimulatedTrade] = {}
        """(app id, out_trade_no) -> the trade."""
        self.trade_nos: dict[str, tuple[str, str]] = {}
        """trade_no -> (app id, out_trade_no)."""
        self.bills: dict[str, IssuedBill] = {}
        """fileId -> an issued bill download."""
        self.trade_faults = TradeFaults()

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        return [
            gateway,
            issue_auth_code,
            configure_app,
            read_public_key,
            grant_subscription,
            pay_trade,
            app_pay_trade,
            read_trade,
            replace_trade_faults,
            clear_trade_faults,
            download_bill_file,
        ]

    def seed(self, seed: int) -> None:
        """Drop users, open ids, auth codes, message templates, authorisations, trades, refunds, issued bills and
        the trade faults; apps and their modes are configuration and stay."""
        self.users.clear()
        self.open_ids.clear()
        self.open_id_owners.clear()
        self.auth_codes.clear()
        self.message_templates.clear()
        self.message_grants.clear()
        self.trades.clear()
        self.trade_nos.clear()
        self.bills.clear()
        self.trade_faults = TradeFaults()

    # -- configuration ------------------------------------------------------------------------------------------

    def register_app(
        self, app_id: str, public_key_pem: bytes, *, mode: AppMode = "user_id", union_id: bool = False
    ) -> SimulatedApp:
        if mode not in APP_MODES:
            raise ValueError(f"unknown app mode {mode!r}")
        app = SimulatedApp(app_id=app_id, public_key_pem=public_key_pem, mode=mode, union_id=union_id)
        self.apps[app_id] = app
        return app

    def set_app_mode(self, app_id: str, mode: AppMode, *, union_id: bool | None = None) -> SimulatedApp:
        if mode not in APP_MODES:
            raise ValueError(f"unknown app mode {mode!r}")
        app = self.apps[app_id]
        app.mode = mode
        if union_id is not None:
            app.union_id = union_id
        return app

    # -- users and auth codes -----------------------------------------------------------------------------------

    def _new_user_id(self) -> str:
        while True:
            user_id = f"2088{self.ctx.random.randrange(10**12):012d}"
            if user_id not in self.users:
                return user_id

    def user(self, user_id: str | None = None) -> SimulatedUser:
        """The user with this id, created on first sight (a new random one when None)."""
        if user_id is None:
            user_id = self._new_user_id()
        existing = self.users.get(user_id)
        if existing is not None:
            return existing
        union_id = f"0{''.join(self.ctx.random.choices(_ID_ALPHABET, k=46))}"
        created = SimulatedUser(user_id=user_id, union_id=union_id)
        self.users[user_id] = created
        return created

    def open_id_for(self, app_id: str, user_id: str) -> str:
        """The user's stable open id under this app (each app sees its own id for the same person)."""
        key = (app_id, user_id)
        open_id = self.open_ids.get(key)
        if open_id is None:
            while True:
                open_id = f"0{''.join(self.ctx.random.choices(_ID_ALPHABET, k=46))}"
                if open_id not in self.open_id_owners:
                    break
            self._bind_open_id(app_id, user_id, open_id)
        return open_id

    def _bind_open_id(self, app_id: str, user_id: str, open_id: str) -> None:
        self.open_ids[(app_id, user_id)] = open_id
        self.open_id_owners[open_id] = (app_id, user_id)

    def default_app(self) -> SimulatedApp:
        if not self.apps:
            raise LookupError("no app is registered with the Alipay simulator")
        return next(iter(self.apps.values()))

    def issue_auth_code(
        self, app_id: str | None = None, *, user_id: str | None = None, open_id: str | None = None
    ) -> tuple[IssuedAuthCode, SimulatedUser]:
        """What ``my.getAuthCode`` hands a mini-program: a fresh single-use code for this user and app.

        ``open_id`` (``open_id`` mode only) picks the user behind that id under the app, binding it to a new
        user when unknown; ``user_id`` picks (or creates) that user; neither makes a new user.
        """
        app = self.apps[app_id] if app_id is not None else self.default_app()
        person = self.person(app, user_id=user_id, open_id=open_id)
        code = IssuedAuthCode(
            code=f"{self.ctx.random.getrandbits(128):032x}",
            app_id=app.app_id,
            user_id=person.user_id,
            issued_at=self.ctx.clock.now(),
        )
        self.auth_codes[code.code] = code
        self.ctx.recorder.record_message(
            AUTH_CODES, {"authCode": code.code, "appId": app.app_id, "userId": person.user_id}
        )
        return code, person

    def person(self, app: SimulatedApp, *, user_id: str | None = None, open_id: str | None = None) -> SimulatedUser:
        """The user behind ``open_id`` (``open_id`` mode only; an unknown one is bound to a new user) or
        ``user_id`` (created when new); a new user when neither is given."""
        if open_id is None:
            return self.user(user_id)
        if app.mode != "open_id":
            raise ValueError(f"app {app.app_id} is in user_id mode: no open ids")
        owner = self.open_id_owners.get(open_id)
        if owner is not None and owner[0] != app.app_id:
            raise ValueError("that open id belongs to another app")
        if owner is not None and user_id is not None and owner[1] != user_id:
            raise ValueError("that open id belongs to another user")
        person = self.user(owner[1] if owner is not None else user_id)
        if owner is None:
            if (app.app_id, person.user_id) in self.open_ids:
                raise ValueError("this user already has another open id under the app")
            self._bind_open_id(app.app_id, person.user_id, open_id)
        return person

    # -- mini-program messages -------------------------------------------------------------------------------

    def register_message_template(self, app_id: str, template_id: str, *, keywords: int | None = None) -> None:
        """The app chose this template (``keywords``: how many ``keywordN`` it has; None accepts any count)."""
        if not template_id:
            raise ValueError("empty template id")
        if keywords is not None and keywords < 1:
            raise ValueError("a template has at least one keyword")
        key = (app_id, template_id)
        if keywords is not None or key not in self.message_templates:
            self.message_templates[key] = keywords

    def grant_subscription(
        self,
        template_id: str,
        *,
        app_id: str | None = None,
        user_id: str | None = None,
        open_id: str | None = None,
        count: int = 1,
        keywords: int | None = None,
    ) -> tuple[SimulatedApp, SimulatedUser, int]:
        """The user accepted ``my.requestSubscribeMessage`` for the template ``count`` times (one send each).

        Exactly one of ``user_id`` (apps in ``user_id`` mode) and ``open_id`` (apps in ``open_id`` mode); the
        template becomes one of the app's. Returns the app, the user and the authorisations now left.
        """
        app = self.apps[app_id] if app_id is not None else self.default_app()
        if (user_id is None) == (open_id is None):
            raise ValueError("give exactly one of userId and openId")
        if user_id is not None and app.mode != "user_id":
            raise ValueError(f"app {app.app_id} is in open_id mode: give openId")
        if count < 1:
            raise ValueError("count must be positive")
        if not template_id or (keywords is not None and keywords < 1):
            raise ValueError("a template needs an id and at least one keyword")
        person = self.person(app, user_id=user_id, open_id=open_id)
        self.register_message_template(app.app_id, template_id, keywords=keywords)
        key = (app.app_id, person.user_id, template_id)
        self.message_grants[key] = self.message_grants.get(key, 0) + count
        return app, person, self.message_grants[key]

    def remaining_grants(self, template_id: str, *, app_id: str, user_id: str) -> int:
        """One-time authorisations left for (app, user, template); ``user_id`` is the ``2088`` id."""
        return self.message_grants.get((app_id, user_id, template_id), 0)

    # -- trades ---------------------------------------------------------------------------------------------------

    def trade(
        self, app_id: str, *, out_trade_no: str | None = None, trade_no: str | None = None
    ) -> SimulatedTrade | None:
        """The app's trade by ``out_trade_no`` or ``trade_no`` (both given: they must name the same trade),
        with its expiry settled on the shared clock."""
        found: SimulatedTrade | None = None
        if trade_no is not None:
            key = self.trade_nos.get(trade_no)
            found = self.trades.get(key) if key is not None and key[0] == app_id else None
            if found is not None and out_trade_no is not None and found.out_trade_no != out_trade_no:
                found = None
        elif out_trade_no is not None:
            found = self.trades.get((app_id, out_trade_no))
        if found is not None:
            self.expire(found, self.ctx.clock.now())
        return found

    def find_trade(
        self, *, trade_no: str | None = None, out_trade_no: str | None = None, app_id: str | None = None
    ) -> SimulatedTrade:
        """A trade by ``trade_no`` (any app) or by ``out_trade_no`` (``app_id``, default the first app);
        ``LookupError`` when unknown."""
        if trade_no is not None:
            key = self.trade_nos.get(trade_no)
            if key is None or (app_id is not None and key[0] != app_id):
                raise LookupError(f"no trade {trade_no!r}")
            app_id = key[0]
        app = self.apps[app_id] if app_id is not None else self.default_app()
        found = self.trade(app.app_id, out_trade_no=out_trade_no, trade_no=trade_no)
        if found is None:
            raise LookupError("no such trade")
        return found

    def expire(self, trade: SimulatedTrade, now: datetime) -> None:
        """An unpaid trade past its ``time_expire`` is closed (``TRADE_CLOSED``) as of that time."""
        if trade.status == WAIT_BUYER_PAY and trade.time_expire is not None and now >= trade.time_expire:
            trade.status = TRADE_CLOSED
            trade.closed_at = trade.time_expire

    def _new_trade_no(self, now: datetime) -> str:
        while True:
            trade_no = f"{now.astimezone(BEIJING):%Y%m%d}22001{self.ctx.random.randrange(10**15):015d}"
            if trade_no not in self.trade_nos:
                return trade_no

    def open_trade(
        self,
        app: SimulatedApp,
        *,
        out_trade_no: str,
        total_fen: int,
        subject: str,
        product_code: str,
        now: datetime,
        time_expire: datetime | None,
        notify_url: str | None,
        user_id: str | None,
        open_id: str | None = None,
        body: str | None = None,
        passback_params: str | None = None,
    ) -> SimulatedTrade:
        trade = SimulatedTrade(
            app_id=app.app_id,
            out_trade_no=out_trade_no,
            trade_no=self._new_trade_no(now),
            total_fen=total_fen,
            subject=subject,
            product_code=product_code,
            created_at=now,
            time_expire=time_expire if time_expire is not None else now + self.default_trade_ttl,
            notify_url=notify_url,
            user_id=user_id,
            open_id=open_id,
            body=body,
            passback_params=passback_params,
        )
        self.trades[(app.app_id, out_trade_no)] = trade
        self.trade_nos[trade.trade_no] = (app.app_id, out_trade_no)
        return trade

    def _logon_id(self) -> str:
        return f"1{self.ctx.random.randrange(30, 90)}******{self.ctx.random.randrange(100):02d}"

    async def pay(self, trade: SimulatedTrade, *, user_id: str | None = None) -> str | None:
        """The buyer pays (``my.tradePay`` answered 9000): ``TRADE_SUCCESS`` and the notification queued.

        Returns the notification's callback id (None without a ``notify_url``). ``TradeStateError`` unless the
        trade is waiting for payment (closed, expired, already paid).
        """
        now = self.ctx.clock.now()
        self.expire(trade, now)
        if trade.status != WAIT_BUYER_PAY:
            raise TradeStateError(f"trade {trade.out_trade_no} is {trade.status}")
        if trade.user_id is None:
            person = self.user(user_id)
            trade.user_id = person.user_id
            if self.apps[trade.app_id].mode == "open_id":
                trade.open_id = self.open_id_for(trade.app_id, person.user_id)
        trade.status = TRADE_SUCCESS
        trade.paid_at = now
        trade.buyer_logon_id = self._logon_id()
        self.ctx.recorder.record_message(
            PAYMENTS,
            {
                "appId": trade.app_id,
                "outTradeNo": trade.out_trade_no,
                "tradeNo": trade.trade_no,
                "totalFen": trade.total_fen,
                "userId": trade.user_id,
            },
        )
        return await self.notify_trade(trade, now=now)

    async def notify_trade(
        self, trade: SimulatedTrade, *, now: datetime, refund: SimulatedRefund | None = None
    ) -> str | None:
        """Queue a signed ``trade_status_sync`` notification to the trade's ``notify_url`` (protocols §3.5):
        form-encoded, retried on the real schedule until the receiver answers exactly ``success``."""
        if not trade.notify_url:
            return None
        params = self.trade_notification(trade, now=now, refund=refund)
        body = urlencode(params, encoding="utf-8").encode("ascii")
        callback_id = await self.ctx.callbacks.send(
            trade.notify_url,
            body,
            {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            retry_schedule=NOTIFY_RETRY_SCHEDULE,
            is_success=acknowledged,
        )
        self.ctx.recorder.record_message(
            TRADE_NOTIFICATIONS,
            {
                "callbackId": callback_id,
                "appId": trade.app_id,
                "outTradeNo": trade.out_trade_no,
                "tradeNo": trade.trade_no,
                "tradeStatus": params["trade_status"],
                "notifyId": params["notify_id"],
                "outBizNo": params.get("out_biz_no"),
                "url": trade.notify_url,
                "params": params,
            },
        )
        return callback_id

    def trade_notification(
        self, trade: SimulatedTrade, *, now: datetime, refund: SimulatedRefund | None = None
    ) -> dict[str, str]:
        """The notification's fields, signed by the Alipay key over all but ``sign`` and ``sign_type``."""
        total = _yuan(trade.total_fen)
        paid = trade.paid_at is not None
        params: dict[str, str] = {
            "notify_time": _beijing(now),
            "notify_type": "trade_status_sync",
            "notify_id": f"{now.astimezone(BEIJING):%Y%m%d}00222{self.ctx.random.randrange(10**21):021d}",
            "app_id": trade.app_id,
            "auth_app_id": trade.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "sign_type": "RSA2",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "trade_status": trade.status,
            "total_amount": total,
            "receipt_amount": total if paid else "0.00",
            "invoice_amount": total if paid else "0.00",
            "buyer_pay_amount": total if paid else "0.00",
            "point_amount": "0.00",
            "subject": trade.subject,
            "gmt_create": _beijing(trade.created_at),
            "seller_id": self.seller_id,
            **trade.buyer_fields(user_key="buyer_id"),
        }
        if trade.paid_at is not None:
            params["gmt_payment"] = _beijing(trade.paid_at)
            params["fund_bill_list"] = json.dumps(
                [{"amount": total, "fundChannel": "ALIPAYACCOUNT"}], separators=(",", ":")
            )
        if trade.buyer_logon_id:
            params["buyer_logon_id"] = trade.buyer_logon_id
        if trade.body:
            params["body"] = trade.body
        if trade.passback_params:
            params["passback_params"] = trade.passback_params
        if refund is not None:
            params["refund_fee"] = _yuan(trade.refunded_fen)
            params["gmt_refund"] = f"{_beijing(refund.at)}.{refund.at.microsecond // 1000:03d}"
            params["out_biz_no"] = refund.out_request_no
        if trade.closed_at is not None:
            params["gmt_close"] = _beijing(trade.closed_at)
        return self.sign_notification(params)

    # -- bills ------------------------------------------------------------------------------------------------------

    def trade_bill(self, first_day: date, last_day: date, *, label: str) -> tuple[str, bytes]:
        """The trade bill of the Beijing days ``first_day``..``last_day``: (file name, zip of two GBK CSVs).

        Every app's trades are the one merchant's (``seller_id``): a ``交易`` row per payment made in the
        period, a ``退款`` row per refund made in it (negative ``商家实收``, the ``out_request_no``).
        """
        now = self.ctx.clock.now()
        rows: list[tuple[datetime, int, list[str]]] = []
        payments = refunds = 0
        paid_fen = refunded_fen = 0
        for trade in self.trades.values():
            self.expire(trade, now)
            if trade.paid_at is not None and first_day <= _beijing_day(trade.paid_at) <= last_day:
                payments += 1
                paid_fen += trade.total_fen
                rows.append((trade.paid_at, 0, _bill_row(trade, "交易", trade.paid_at, trade.total_fen, None)))
            for refund in trade.refunds.values():
                if first_day <= _beijing_day(refund.at) <= last_day:
                    refunds += 1
                    refunded_fen += refund.refund_fen
                    rows.append((refund.at, 1, _bill_row(trade, "退款", refund.at, -refund.refund_fen, refund)))
        rows.sort(key=lambda item: (item[0], item[1]))  # by completion; payments before refunds on ties
        start = f"{first_day:%Y年%m月%d日} 00:00:00"
        end = f"{last_day + timedelta(days=1):%Y年%m月%d日} 00:00:00"
        exported = f"{now.astimezone(BEIJING):%Y年%m月%d日 %H:%M:%S}"
        detail = io.StringIO()
        detail.write(
            f"#支付宝业务明细查询\r\n#账号：[{self.seller_id}]\r\n#起始日期：[{start}]   终止日期：[{end}]\r\n"
        )
        detail.write(f"#{'-' * 41}业务明细列表{'-' * 40}\r\n")
        writer = csv.writer(detail, lineterminator="\r\n")
        writer.writerow(BILL_COLUMNS)
        writer.writerows(row for _, _, row in rows)
        detail.write(f"#{'-' * 41}业务明细列表结束{'-' * 36}\r\n")
        detail.write(f"#交易合计：{payments}笔，退款合计：{refunds}笔\r\n#导出时间：[{exported}]\r\n")
        summary = io.StringIO()
        summary.write(
            f"#支付宝业务汇总查询\r\n#账号：[{self.seller_id}]\r\n#起始日期：[{start}]   终止日期：[{end}]\r\n"
        )
        summary.write(f"#{'-' * 41}业务汇总列表{'-' * 40}\r\n")
        writer = csv.writer(summary, lineterminator="\r\n")
        writer.writerow(SUMMARY_COLUMNS)
        net = _yuan_signed(paid_fen - refunded_fen)
        writer.writerow(
            [
                "合计",
                "",
                payments,
                refunds,
                _yuan_signed(paid_fen - refunded_fen),
                net,
                "0.00",
                "0.00",
                "0.00",
                "0.00",
                "0.00",
                net,
            ]
        )
        summary.write(f"#{'-' * 41}业务汇总列表结束{'-' * 36}\r\n#导出时间：[{exported}]\r\n")
        base = f"{self.seller_id}_{label}"
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr(f"{base}_业务明细.csv", detail.getvalue().encode("gbk"))
            bundle.writestr(f"{base}_业务明细(汇总).csv", summary.getvalue().encode("gbk"))
        return f"{base}.csv.zip", archive.getvalue()

    # -- signing --------------------------------------------------------------------------------------------------

    def sign(self, content: str) -> str:
        """SHA256withRSA (PKCS#1 v1.5) with the Alipay private key, Base64."""
        signature = self._private_key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode("ascii")

    def sign_notification(self, params: Mapping[str, str]) -> dict[str, str]:
        """Notification params with ``sign``: signed over all but ``sign`` and ``sign_type`` (protocols §3.5)."""
        signed = {key: value for key, value in params.items() if key != "sign"}
        signed.setdefault("sign_type", "RSA2")
        signed["sign"] = self.sign(_rsa2_content(signed, frozenset({"sign", "sign_type"})))
        return signed

    def render(self, key: str, payload: Mapping[str, object], *, signed: bool = True) -> bytes:
        """``{"<key>": payload, "sign": ...}`` with the signature over the exact serialised payload."""
        content = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        body = f'{{"{key}":{content}'
        if signed:
            body += f',"sign":"{self.sign(content)}"'
        return (body + "}").encode("utf-8")

    # -- the gateway ----------------------------------------------------------------------------------------------

    async def answer(self, params: Mapping[str, str], *, base_url: str = "") -> bytes:
        """The gateway's answer to one request's merged parameters.

        A method under an outage (``trade_faults.outages``) answers ``20000`` instead, before running the
        handler or, for a ``processed`` outage, after it (the work is done, the answer says unknown).
        """
        method = params.get("method", "")
        key = method.replace(".", "_") + "_response" if method else ERROR_RESPONSE
        app: SimulatedApp | None = None
        try:
            app = self._identify(params)
            self._authenticate(app, params)
            handler = self.methods.get(method)
            if handler is None:
                raise invalid_arguments("isv.invalid-method", "不存在的方法名")
            outage = self.trade_faults.take_outage(method)
            if outage is not None and not outage.processed:
                raise service_unavailable()
            call = GatewayCall(app=app, method=method, params=params, now=self.ctx.clock.now(), base_url=base_url)
            payload = await handler(self, call)
            if outage is not None:
                raise service_unavailable()
        except GatewayFailure as failure:
            return self.render(
                ERROR_RESPONSE if failure.error_response else key, failure.payload(), signed=app is not None
            )
        return self.render(key, payload)

    def _identify(self, params: Mapping[str, str]) -> SimulatedApp:
        """Who is calling; failures here are answered unsigned (no app, no key pair to sign with)."""
        if not params.get("method"):
            raise missing_arguments("isv.missing-method", "缺少方法名参数")
        app_id = params.get("app_id")
        if not app_id:
            raise missing_arguments("isv.missing-app-id", "缺少AppID参数")
        app = self.apps.get(app_id)
        if app is None:
            raise invalid_arguments("isv.invalid-app-id", "无效的AppID参数")
        return app

    def _authenticate(self, app: SimulatedApp, params: Mapping[str, str]) -> None:
        """Is the request signed by the app's key, in the expected format, and fresh on the shared clock."""
        sign = params.get("sign")
        if not sign:
            raise missing_arguments("isv.missing-signature", "缺少签名参数")
        if params.get("sign_type") != "RSA2":
            raise invalid_arguments("isv.invalid-signature-type", "无效的签名类型")
        if params.get("charset", "utf-8").lower() != "utf-8":
            raise invalid_arguments("isv.invalid-charset", "字符集错误")
        if params.get("format", "JSON").upper() != "JSON":
            raise invalid_arguments("isv.invalid-format", "参数格式错误")
        content = _rsa2_content(params, frozenset({"sign"}))
        try:
            signature = base64.b64decode(sign, validate=True)
            app.public_key.verify(signature, content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        except (binascii.Error, ValueError, InvalidSignature):
            raise invalid_arguments(
                "isv.invalid-signature",
                f"验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为：{content}",
            ) from None
        timestamp = params.get("timestamp")
        if not timestamp:
            raise missing_arguments("isv.missing-timestamp", "缺少时间戳参数")
        try:
            sent_at = datetime.strptime(timestamp, TIMESTAMP_FORMAT).replace(tzinfo=BEIJING)
        except ValueError:
            raise invalid_arguments("isv.invalid-timestamp", "非法的时间戳参数") from None
        if abs(sent_at - self.ctx.clock.now()) > self.timestamp_tolerance:
            raise invalid_arguments("isv.invalid-timestamp", "非法的时间戳参数")


# -- methods ----------------------------------------------------------------------------------------------------------


async def oauth_token(simulator: AlipaySimulator, call: GatewayCall) -> dict[str, object]:
    """``alipay.system.oauth.token`` with ``grant_type=authorization_code`` (protocols §3.3).

    The success object has no ``code``/``msg``, as the real gateway answers this method.
    """
    if call.params.get("grant_type") != "authorization_code":
        raise invalid_arguments("isv.grant-type-invalid", "grant_type参数无效")
    issued = simulator.auth_codes.get(call.params.get("code", ""))
    if issued is None or issued.app_id != call.app.app_id or issued.used:
        raise invalid_arguments("isv.code-invalid", "授权码code无效")
    issued.used = True
    if call.now - issued.issued_at > simulator.auth_code_ttl:
        raise invalid_arguments("isv.code-invalid", "授权码code无效")
    user = simulator.users[issued.user_id]
    rng = simulator.ctx.random
    payload: dict[str, object] = {
        "access_token": f"authusrB{rng.getrandbits(128):032x}",
        "auth_start": call.now.astimezone(BEIJING).strftime(TIMESTAMP_FORMAT),
        "expires_in": 1296000,
        "re_expires_in": 2592000,
        "refresh_token": f"authusrB{rng.getrandbits(128):032x}",
    }
    login: dict[str, object] = {"appId": call.app.app_id, "mode": call.app.mode}
    if call.app.mode == "open_id":
        payload["open_id"] = login["openId"] = simulator.open_id_for(call.app.app_id, user.user_id)
    else:
        payload["user_id"] = login["userId"] = user.user_id
    if call.app.union_id:
        payload["union_id"] = user.union_id
    simulator.ctx.recorder.record_message(LOGINS, login)
    return payload


def _recipient(simulator: AlipaySimulator, call: GatewayCall, biz: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """(the field used, its value, the user behind it or None when unknown to this app)."""
    to_user_id, to_open_id = biz.get("to_user_id"), biz.get("to_open_id")
    if (to_user_id is None) == (to_open_id is None):
        raise invalid_arguments("isv.invalid-parameter", "to_user_id与to_open_id须且只能传一个")
    if to_user_id is not None:
        if not isinstance(to_user_id, str) or not _USER_ID.fullmatch(to_user_id):
            raise invalid_arguments("isv.invalid-parameter", "to_user_id参数无效")
        if call.app.mode != "user_id":
            raise invalid_arguments("isv.invalid-parameter", "应用已切换为open_id模式，请传to_open_id")
        return "to_user_id", to_user_id, to_user_id if to_user_id in simulator.users else None
    if not isinstance(to_open_id, str) or not to_open_id:
        raise invalid_arguments("isv.invalid-parameter", "to_open_id参数无效")
    if call.app.mode != "open_id":
        raise invalid_arguments("isv.invalid-parameter", "应用未切换为open_id模式，请传to_user_id")
    owner = simulator.open_id_owners.get(to_open_id)
    return "to_open_id", to_open_id, owner[1] if owner is not None and owner[0] == call.app.app_id else None


def _keyword_values(raw: object, keywords: int | None) -> dict[str, str]:
    """``data`` as ``{keywordN: value}``, checked against the template's keyword count."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise invalid_arguments("isv.invalid-parameter", "data参数无效") from None
    if not isinstance(raw, dict):
        raise invalid_arguments("isv.invalid-parameter", "data参数无效")
    values: dict[str, str] = {}
    for key, item in raw.items():
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(value, str):
            raise invalid_arguments("isv.invalid-parameter", "data参数无效")
        values[key] = value
    expected = keywords if keywords is not None else len(values)
    if set(values) != {f"keyword{n}" for n in range(1, expected + 1)} or any(not v.strip() for v in values.values()):
        raise business_failed("USER_TEMPLATE_LACK_KEYWORD", "缺少关键词")
    if any(len(value) > MESSAGE_VALUE_MAX for value in values.values()):
        raise business_failed("USER_KEYWORD_LENGTH_ERROR", "关键词超长")
    return dict(sorted(values.items(), key=lambda kv: int(kv[0].removeprefix("keyword"))))


async def send_template_message(simulator: AlipaySimulator, call: GatewayCall) -> dict[str, object]:
    """``alipay.open.app.mini.templatemessage.send`` for subscribe templates (module docstring).

    Nothing is consumed unless the message is delivered; the success object is ``code``/``msg`` only.
    """
    biz = call.biz_content()
    field_name, recipient, user_id = _recipient(simulator, call, biz)
    template_id = biz.get("user_template_id")
    if not isinstance(template_id, str) or (call.app.app_id, template_id) not in simulator.message_templates:
        raise business_failed("USER_TEMPLATE_ILLEGAL", "模板非法")
    values = _keyword_values(biz.get("data"), simulator.message_templates[(call.app.app_id, template_id)])
    page = biz.get("page")
    if page is not None and not isinstance(page, str):
        raise invalid_arguments("isv.invalid-parameter", "page参数无效")
    grant = (call.app.app_id, user_id or "", template_id)
    if user_id is None or simulator.message_grants.get(grant, 0) <= 0:
        raise business_failed(simulator.refused_sub_code, "用户未订阅该消息或订阅次数已用完")
    simulator.message_grants[grant] -= 1
    message: dict[str, object] = {
        "appId": call.app.app_id,
        "userId": user_id,
        "toUserId" if field_name == "to_user_id" else "toOpenId": recipient,
        "templateId": template_id,
        "page": page,
        "data": values,
    }
    if biz.get("form_id"):
        message["formId"] = biz["form_id"]
    simulator.ctx.recorder.record_message(MESSAGES, message)
    return ok()


# -- trades -----------------------------------------------------------------------------------------------------------


def acknowledged(response: httpx.Response) -> bool:
    """A notification is acknowledged by a 2xx answer whose body is exactly ``success`` (protocols §3.5)."""
    return response.is_success and response.content == NOTIFY_ACK


def _yuan(fen: int) -> str:
    return str((Decimal(fen) / 100).quantize(_CENT))


def _yuan_signed(fen: int) -> str:
    return f"-{_yuan(-fen)}" if fen < 0 else _yuan(fen)


def _beijing(instant: datetime) -> str:
    return instant.astimezone(BEIJING).strftime(TIMESTAMP_FORMAT)


def _beijing_day(instant: datetime) -> date:
    return instant.astimezone(BEIJING).date()


def _bill_row(
    trade: SimulatedTrade, kind: str, finished_at: datetime, received_fen: int, refund: SimulatedRefund | None
) -> list[str]:
    """One detail row; ids end with a tab, as Alipay pads them against spreadsheet number formatting."""
    return [
        f"{trade.trade_no}\t",
        f"{trade.out_trade_no}\t",
        kind,
        trade.subject,
        _beijing(trade.created_at),
        _beijing(finished_at),
        "",
        "",
        "",
        "",
        trade.buyer_logon_id or "",
        _yuan(trade.total_fen),
        _yuan_signed(received_fen),
        "0.00",
        "0.00",
        "0.00",
        "0.00",
        "0.00",
        "",
        "0.00",
        "0.00",
        f"{refund.out_request_no}\t" if refund is not None else "",
        "0.00",
        "0.00",
        "",
    ]


def _trade_amount(value: object, name: str) -> int:
    """A ``Price``: yuan, at most two decimals, 0.01..100000000.00."""
    if not isinstance(value, str) or _YUAN.fullmatch(value) is None:
        raise invalid_arguments("isv.invalid-parameter", f"{name}参数格式不正确")
    fen = int(Decimal(value) * 100)
    if not 1 <= fen <= MAX_TRADE_FEN:
        raise invalid_arguments("isv.invalid-parameter", f"{name}超出范围")
    return fen


def _out_no(value: object, name: str) -> str:
    if not isinstance(value, str) or _OUT_NO.fullmatch(value) is None:
        raise invalid_arguments("isv.invalid-parameter", f"{name}参数格式不正确")
    return value


def _optional_text(biz: Mapping[str, Any], name: str, limit: int) -> str | None:
    value = biz.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise invalid_arguments("isv.invalid-parameter", f"{name}参数格式不正确")
    return value


def _time_expire(biz: Mapping[str, Any]) -> datetime | None:
    value = biz.get("time_expire")
    if value is None:
        return None
    try:
        return datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=BEIJING).astimezone(UTC)
    except (TypeError, ValueError):
        raise invalid_arguments("isv.invalid-parameter", "time_expire参数格式不正确") from None


def _located(simulator: AlipaySimulator, call: GatewayCall, biz: Mapping[str, Any]) -> SimulatedTrade:
    """The trade named by ``out_trade_no`` and/or ``trade_no`` (``ACQ.TRADE_NOT_EXIST`` when none)."""
    out_trade_no, trade_no = biz.get("out_trade_no"), biz.get("trade_no")
    if not out_trade_no and not trade_no:
        raise business_failed("ACQ.INVALID_PARAMETER", "out_trade_no和trade_no不能同时为空")
    if (out_trade_no is not None and not isinstance(out_trade_no, str)) or (
        trade_no is not None and not isinstance(trade_no, str)
    ):
        raise business_failed("ACQ.INVALID_PARAMETER", "参数无效")
    found = simulator.trade(call.app.app_id, out_trade_no=out_trade_no or None, trade_no=trade_no or None)
    if found is None:
        raise business_failed("ACQ.TRADE_NOT_EXIST", "交易不存在")
    return found


def _buyer(simulator: AlipaySimulator, call: GatewayCall, biz: Mapping[str, Any]) -> tuple[str, str | None]:
    """(user id, open id or None) of the ``buyer_id`` or ``buyer_open_id`` (+ ``op_app_id``) in ``biz``."""
    buyer_id, buyer_open_id = biz.get("buyer_id"), biz.get("buyer_open_id")
    if (buyer_id is None) == (buyer_open_id is None):
        raise business_failed("ACQ.INVALID_PARAMETER", "buyer_id与buyer_open_id须且只能传一个")
    if buyer_id is not None:
        if not isinstance(buyer_id, str) or _USER_ID.fullmatch(buyer_id) is None:
            raise invalid_arguments("isv.invalid-parameter", "buyer_id参数格式不正确")
        if call.app.mode != "user_id":
            raise invalid_arguments("isv.invalid-parameter", "应用已切换为open_id模式，请传buyer_open_id")
        return simulator.user(buyer_id).user_id, None
    op_app = simulator.apps.get(biz.get("op_app_id") or call.app.app_id)
    if not isinstance(buyer_open_id, str) or not buyer_open_id or op_app is None or op_app.mode != "open_id":
        raise invalid_arguments("isv.invalid-parameter", "buyer_open_id或op_app_id参数无效")
    try:
        person = simulator.person(op_app, open_id=buyer_open_id)
    except ValueError:
        raise invalid_arguments("isv.invalid-parameter", "buyer_open_id参数无效") from None
    return person.user_id, buyer_open_id


async def trade_create(simulator: AlipaySimulator, call: GatewayCall) -> dict[str, object]:
    """``alipay.trade.create``: an unpaid trade of this app, the buyer known (protocols §3.4).

    ``out_trade_no`` is unique per app: the same request again answers the same ``trade_no``; another amount
    or buyer for it ``ACQ.CONTEXT_INCONSISTENT``; a paid one ``ACQ.TRADE_HAS_SUCCESS``; a closed one
    ``ACQ.TRADE_HAS_CLOSE``.
    """
    biz = call.biz_content()
    out_trade_no = _out_no(biz.get("out_trade_no"), "out_trade_no")
    total_fen = _trade_amount(biz.get("total_amount"), "total_amount")
    subject = _optional_text(biz, "subject", 256)
    if subject is None:
        raise missing_arguments("isv.missing-subject", "缺少subject参数")
    product_code = biz.get("product_code") or "FACE_TO_FACE_PAYMENT"
    if product_code not in PRODUCT_CODES:
        raise business_failed("ACQ.INVALID_PARAMETER", "product_code参数无效")
    user_id, open_id = _buyer(simulator, call, biz)
    time_expire = _time_expire(biz)
    existing = simulator.trade(call.app.app_id, out_trade_no=out_trade_no)
    if existing is not None:
        if existing.status in (TRADE_SUCCESS, TRADE_FINISHED):
            raise business_failed("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
        if existing.status == TRADE_CLOSED:
            raise business_failed("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
        if existing.total_fen != total_fen or existing.user_id != user_id or existing.subject != subject:
            raise business_failed("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
        return ok(out_trade_no=out_trade_no, trade_no=existing.trade_no)
    trade = simulator.open_trade(
        call.app,
        out_trade_no=out_trade_no,
        total_fen=total_fen,
        subject=subject,
        product_code=product_code,
        now=call.now,
        time_expire=time_expire,
        notify_url=call.params.get("notify_url") or None,
        user_id=user_id,
        open_id=open_id,
        body=_optional_text(biz, "body", 128),
        passback_params=_optional_text(biz, "passback_params", 512),
    )
    return ok(out_trade_no=out_trade_no, trade_no=trade.trade_no)


async def trade_query(simulator: AlipaySimulator, call: GatewayCall) -> dict[str, object]:
    """``alipay.trade.query`` (``ACQ.TRADE_NOT_EXIST`` for an unknown trade)."""
    trade = _located(simulator, call, call.biz_content())
    paid = trade.paid_at is not None
    total = _yuan(trade.total_fen)
    fields: dict[str, object] = {
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "trade_status": trade.status,
        "total_amount": total,
        "buyer_pay_amount": total if paid else "0.00",
        "point_amount": "0.00",
        "invoice_amount": total if paid else "0.00",
        "receipt_amount": total if paid else "0.00",
        **trade.buyer_fields(user_key="buyer_user_id"),
    }
    if trade.paid_at is not None:
        fields["send_pay_date"] = _beijing(trade.paid_at)
        fields["fund_bill_list"] = [{"amount": total, "fund_channel": "ALIPAYACCOUNT"}]
    if trade.buyer_logon_id:
        fields["buyer_logon_id"] = trade.buyer_logon_id
    return ok(**fields)


async def trade_close(simulator: AlipaySimulator, call: GatewayCall) -> dict[str, object]:
    """``alipay.trade.close``: only an unpaid trade (``ACQ.TRADE_STATUS_ERROR`` otherwise); no notification."""
    trade = _located(simulator, call, call.biz_content())
    if trade.status != WAIT_BUYER_PAY:
        raise business_failed("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
    trade.status = TRADE_CLOSED
    trade.closed_at = call.now
    return ok(trade_no=trade.trade_no, out_trade_no=trade.out_trade_no)


async def trade_refund(simulator: AlipaySimulator, call: GatewayCall) -> dict[str, object]:
    """``alipay.trade.refund`` (protocols §3.6).

    ``out_request_no`` is the idempotency key: a known one answers ``fund_change`` ``N`` and the cumulative
    ``refund_fee`` without moving money. Without it the refund must be the full amount. Refunds never add up
    beyond the paid total (``ACQ.REASON_TRADE_REFUND_FEE_ERR``). A full refund closes the trade; either way a
    notification goes out (``TRADE_SUCCESS`` + ``refund_fee`` for a partial one, ``TRADE_CLOSED`` for the
    last).
    """
    biz = call.biz_content()
    trade = _located(simulator, call, biz)
    amount = _trade_amount(biz.get("refund_amount"), "refund_amount")
    given_request_no = biz.get("out_request_no")
    out_request_no = _out_no(given_request_no, "out_request_no") if given_request_no is not None else trade.out_trade_no
    answer: dict[str, object] = {
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        **trade.buyer_fields(user_key="buyer_user_id"),
    }
    if trade.buyer_logon_id:
        answer["buyer_logon_id"] = trade.buyer_logon_id
    existing = trade.refunds.get(out_request_no)
    if existing is not None:
        return ok(
            **answer,
            fund_change="N",
            refund_fee=_yuan(trade.refunded_fen),
            gmt_refund_pay=_beijing(existing.at),
        )
    if trade.status == WAIT_BUYER_PAY:
        raise business_failed("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
    if trade.status == TRADE_CLOSED:
        raise business_failed("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
    if trade.status == TRADE_FINISHED:
        raise business_failed("ACQ.TRADE_HAS_FINISHED", "交易已完结")
    if given_request_no is None and amount != trade.total_fen:
        raise business_failed("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "撤销或退款金额与订单金额不一致")
    if trade.refunded_fen + amount > trade.total_fen:
        raise business_failed("ACQ.REASON_TRADE_REFUND_FEE_ERR", "退款金额无效")
    failure = simulator.trade_faults.take_refund_failure()
    if failure is not None:
        raise failure
    refund = SimulatedRefund(
        out_request_no=out_request_no,
        refund_fen=amount,
        at=call.now,
        reason=_optional_text(biz, "refund_reason", 256),
    )
    trade.refunds[out_request_no] = refund
    if trade.refunded_fen == trade.total_fen:
        trade.status = TRADE_CLOSED
        trade.closed_at = call.now
    await simulator.notify_trade(trade, now=call.now, refund=refund)
    return ok(
        **answer,
        fund_change="Y",
        refund_fee=_yuan(trade.refunded_fen),
        gmt_refund_pay=_beijing(refund.at),
    )


async def refund_query(simulator: AlipaySimulator, call: GatewayCall) -> dict[str, object]:
    """``alipay.trade.fastpay.refund.query``: ``refund_status`` ``REFUND_SUCCESS`` for a refund that was made;
    only the trade's ids for one that was not (no refund fields: "not refunded")."""
    biz = call.biz_content()
    trade = _located(simulator, call, biz)
    out_request_no = _out_no(biz.get("out_request_no"), "out_request_no")
    refund = trade.refunds.get(out_request_no)
    if refund is None:
        return ok(trade_no=trade.trade_no, out_trade_no=trade.out_trade_no)
    fields: dict[str, object] = {
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "out_request_no": out_request_no,
        "total_amount": _yuan(trade.total_fen),
        "refund_amount": _yuan(refund.refund_fen),
        "refund_status": "REFUND_SUCCESS",
    }
    if refund.reason:
        fields["refund_reason"] = refund.reason
    options = biz.get("query_options")
    if isinstance(options, list) and "gmt_refund_pay" in options:
        fields["gmt_refund_pay"] = _beijing(refund.at)
    return ok(**fields)


def _bill_period(value: object, today: date) -> tuple[date, date, str]:
    """(first day, last day, file label) of a ``yyyy-MM-dd`` or ``yyyy-MM`` bill date that is complete."""
    if not isinstance(value, str):
        raise invalid_arguments("isv.invalid-parameter", "bill_date参数格式不正确")
    try:
        if len(value) == 10:
            day = datetime.strptime(value, "%Y-%m-%d").date()  # noqa: DTZ007 - a calendar day, no instant
            first, last, label = day, day, f"{day:%Y%m%d}"
        elif len(value) == 7:
            first = datetime.strptime(value, "%Y-%m").date()  # noqa: DTZ007 - a calendar month, no instant
            last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
            label = f"{first:%Y%m}"
        else:
            raise ValueError(value)
    except ValueError:
        raise invalid_arguments("isv.invalid-parameter", "bill_date参数格式不正确") from None
    if last >= today:
        raise business_failed("isp.bill_not_exist", "账单不存在")
    return first, last, label


async def bill_download_url(simulator: AlipaySimulator, call: GatewayCall) -> dict[str, object]:
    """``alipay.data.dataservice.bill.downloadurl.query`` for ``trade`` bills of past days or months: a link to
    ``/downloadBillFile.resource`` valid 30 s of shared-clock time (the bill is taken when the link is)."""
    biz = call.biz_content()
    if biz.get("bill_type") != "trade":
        raise invalid_arguments("isv.invalid-parameter", "bill_type参数无效（模拟器只提供trade账单）")
    first, last, label = _bill_period(biz.get("bill_date"), _beijing_day(call.now))
    file_name, data = simulator.trade_bill(first, last, label=label)
    file_id = f"{simulator.ctx.random.getrandbits(128):032x}"
    simulator.bills[file_id] = IssuedBill(file_name=file_name, data=data, expires_at=call.now + BILL_URL_TTL)
    query = urlencode(
        {
            "bizType": "trade",
            "userId": simulator.seller_id,
            "fileType": "csv.zip",
            "bizDates": label,
            "downloadFileName": file_name,
            "fileId": file_id,
            "timestamp": str(int(call.now.timestamp() * 1000)),
        }
    )
    return ok(bill_download_url=f"{call.base_url}/downloadBillFile.resource?{query}")


METHODS: Final[Mapping[str, MethodHandler]] = {
    OAUTH_METHOD: oauth_token,
    TEMPLATE_MESSAGE_METHOD: send_template_message,
}
"""The login and message methods."""

TRADE_METHODS: Final[Mapping[str, MethodHandler]] = {
    TRADE_CREATE_METHOD: trade_create,
    TRADE_QUERY_METHOD: trade_query,
    TRADE_CLOSE_METHOD: trade_close,
    TRADE_REFUND_METHOD: trade_refund,
    REFUND_QUERY_METHOD: refund_query,
    BILL_URL_METHOD: bill_download_url,
}
"""The trade (payment) methods. A new simulator starts with ``METHODS`` and ``TRADE_METHODS``;
``AlipaySimulator.methods`` is its own copy (replace it with ``dict(METHODS)`` for a gateway without
payments)."""


# -- routes ----------------------------------------------------------------------------------------------------------


def _merge_params(query: bytes, body: bytes | None) -> dict[str, str] | GatewayFailure:
    merged: dict[str, str] = {}
    sources = [query.decode("utf-8", "replace")]
    if body is not None:
        sources.append(body.decode("utf-8", "replace"))
    for source in sources:
        try:
            pairs = parse_qsl(source, keep_blank_values=True, encoding="utf-8", max_num_fields=_MAX_PARAMS)
        except ValueError:
            return invalid_arguments("isv.invalid-parameter", "参数过多")
        for key, value in pairs:
            if key in merged and merged[key] != value:
                return invalid_arguments("isv.invalid-parameter", f"参数{key}重复")
            merged[key] = value
    return merged


@route("/gateway.do", http_method=["GET", "POST"], status_code=200)
async def gateway(request: Request[Any, Any, Any], simulator: NamedDependency[AlipaySimulator]) -> Response[bytes]:
    """The OpenAPI v2 gateway: query string and form body merged, verified, dispatched by ``method``."""
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    form = body if content_type == "application/x-www-form-urlencoded" else None
    params = _merge_params(request.scope["query_string"], form)
    if isinstance(params, GatewayFailure):
        answer = simulator.render(ERROR_RESPONSE, params.payload(), signed=False)
    else:
        base_url = str(request.url).split("?", 1)[0].removesuffix("/gateway.do")
        answer = await simulator.answer(params, base_url=base_url)
    return Response(answer, status_code=200, media_type=GATEWAY_CONTENT_TYPE)


class AuthCodeIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    app_id: str | None = None
    """Default: the first registered app."""
    user_id: str | None = None
    """``2088`` + 12 digits; created when new. Default: a new user."""
    open_id: str | None = None
    """Only for apps in ``open_id`` mode: the user behind it (bound to a new user when unknown)."""


class AuthCodeOut(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    auth_code: str
    user_id: str | None = None
    """In ``user_id`` mode."""
    open_id: str | None = None
    """In ``open_id`` mode."""
    union_id: str | None = None
    """When the app returns union ids."""


@post("/test/auth-code", status_code=200)
async def issue_auth_code(request: Request[Any, Any, Any], simulator: NamedDependency[AlipaySimulator]) -> AuthCodeOut:
    """Test and demo helper: the authCode ``my.getAuthCode`` would give the mini-program (body optional)."""
    raw = await request.body()
    try:
        data = msgspec.json.decode(raw, type=AuthCodeIn) if raw.strip() else AuthCodeIn()
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValidationException(str(exc)) from None
    if data.user_id is not None and not _USER_ID.fullmatch(data.user_id):
        raise ValidationException("userId is 2088 followed by 12 digits")
    if data.open_id is not None and not 1 <= len(data.open_id) <= 128:
        raise ValidationException("openId is 1 to 128 characters")
    if data.app_id is not None and data.app_id not in simulator.apps:
        raise NotFoundException(f"no app {data.app_id!r} is registered")
    try:
        code, user = simulator.issue_auth_code(data.app_id, user_id=data.user_id, open_id=data.open_id)
    except LookupError as exc:
        raise NotFoundException(str(exc)) from None
    except ValueError as exc:
        raise ValidationException(str(exc)) from None
    app = simulator.apps[code.app_id]
    return AuthCodeOut(
        auth_code=code.code,
        user_id=user.user_id if app.mode == "user_id" else None,
        open_id=simulator.open_id_for(app.app_id, user.user_id) if app.mode == "open_id" else None,
        union_id=user.union_id if app.union_id else None,
    )


class AppIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    public_key_pem: str | None = None
    """Required to register a new app; replaces the key of a known one."""
    mode: AppMode | None = None
    union_id: bool | None = None


class AppOut(msgspec.Struct, rename="camel", kw_only=True):
    app_id: str
    mode: AppMode
    union_id: bool


@put("/test/apps/{app_id:str}", status_code=200)
async def configure_app(
    app_id: FromPath[str], data: JSONBody[AppIn], simulator: NamedDependency[AlipaySimulator]
) -> AppOut:
    """Test and demo helper: register an app or change its key, mode (``user_id``/``open_id``), union ids."""
    try:
        existing = simulator.apps.get(app_id)
        if data.public_key_pem is not None:
            app = simulator.register_app(
                app_id,
                data.public_key_pem.encode("ascii"),
                mode=data.mode or (existing.mode if existing else "user_id"),
                union_id=data.union_id if data.union_id is not None else bool(existing and existing.union_id),
            )
        elif existing is None:
            raise NotFoundException(f"no app {app_id!r}: give publicKeyPem to register it")
        else:
            app = simulator.set_app_mode(app_id, data.mode or existing.mode, union_id=data.union_id)
    except ValueError as exc:
        raise ValidationException(str(exc)) from None
    return AppOut(app_id=app.app_id, mode=app.mode, union_id=app.union_id)


@get("/test/public-key", media_type="application/x-pem-file")
async def read_public_key(simulator: NamedDependency[AlipaySimulator]) -> bytes:
    """Test and demo helper: the simulated "Alipay public key" (SPKI PEM) clients verify answers with."""
    return simulator.public_key_pem


class SubscribeGrantIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    template_id: str
    user_id: str | None = None
    """Apps in ``user_id`` mode: ``2088`` + 12 digits (created when new)."""
    open_id: str | None = None
    """Apps in ``open_id`` mode (bound to a new user when unknown)."""
    app_id: str | None = None
    """Default: the first registered app."""
    count: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1
    keywords: Annotated[int, msgspec.Meta(ge=1, le=20)] | None = None
    """How many ``keywordN`` the template has (checked on send); unset: any count."""


class SubscribeGrantOut(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    app_id: str
    template_id: str
    remaining: int
    user_id: str | None = None
    open_id: str | None = None


@post("/test/subscribe-grant", status_code=200)
async def grant_subscription(
    data: JSONBody[SubscribeGrantIn], simulator: NamedDependency[AlipaySimulator]
) -> SubscribeGrantOut:
    """Test and demo helper: the user accepted ``my.requestSubscribeMessage`` for the template ``count``
    times (one send each); the template becomes one of the app's."""
    if not data.template_id.strip() or len(data.template_id) > 128:
        raise ValidationException("templateId is 1 to 128 characters")
    if data.user_id is not None and not _USER_ID.fullmatch(data.user_id):
        raise ValidationException("userId is 2088 followed by 12 digits")
    if data.open_id is not None and not 1 <= len(data.open_id) <= 128:
        raise ValidationException("openId is 1 to 128 characters")
    if data.app_id is not None and data.app_id not in simulator.apps:
        raise NotFoundException(f"no app {data.app_id!r} is registered")
    try:
        app, person, remaining = simulator.grant_subscription(
            data.template_id,
            app_id=data.app_id,
            user_id=data.user_id,
            open_id=data.open_id,
            count=data.count,
            keywords=data.keywords,
        )
    except LookupError as exc:
        raise NotFoundException(str(exc)) from None
    except ValueError as exc:
        raise ValidationException(str(exc)) from None
    return SubscribeGrantOut(
        app_id=app.app_id,
        template_id=data.template_id,
        remaining=remaining,
        user_id=person.user_id if app.mode == "user_id" else None,
        open_id=data.open_id if app.mode == "open_id" else None,
    )


class TradePayIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    trade_no: str | None = None
    out_trade_no: str | None = None
    app_id: str | None = None
    """With ``outTradeNo``: whose trade (default: the first registered app)."""


class TradePayOut(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    trade_no: str
    out_trade_no: str
    trade_status: str
    result_code: str
    """What ``my.tradePay`` answers the mini-program: ``9000`` (success)."""
    callback_id: str | None = None
    """The notification's id in the ``callbacks`` stream (none without a ``notify_url``)."""


def _payable(
    simulator: AlipaySimulator, *, trade_no: str | None, out_trade_no: str | None, app_id: str | None
) -> SimulatedTrade:
    if (trade_no is None) == (out_trade_no is None):
        raise ValidationException("give exactly one of tradeNo and outTradeNo")
    if app_id is not None and app_id not in simulator.apps:
        raise NotFoundException(f"no app {app_id!r} is registered")
    try:
        return simulator.find_trade(trade_no=trade_no, out_trade_no=out_trade_no, app_id=app_id)
    except LookupError as exc:
        raise NotFoundException(str(exc)) from None


async def _paid(simulator: AlipaySimulator, trade: SimulatedTrade, *, user_id: str | None = None) -> str | None:
    try:
        return await simulator.pay(trade, user_id=user_id)
    except TradeStateError as exc:
        raise ClientException(
            str(exc), status_code=409, extra={"resultCode": "4000", "tradeStatus": trade.status}
        ) from None


@post("/test/trade/pay", status_code=200)
async def pay_trade(data: JSONBody[TradePayIn], simulator: NamedDependency[AlipaySimulator]) -> TradePayOut:
    """Test and demo helper: the resident pays in ``my.tradePay({tradeNO})``: the trade becomes
    ``TRADE_SUCCESS`` and its notification goes out. 404 for an unknown trade, 409 (``resultCode`` 4000) for
    one that is closed, expired or already paid."""
    trade = _payable(simulator, trade_no=data.trade_no, out_trade_no=data.out_trade_no, app_id=data.app_id)
    callback_id = await _paid(simulator, trade)
    return TradePayOut(
        trade_no=trade.trade_no,
        out_trade_no=trade.out_trade_no,
        trade_status=trade.status,
        result_code="9000",
        callback_id=callback_id,
    )


class AppPayIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    order_string: str
    user_id: str | None = None
    """The paying user (``2088`` + 12 digits, created when new); default: a new user."""


class AppPayOut(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    result_status: str
    """What the app SDK answers: ``9000`` (success)."""
    trade_no: str
    out_trade_no: str
    trade_status: str
    callback_id: str | None = None


@post("/test/trade/app-pay", status_code=200)
async def app_pay_trade(data: JSONBody[AppPayIn], simulator: NamedDependency[AlipaySimulator]) -> AppPayOut:
    """Test and demo helper: the Alipay app SDK pays an ``alipay.trade.app.pay`` order string.

    The string is checked as the gateway checks a request (app, RSA2 signature under the app key, fresh
    timestamp; 400 with Alipay's ``sub_code`` otherwise); the trade is created (or found again for the same
    order) and paid, and its notification goes out.
    """
    if data.user_id is not None and not _USER_ID.fullmatch(data.user_id):
        raise ValidationException("userId is 2088 followed by 12 digits")
    params = _merge_params(data.order_string.encode("utf-8"), None)
    try:
        if isinstance(params, GatewayFailure):
            raise params
        if params.get("method") != TRADE_APP_PAY_METHOD:
            raise invalid_arguments("isv.invalid-method", "不是alipay.trade.app.pay的订单串")
        app = simulator._identify(params)
        simulator._authenticate(app, params)
        biz = GatewayCall(
            app=app, method=TRADE_APP_PAY_METHOD, params=params, now=simulator.ctx.clock.now()
        ).biz_content()
        out_trade_no = _out_no(biz.get("out_trade_no"), "out_trade_no")
        total_fen = _trade_amount(biz.get("total_amount"), "total_amount")
        subject = _optional_text(biz, "subject", 256)
        if subject is None:
            raise missing_arguments("isv.missing-subject", "缺少subject参数")
        trade = simulator.trade(app.app_id, out_trade_no=out_trade_no)
        if trade is not None and trade.total_fen != total_fen:
            raise business_failed("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
    except GatewayFailure as failure:
        raise ValidationException(f"{failure.sub_code}: {failure.sub_msg}", extra=failure.payload()) from None
    if trade is None:
        trade = simulator.open_trade(
            app,
            out_trade_no=out_trade_no,
            total_fen=total_fen,
            subject=subject,
            product_code=biz.get("product_code") or "QUICK_MSECURITY_PAY",
            now=simulator.ctx.clock.now(),
            time_expire=_time_expire(biz),
            notify_url=params.get("notify_url") or None,
            user_id=None,
        )
    callback_id = await _paid(simulator, trade, user_id=data.user_id)
    return AppPayOut(
        result_status="9000",
        trade_no=trade.trade_no,
        out_trade_no=trade.out_trade_no,
        trade_status=trade.status,
        callback_id=callback_id,
    )


class RefundOut(msgspec.Struct, rename="camel", kw_only=True):
    out_request_no: str
    refund_fen: int
    at: datetime


class TradeOut(msgspec.Struct, rename="camel", kw_only=True):
    app_id: str
    out_trade_no: str
    trade_no: str
    status: str
    total_fen: int
    refunded_fen: int
    created_at: datetime
    time_expire: datetime | None
    paid_at: datetime | None
    closed_at: datetime | None
    refunds: list[RefundOut]


@get("/test/trades/{out_trade_no:str}")
async def read_trade(
    out_trade_no: FromPath[str], simulator: NamedDependency[AlipaySimulator], app_id: FromQuery[str | None] = None
) -> TradeOut:
    """Test and demo helper: one trade as the simulator holds it (``appId`` default: the first app)."""
    trade = _payable(simulator, trade_no=None, out_trade_no=out_trade_no, app_id=app_id)
    return TradeOut(
        app_id=trade.app_id,
        out_trade_no=trade.out_trade_no,
        trade_no=trade.trade_no,
        status=trade.status,
        total_fen=trade.total_fen,
        refunded_fen=trade.refunded_fen,
        created_at=trade.created_at,
        time_expire=trade.time_expire,
        paid_at=trade.paid_at,
        closed_at=trade.closed_at,
        refunds=[
            RefundOut(out_request_no=r.out_request_no, refund_fen=r.refund_fen, at=r.at) for r in trade.refunds.values()
        ],
    )


class RefundFailureIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    sub_code: str = "ACQ.SELLER_BALANCE_NOT_ENOUGH"
    sub_msg: str | None = None
    count: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """How many refunds fail; unset: every one until cleared."""


class OutageIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    count: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """How many calls answer ``20000``; unset: every one until cleared."""
    processed: bool = False
    """Answer ``20000`` after doing the work (the caller cannot know whether it happened)."""


class TradeFaultsIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    refund_failure: RefundFailureIn | None = None
    unavailable: dict[str, OutageIn] = msgspec.field(default_factory=dict)
    """Method name -> its outage (any gateway method, not only trades)."""


@put("/test/trade/faults", status_code=200)
async def replace_trade_faults(
    data: JSONBody[TradeFaultsIn], simulator: NamedDependency[AlipaySimulator]
) -> TradeFaultsIn:
    """Test and demo helper: failing refunds (``40004`` with ``subCode``) and ``20000`` outages of methods.
    Notification faults (drop, duplicate, delay, reorder) are the sandbox's ``callbacks`` fault plan."""
    failure = data.refund_failure
    simulator.trade_faults = TradeFaults(
        refund_failure=failure.sub_code if failure is not None else None,
        refund_failure_msg=failure.sub_msg if failure is not None else None,
        refund_failures_left=failure.count if failure is not None else None,
        outages={
            method: MethodOutage(remaining=outage.count, processed=outage.processed)
            for method, outage in data.unavailable.items()
        },
    )
    return data


@delete("/test/trade/faults")
async def clear_trade_faults(simulator: NamedDependency[AlipaySimulator]) -> None:
    simulator.trade_faults = TradeFaults()


@get("/downloadBillFile.resource", media_type="application/zip")
async def download_bill_file(
    request: Request[Any, Any, Any], simulator: NamedDependency[AlipaySimulator]
) -> Response[bytes]:
    """A bill file behind a ``bill_download_url`` (valid 30 s of shared-clock time): a zip of GBK CSVs."""
    issued = simulator.bills.get(request.query_params.get("fileId", ""))
    if issued is None or simulator.ctx.clock.now() > issued.expires_at:
        return Response("文件不存在或已过期".encode(), status_code=404, media_type="text/plain;charset=utf-8")
    return Response(
        issued.data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{issued.file_name}"'},
    )
