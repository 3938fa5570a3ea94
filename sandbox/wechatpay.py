"""The WeChat Pay API v3 simulator (protocols §2, §7), mounted at ``/sandbox/wechatpay``.

Vendor routes, same paths and shapes as ``https://api.mch.weixin.qq.com`` (a client's base URL is
``http://127.0.0.1:8000/sandbox/wechatpay`` in the demo):

* ``GET /v3/certificates`` – the platform certificates, each AEAD_AES_256_GCM-encrypted with the merchant's
  APIv3 key (AAD ``certificate``); self-signed, generated on first use, rotated by a test helper;
* ``POST /v3/pay/transactions/jsapi`` and ``POST /v3/pay/transactions/app`` – prepay (``prepay_id``, 2 h);
* ``GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=`` and ``GET /v3/pay/transactions/id/{id}?mchid=``;
* ``POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close`` – 204 (also for an already closed or an
  unknown order, as WeChat Pay is reported to answer); ``ORDERPAID`` once paid;
* ``POST /v3/refund/domestic/refunds`` and ``GET /v3/refund/domestic/refunds/{out_refund_no}`` – refunds are
  ``PROCESSING`` for ``refund_processing_seconds`` of shared-clock time, then ``SUCCESS`` (or ``ABNORMAL``
  under that fault); 0 makes them ``SUCCESS`` at once. The same ``out_refund_no`` refunds once; the refunds of
  an order never exceed what was paid (``INVALID_REQUEST``);
* ``GET /v3/bill/tradebill`` and ``GET /v3/billdownload/file?token=`` – the day's trade bill (CSV, optionally
  gzipped), ``hash_value`` the SHA1 of the plain CSV, ready from 10:00 Beijing time the next day; the file
  answer is the only unsigned one.

Every vendor request must carry ``Authorization: WECHATPAY2-SHA256-RSA2048 ...`` signed over
``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`` (URL relative to the mount) with the registered merchant key and
serial, within 300 s of the shared clock, and a ``User-Agent``; otherwise ``401 SIGN_ERROR``. Every answer
(errors too) is signed over ``TIMESTAMP\\nNONCE\\nBODY\\n``: with the current platform certificate
(``Wechatpay-Serial`` = its serial) for merchants in ``certificate`` mode, with the ``PUB_KEY_ID_...`` key for
merchants in ``public_key`` mode. Errors are ``{"code", "message"}`` with WeChat Pay's statuses.

Notifications (``TRANSACTION.SUCCESS``, ``REFUND.SUCCESS``/``REFUND.ABNORMAL``) carry an encrypted resource and
are retried on 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h of shared-clock time until the receiver
answers 2xx. WeChat Pay signs every attempt afresh (receivers refuse timestamps older than 300 s), while the
framework's dispatcher repeats the headers of the first attempt; so the dispatcher posts to this simulator's
own ``POST /test/relay/{id}``, which signs and sends the notification at that moment and answers 2xx only
when the receiver did. The relay is reached at ``relay_base_url`` or at the address the triggering request
came to. Refund notifications are queued with the processing time as their delay.

Test helpers under ``/sandbox/wechatpay/test/``: ``pay`` (the resident pays a ``prepay_id``), ``merchants/
{mchid}`` (register or change a merchant: key, serial, APIv3 key, mode, app ids), ``platform`` (the keys and
certificate a client is configured with), ``rotate-certificate``, ``faults`` (global vendor faults) and
``orders/{out_trade_no}/faults`` (per-order notification faults), ``notifications`` (every notification with
its attempts and outcome; each attempt is also recorded in the ``notifications`` stream of the recorder).

Faults. Per order: drop, duplicate or delay its notifications, send a ``WECHATPAY/SIGNTEST/`` probe first
(the receiver must refuse it; the genuine notification follows on the retry schedule), make its refunds
``ABNORMAL``. Global: the probe and ``ABNORMAL`` refunds for every order, failures of chosen methods (status
and code, e.g. 500 ``SYSTEM_ERROR`` or 403 ``NOT_ENOUGH``, optionally a number of times), answers with a bad
signature, a tampered bill file. Global drop/duplicate/delay/reorder of notifications is the framework's plan
(``PUT /sandbox/admin/wechatpay/faults``); reorder is global only.

Simplifications: direct merchants only; no coupons, no sensitive-field encryption, no refund of an
``ABNORMAL`` refund to another account, no fund-flow bill, one currency (CNY); ids follow the documented
shapes but are random; error messages are close to WeChat Pay's, not verbatim.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import re
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Final, Literal

import httpx
import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from litestar import Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import FromPath, JSONBody
from litestar.types import ControllerRouterHandler

from domain.kernel.clock import SHANGHAI, to_shanghai
from domain.kernel.money import fen_to_yuan
from sandbox.framework import CALLBACKS, CallbackRecord, Simulator

AUTH_SCHEMA: Final = "WECHATPAY2-SHA256-RSA2048"
SIGNTEST_PREFIX: Final = "WECHATPAY/SIGNTEST/"
AEAD_ALGORITHM: Final = "AEAD_AES_256_GCM"
DEFAULT_PUBLIC_KEY_ID: Final = "PUB_KEY_ID_0100000000002025030100000000000001"
NOTIFY_RETRY_SCHEDULE: Final = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600)
"""Seconds before each retry of a notification (24 h 4 min in all), protocols §2.5."""
NOTIFICATIONS: Final = "notifications"
"""Recorder stream: every notification queued and every attempt to deliver it."""
WINDOW: Final = timedelta(seconds=300)
PREPAY_LIFETIME: Final = timedelta(hours=2)
BILL_READY_HOUR: Final = 10
BILL_HISTORY_DAYS: Final = 92

MerchantMode = Literal["certificate", "public_key"]

_ALNUM = string.ascii_letters + string.digits
_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
_OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
_AUTH_PARAM = re.compile(r'\s*(\w+)="([^"]*)"\s*(?:,|$)')
_VENDOR_ROOTS = ("/v3/", "/test/")
_STATE_DESC: Final[Mapping[str, str]] = {
    "SUCCESS": "支付成功",
    "REFUND": "转入退款",
    "NOTPAY": "订单未支付",
    "CLOSED": "订单已关闭",
}
_BILL_HEADER: Final = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,"
    "商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)
_BILL_SUMMARY_HEADER: Final = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)


class WechatPayAnswerError(Exception):
    """An error answer: HTTP status plus ``{"code", "message"}`` (and ``detail`` for ``PARAM_ERROR``)."""

    def __init__(self, status: int, code: str, message: str, detail: Mapping[str, object] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = dict(detail) if detail else None

    def payload(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.detail:
            body["detail"] = self.detail
        return body


def param_error(field_path: str, issue: str) -> WechatPayAnswerError:
    return WechatPayAnswerError(
        400, "PARAM_ERROR", f"参数错误：{field_path} {issue}", {"field": field_path, "location": "body", "issue": issue}
    )


def sign_error(message: str) -> WechatPayAnswerError:
    return WechatPayAnswerError(401, "SIGN_ERROR", message)


# --- faults ----------------------------------------------------------------------------------------------------


class MethodFailure(msgspec.Struct, rename="camel", frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Answer matching requests with this error instead of processing them (after authentication)."""

    method: str | None = None
    """``GET``/``POST``; None: any."""
    path_prefix: str = "/v3/"
    status: Annotated[int, msgspec.Meta(ge=400, le=599)] = 500
    code: str = "SYSTEM_ERROR"
    message: str = "系统错误"
    times: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """How many matching requests fail; None: all of them."""


class OrderFaults(msgspec.Struct, rename="camel", frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Faults for one ``out_trade_no`` (set before or after the order exists)."""

    drop_notifications: bool = False
    duplicate_notifications: bool = False
    delay_notifications_seconds: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    signtest_probe: bool = False
    """Send a ``WECHATPAY/SIGNTEST/`` probe first; the genuine notification follows on the retry schedule."""
    refund_abnormal: bool = False


class WechatPayFaults(msgspec.Struct, rename="camel", frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Vendor faults for every order and request."""

    signtest_probe: bool = False
    refund_abnormal: bool = False
    fail: tuple[MethodFailure, ...] = ()
    bad_response_signature: bool = False
    """Sign answers over something else: clients must refuse them."""
    tamper_bill: bool = False
    """Serve bill files that differ from their SHA1."""


NO_VENDOR_FAULTS: Final = WechatPayFaults()
NO_ORDER_FAULTS: Final = OrderFaults()


# --- state -----------------------------------------------------------------------------------------------------


@dataclass
class SimulatedMerchant:
    """A merchant registered with the simulated WeChat Pay."""

    mchid: str
    public_key_pem: bytes
    """The merchant API certificate's public key (SPKI PEM or the certificate PEM)."""
    serial_no: str
    api_v3_key: bytes
    mode: MerchantMode = "certificate"
    appids: frozenset[str] | None = None
    """The app ids bound to the merchant (None: any)."""
    public_key: rsa.RSAPublicKey = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.public_key = _load_public_key(self.public_key_pem)
        self.serial_no = _serial(self.serial_no)
        if self.mode not in ("certificate", "public_key"):
            raise ValueError(f"unknown merchant mode {self.mode!r}")


@dataclass
class PlatformCertificate:
    """One simulated platform certificate and its private key."""

    serial_no: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    certificate: x509.Certificate = field(repr=False)
    pem: bytes = field(repr=False)


@dataclass
class _Order:
    mchid: str
    appid: str
    out_trade_no: str
    trade_type: str
    description: str
    total_fen: int
    notify_url: str
    attach: str | None
    time_expire: datetime | None
    payer_openid: str | None
    created_at: datetime
    fingerprint: tuple[object, ...]
    trade_state: str = "NOTPAY"
    transaction_id: str | None = None
    success_time: datetime | None = None
    bank_type: str | None = None


@dataclass
class _Prepay:
    prepay_id: str
    mchid: str
    out_trade_no: str
    expires_at: datetime


@dataclass
class _Refund:
    mchid: str
    out_trade_no: str
    transaction_id: str
    out_refund_no: str
    refund_id: str
    refund_fen: int
    total_fen: int
    reason: str | None
    notify_url: str | None
    created_at: datetime
    settles_at: datetime
    abnormal: bool

    def status(self, now: datetime) -> str:
        if now < self.settles_at:
            return "PROCESSING"
        return "ABNORMAL" if self.abnormal else "SUCCESS"


@dataclass
class _Download:
    mchid: str
    content: bytes
    expires_at: datetime


@dataclass
class _Attempt:
    at: datetime
    status: int | None
    error: str | None
    probe: bool


@dataclass
class _Notification:
    notification_id: str
    event_id: str
    event_type: str
    mchid: str
    url: str
    out_trade_no: str
    out_refund_no: str | None
    created_at: datetime
    probe_pending: bool
    body: bytes | None = None
    callback_id: str | None = None
    attempts: list[_Attempt] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return any(not a.probe and a.status is not None and 200 <= a.status < 300 for a in self.attempts)


@dataclass(frozen=True)
class _Raw:
    """An unsigned answer (the bill file)."""

    content: bytes
    media_type: str = "application/octet-stream"


_Answer = tuple[int, "dict[str, object] | _Raw | None"]


# --- crypto helpers --------------------------------------------------------------------------------------------


def _load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    text = pem.strip()
    key: Any = (
        x509.load_pem_x509_certificate(text).public_key()
        if text.startswith(b"-----BEGIN CERTIFICATE-----")
        else serialization.load_pem_public_key(text)
    )
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("WeChat Pay keys are RSA")
    return key


def _load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("WeChat Pay keys are RSA")
    return key


def _serial(serial: str) -> str:
    serial = serial.strip()
    try:
        return format(int(serial, 16), "X")
    except ValueError:
        return serial


def _sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def _public_pem(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _json(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _rfc3339(instant: datetime) -> str:
    return to_shanghai(instant).isoformat(timespec="seconds")


def _vendor_split(path: str) -> tuple[str, str]:
    """(mount, vendor path) of a request path: the vendor path starts at the first ``/v3/`` or ``/test/``."""
    found = [index for root in _VENDOR_ROOTS if (index := path.find(root)) >= 0]
    if not found:
        return path.rstrip("/"), "/"
    cut = min(found)
    return path[:cut], path[cut:]


# --- the simulator ------------------------------------------------------------------------------------------------


class WechatPaySimulator(Simulator):
    """Simulated WeChat Pay: its merchants, its platform keys (certificate and ``PUB_KEY_ID_`` mode), orders,
    refunds, bills and notifications."""

    name = "wechatpay"

    def __init__(
        self,
        *,
        merchants: Iterable[SimulatedMerchant] = (),
        name: str | None = None,
        platform_private_key_pem: bytes | None = None,
        public_key_private_pem: bytes | None = None,
        public_key_id: str = DEFAULT_PUBLIC_KEY_ID,
        refund_processing_seconds: float = 60.0,
        download_lifetime_seconds: float = 300.0,
        relay_base_url: str | None = None,
    ) -> None:
        """``platform_private_key_pem`` pins the key of the first platform certificate and
        ``public_key_private_pem`` the key behind ``public_key_id`` (fresh 2048-bit keys otherwise)."""
        super().__init__(name=name)
        if not public_key_id.startswith("PUB_KEY_ID_"):
            raise ValueError("a WeChat Pay public key id starts with PUB_KEY_ID_")
        self.merchants: dict[str, SimulatedMerchant] = {m.mchid: m for m in merchants}
        self._first_platform_key = (
            _load_private_key(platform_private_key_pem) if platform_private_key_pem else _new_key()
        )
        self._public_mode_key = _load_private_key(public_key_private_pem) if public_key_private_pem else _new_key()
        self.public_key_id = public_key_id
        self._certificates: list[PlatformCertificate] = []
        self.refund_processing = timedelta(seconds=refund_processing_seconds)
        self.download_lifetime = timedelta(seconds=download_lifetime_seconds)
        self.relay_base_url = relay_base_url.rstrip("/") if relay_base_url else None
        self._learned_base: str | None = None
        self.vendor_faults: WechatPayFaults = NO_VENDOR_FAULTS
        self._fail_left: list[int | None] = []
        self.order_faults: dict[str, OrderFaults] = {}
        self._orders: dict[tuple[str, str], _Order] = {}
        self._prepays: dict[str, _Prepay] = {}
        self._transactions: dict[str, tuple[str, str]] = {}
        self._refunds: dict[tuple[str, str], _Refund] = {}
        self._downloads: dict[str, _Download] = {}
        self._notifications: dict[str, _Notification] = {}

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        return [*_vendor_routes, *_helper_routes]

    def seed(self, seed: int) -> None:
        """Forget orders, refunds, downloads, notifications and per-order faults; merchants, platform keys and
        the global vendor faults are configuration and stay."""
        self._orders.clear()
        self._prepays.clear()
        self._transactions.clear()
        self._refunds.clear()
        self._downloads.clear()
        self._notifications.clear()
        self.order_faults.clear()

    # --- configuration ---------------------------------------------------------------------------------------

    def register_merchant(
        self,
        mchid: str,
        *,
        public_key_pem: bytes,
        serial_no: str,
        api_v3_key: bytes,
        mode: MerchantMode = "certificate",
        appids: Iterable[str] | None = None,
    ) -> SimulatedMerchant:
        merchant = SimulatedMerchant(
            mchid=mchid,
            public_key_pem=public_key_pem,
            serial_no=serial_no,
            api_v3_key=api_v3_key,
            mode=mode,
            appids=frozenset(appids) if appids is not None else None,
        )
        self.merchants[mchid] = merchant
        return merchant

    def set_vendor_faults(self, faults: WechatPayFaults) -> None:
        self.vendor_faults = faults
        self._fail_left = [failure.times for failure in faults.fail]

    @property
    def certificate(self) -> PlatformCertificate:
        """The current platform certificate (made on first use, valid from a day before the shared clock's now
        for five years)."""
        if not self._certificates:
            self._certificates.append(self._make_certificate(self._first_platform_key))
        return self._certificates[-1]

    @property
    def certificates(self) -> list[PlatformCertificate]:
        self.certificate  # noqa: B018 - makes the first one
        return list(self._certificates)

    def rotate_certificate(self, private_key_pem: bytes | None = None) -> PlatformCertificate:
        """A new current certificate (new key); the older ones stay listed until they expire."""
        self.certificate  # noqa: B018
        key = _load_private_key(private_key_pem) if private_key_pem else _new_key()
        self._certificates.append(self._make_certificate(key))
        return self._certificates[-1]

    @property
    def public_key_mode_pem(self) -> bytes:
        """The public key behind ``public_key_id`` (what a public-key-mode client is configured with)."""
        return _public_pem(self._public_mode_key.public_key())

    def _make_certificate(self, key: rsa.RSAPrivateKey) -> PlatformCertificate:
        now = self.ctx.clock.now()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                x509.NameAttribute(NameOID.LOCALITY_NAME, "ShenZhen"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tenpay.com"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Tenpay.com CA Center"),
                x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com sign"),
            ]
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before((now - timedelta(days=1)).replace(microsecond=0))
            .not_valid_after((now + timedelta(days=5 * 365)).replace(microsecond=0))
            .sign(key, hashes.SHA256())
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        return PlatformCertificate(
            serial_no=format(certificate.serial_number, "X"), private_key=key, certificate=certificate, pem=pem
        )

    # --- ids ---------------------------------------------------------------------------------------------------

    def _digits(self, count: int) -> str:
        return "".join(self.ctx.random.choices(string.digits, k=count))

    def _hex(self, count: int) -> str:
        return f"{self.ctx.random.getrandbits(count * 4):0{count}x}"

    def _nonce(self) -> str:
        return self._hex(32).upper()

    def _beijing_stamp(self, now: datetime) -> str:
        return to_shanghai(now).strftime("%Y%m%d%H%M%S")

    # --- signing -------------------------------------------------------------------------------------------------

    def _signer(self, merchant: SimulatedMerchant | None) -> tuple[rsa.RSAPrivateKey, str]:
        if merchant is not None and merchant.mode == "public_key":
            return self._public_mode_key, self.public_key_id
        current = self.certificate
        return current.private_key, current.serial_no

    def signed_headers(
        self, merchant: SimulatedMerchant | None, body: bytes, *, probe: bool = False, corrupt: bool = False
    ) -> dict[str, str]:
        """The ``Wechatpay-*`` headers of an answer or a notification, signed now."""
        key, serial = self._signer(merchant)
        timestamp = str(int(self.ctx.clock.now().timestamp()))
        nonce = self._nonce()
        message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
        if probe:
            signature = SIGNTEST_PREFIX + base64.b64encode(self.ctx.random.randbytes(192)).decode("ascii")
        else:
            signature = _sign(key, message + b"tampered" if corrupt else message)
        return {
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature,
            "Wechatpay-Serial": serial,
            "Wechatpay-Signature-Type": AUTH_SCHEMA,
        }

    def _answer(self, merchant: SimulatedMerchant | None, status: int, payload: object) -> Response[bytes]:
        if isinstance(payload, _Raw):
            return Response(payload.content, status_code=status, media_type=payload.media_type)
        body = b"" if payload is None else _json(payload)
        headers = self.signed_headers(merchant, body, corrupt=self.vendor_faults.bad_response_signature)
        headers["Request-ID"] = f"{self._hex(8)}-{self._hex(4)}-{self._hex(4)}-{self._hex(12)}".upper()
        return Response(body, status_code=status, headers=headers, media_type="application/json")

    # --- request authentication ------------------------------------------------------------------------------

    def authenticate(
        self, method: str, canonical_url: str, headers: Mapping[str, str], body: bytes
    ) -> SimulatedMerchant:
        """Check the merchant's ``Authorization`` (``401 SIGN_ERROR`` when anything is off)."""
        if not headers.get("user-agent", "").strip():
            raise WechatPayAnswerError(400, "PARAM_ERROR", "请求头缺少User-Agent")
        authorization = headers.get("authorization", "")
        schema, _, params_text = authorization.strip().partition(" ")
        if schema != AUTH_SCHEMA:
            raise sign_error("Authorization的认证类型不是WECHATPAY2-SHA256-RSA2048")
        params: dict[str, str] = {}
        for match in _AUTH_PARAM.finditer(params_text):
            params[match.group(1)] = match.group(2)
        missing = [k for k in ("mchid", "nonce_str", "signature", "timestamp", "serial_no") if not params.get(k)]
        if missing:
            raise sign_error(f"Authorization缺少{','.join(missing)}")
        merchant = self.merchants.get(params["mchid"])
        if merchant is None:
            raise sign_error("商户号不存在")
        if _serial(params["serial_no"]) != merchant.serial_no:
            raise sign_error("商户证书序列号有误，请检查serial_no")
        timestamp = params["timestamp"]
        if not timestamp.isdigit():
            raise sign_error("timestamp格式错误")
        sent_at = datetime.fromtimestamp(int(timestamp), UTC)
        if abs(sent_at - self.ctx.clock.now()) > WINDOW:
            raise sign_error("请求的时间戳已过期或超前，请检查系统时间")
        message = f"{method.upper()}\n{canonical_url}\n{timestamp}\n{params['nonce_str']}\n".encode() + body + b"\n"
        try:
            signature = base64.b64decode(params["signature"], validate=True)
            merchant.public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except (binascii.Error, ValueError, InvalidSignature):
            raise sign_error("错误的签名，验签失败") from None
        return merchant

    def _claimed_merchant(self, authorization: str) -> SimulatedMerchant | None:
        """The merchant an ``Authorization`` names, verified or not: its errors are signed in its key mode."""
        for match in _AUTH_PARAM.finditer(authorization.partition(" ")[2]):
            if match.group(1) == "mchid":
                return self.merchants.get(match.group(2))
        return None

    def _injected_failure(self, method: str, vendor_path: str) -> WechatPayAnswerError | None:
        for index, failure in enumerate(self.vendor_faults.fail):
            if failure.method is not None and failure.method.upper() != method.upper():
                continue
            if not vendor_path.startswith(failure.path_prefix):
                continue
            left = self._fail_left[index] if index < len(self._fail_left) else None
            if left is not None:
                if left <= 0:
                    continue
                self._fail_left[index] = left - 1
            return WechatPayAnswerError(failure.status, failure.code, failure.message)
        return None

    def learn_base(self, request: Request[Any, Any, Any]) -> str:
        url = request.url
        mount, _ = _vendor_split(url.path)
        base = f"{url.scheme}://{url.netloc}{mount}"
        self._learned_base = base
        return base

    async def serve(
        self, request: Request[Any, Any, Any], operation: Callable[[SimulatedMerchant, bytes], Awaitable[_Answer]]
    ) -> Response[bytes]:
        """Authenticate a vendor request, apply the method faults, run ``operation``, sign its answer."""
        body = await request.body()
        self.learn_base(request)
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode("utf-8")
        _, vendor_path = _vendor_split(raw_path.decode("latin-1"))
        query = request.scope.get("query_string", b"").decode("latin-1")
        canonical = vendor_path + (f"?{query}" if query else "")
        merchant = self._claimed_merchant(request.headers.get("authorization", ""))
        try:
            merchant = self.authenticate(request.method, canonical, request.headers, body)
            injected = self._injected_failure(request.method, vendor_path)
            if injected is not None:
                raise injected
            status, payload = await operation(merchant, body)
        except WechatPayAnswerError as refusal:
            return self._answer(merchant, refusal.status, refusal.payload())
        return self._answer(merchant, status, payload)

    # --- orders ------------------------------------------------------------------------------------------------

    def _order(self, mchid: str, out_trade_no: str) -> _Order | None:
        return self._orders.get((mchid, out_trade_no))

    def prepay(self, merchant: SimulatedMerchant, body: bytes, trade_type: Literal["JSAPI", "APP"]) -> _Answer:
        data = _object_body(body)
        appid = _string(data, "appid", 1, 32)
        mchid = _string(data, "mchid", 1, 32)
        if mchid != merchant.mchid:
            raise param_error("/mchid", "与请求头中的商户号不一致")
        if merchant.appids is not None and appid not in merchant.appids:
            raise WechatPayAnswerError(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
        description = _string(data, "description", 1, 127)
        out_trade_no = _string(data, "out_trade_no", 6, 32)
        if not _OUT_TRADE_NO.fullmatch(out_trade_no):
            raise param_error("/out_trade_no", "只能是数字、大小写字母_-|*")
        notify_url = _string(data, "notify_url", 1, 256)
        if not notify_url.startswith(("http://", "https://")) or "?" in notify_url:
            raise param_error("/notify_url", "须为不带参数的http(s)地址")
        amount = _sub_object(data, "amount")
        total = amount.get("total")
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise param_error("/amount/total", "须为正整数（单位：分）")
        if amount.get("currency", "CNY") != "CNY":
            raise param_error("/amount/currency", "只支持CNY")
        attach = _optional_string(data, "attach", 128)
        time_expire = _optional_time(data, "time_expire")
        openid: str | None = None
        if trade_type == "JSAPI":
            openid = _string(_sub_object(data, "payer"), "openid", 1, 128, path="/payer/openid")
        now = self.ctx.clock.now()
        fingerprint = (trade_type, appid, description, total, openid)
        order = self._order(merchant.mchid, out_trade_no)
        if order is not None:
            if order.trade_state in ("SUCCESS", "REFUND"):
                raise WechatPayAnswerError(400, "ORDERPAID", "该订单已支付")
            if order.trade_state == "CLOSED":
                raise WechatPayAnswerError(403, "ORDER_CLOSED", "订单已关闭")
            if order.fingerprint != fingerprint:
                raise WechatPayAnswerError(403, "OUT_TRADE_NO_USED", "商户订单号重复")
        else:
            order = _Order(
                mchid=merchant.mchid,
                appid=appid,
                out_trade_no=out_trade_no,
                trade_type=trade_type,
                description=description,
                total_fen=total,
                notify_url=notify_url,
                attach=attach,
                time_expire=time_expire,
                payer_openid=openid,
                created_at=now,
                fingerprint=fingerprint,
            )
            self._orders[(merchant.mchid, out_trade_no)] = order
        order.notify_url = notify_url
        prepay_id = f"wx{self._beijing_stamp(now)}{self._hex(20)}"
        self._prepays[prepay_id] = _Prepay(
            prepay_id=prepay_id, mchid=merchant.mchid, out_trade_no=out_trade_no, expires_at=now + PREPAY_LIFETIME
        )
        return 200, {"prepay_id": prepay_id}

    def transaction_payload(self, order: _Order) -> dict[str, object]:
        """The transaction object of query answers and ``TRANSACTION.SUCCESS`` resources."""
        payload: dict[str, object] = {
            "appid": order.appid,
            "mchid": order.mchid,
            "out_trade_no": order.out_trade_no,
        }
        paid = order.trade_state in ("SUCCESS", "REFUND")
        if paid:
            payload["transaction_id"] = order.transaction_id
            payload["trade_type"] = order.trade_type
        payload["trade_state"] = order.trade_state
        payload["trade_state_desc"] = _STATE_DESC.get(order.trade_state, order.trade_state)
        if paid:
            payload["bank_type"] = order.bank_type
        if order.attach is not None:
            payload["attach"] = order.attach
        if paid and order.success_time is not None:
            payload["success_time"] = _rfc3339(order.success_time)
        if order.payer_openid is not None:
            payload["payer"] = {"openid": order.payer_openid}
        amount: dict[str, object] = {"total": order.total_fen}
        if paid:
            amount["payer_total"] = order.total_fen
        amount["currency"] = "CNY"
        amount["payer_currency"] = "CNY"
        payload["amount"] = amount
        payload["promotion_detail"] = []
        return payload

    def query(
        self,
        merchant: SimulatedMerchant,
        mchid: str | None,
        *,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
    ) -> _Answer:
        if mchid != merchant.mchid:
            raise WechatPayAnswerError(400, "PARAM_ERROR", "参数错误：mchid须为请求头中的商户号")
        order: _Order | None = None
        if out_trade_no is not None:
            order = self._order(merchant.mchid, out_trade_no)
        elif transaction_id is not None:
            key = self._transactions.get(transaction_id)
            order = self._orders.get(key) if key is not None and key[0] == merchant.mchid else None
        if order is None:
            raise WechatPayAnswerError(404, "ORDER_NOT_EXIST", "订单不存在")
        return 200, self.transaction_payload(order)

    def close(self, merchant: SimulatedMerchant, out_trade_no: str, body: bytes) -> _Answer:
        data = _object_body(body)
        if _string(data, "mchid", 1, 32) != merchant.mchid:
            raise param_error("/mchid", "与请求头中的商户号不一致")
        order = self._order(merchant.mchid, out_trade_no)
        if order is not None:
            if order.trade_state in ("SUCCESS", "REFUND"):
                raise WechatPayAnswerError(400, "ORDERPAID", "该订单已支付")
            order.trade_state = "CLOSED"
        return 204, None

    async def pay(self, prepay_id: str, *, bank_type: str = "OTHERS", openid: str | None = None) -> _Order:
        """The resident pays: SUCCESS now, and ``TRANSACTION.SUCCESS`` queued to the order's ``notify_url``."""
        prepay = self._prepays.get(prepay_id)
        if prepay is None:
            raise LookupError(f"no prepay {prepay_id!r}")
        order = self._orders[(prepay.mchid, prepay.out_trade_no)]
        now = self.ctx.clock.now()
        if order.trade_state in ("SUCCESS", "REFUND"):
            raise WechatPayAnswerError(409, "ORDERPAID", "该订单已支付")
        if order.trade_state == "CLOSED":
            raise WechatPayAnswerError(409, "ORDER_CLOSED", "订单已关闭")
        if now > prepay.expires_at or (order.time_expire is not None and now > order.time_expire):
            raise WechatPayAnswerError(409, "ORDER_EXPIRED", "订单已过期，无法支付")
        order.trade_state = "SUCCESS"
        order.success_time = now
        order.bank_type = bank_type
        order.transaction_id = f"42{to_shanghai(now):%Y%m%d}{self._digits(18)}"
        if order.payer_openid is None:
            order.payer_openid = openid or "o" + "".join(self.ctx.random.choices(_ALNUM + "-_", k=27))
        self._transactions[order.transaction_id] = (order.mchid, order.out_trade_no)
        merchant = self.merchants[order.mchid]
        resource = self.transaction_payload(order)
        notification = self._new_notification(
            "TRANSACTION.SUCCESS", merchant, order.notify_url, order.out_trade_no, None, now
        )
        notification.body = self._envelope(notification, merchant, "transaction", "支付成功", resource)
        await self._queue(notification, delay_seconds=0.0)
        return order

    # --- refunds -----------------------------------------------------------------------------------------------

    def refund_payload(self, refund: _Refund) -> dict[str, object]:
        now = self.ctx.clock.now()
        status = refund.status(now)
        payload: dict[str, object] = {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": refund.transaction_id,
            "out_trade_no": refund.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
        }
        if status == "SUCCESS":
            payload["success_time"] = _rfc3339(refund.settles_at)
        payload["create_time"] = _rfc3339(refund.created_at)
        payload["status"] = status
        payload["funds_account"] = "AVAILABLE"
        payload["amount"] = {
            "total": refund.total_fen,
            "refund": refund.refund_fen,
            "from": [],
            "payer_total": refund.total_fen,
            "payer_refund": refund.refund_fen,
            "settlement_refund": refund.refund_fen,
            "settlement_total": refund.total_fen,
            "discount_refund": 0,
            "currency": "CNY",
            "refund_fee": 0,
        }
        payload["promotion_detail"] = []
        return payload

    async def refund(self, merchant: SimulatedMerchant, body: bytes) -> _Answer:
        data = _object_body(body)
        out_refund_no = _string(data, "out_refund_no", 1, 64)
        if not _OUT_REFUND_NO.fullmatch(out_refund_no):
            raise param_error("/out_refund_no", "只能是数字、大小写字母_-|*@")
        transaction_id = _optional_string(data, "transaction_id", 32)
        out_trade_no = _optional_string(data, "out_trade_no", 32)
        if (transaction_id is None) == (out_trade_no is None):
            raise param_error("/out_trade_no", "transaction_id与out_trade_no须且只能填一个")
        amount = _sub_object(data, "amount")
        refund_fen, total_fen = amount.get("refund"), amount.get("total")
        for path, value in (("/amount/refund", refund_fen), ("/amount/total", total_fen)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise param_error(path, "须为正整数（单位：分）")
        assert isinstance(refund_fen, int)
        assert isinstance(total_fen, int)
        if amount.get("currency") != "CNY":
            raise param_error("/amount/currency", "必填，只支持CNY")
        reason = _optional_string(data, "reason", 80)
        notify_url = _optional_string(data, "notify_url", 256)
        if notify_url is not None and (not notify_url.startswith(("http://", "https://")) or "?" in notify_url):
            raise param_error("/notify_url", "须为不带参数的http(s)地址")
        order: _Order | None
        if transaction_id is not None:
            key = self._transactions.get(transaction_id)
            order = self._orders.get(key) if key is not None and key[0] == merchant.mchid else None
        else:
            assert out_trade_no is not None
            order = self._order(merchant.mchid, out_trade_no)
        if order is None:
            raise WechatPayAnswerError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        existing = self._refunds.get((merchant.mchid, out_refund_no))
        if existing is not None:
            if existing.out_trade_no != order.out_trade_no or existing.refund_fen != refund_fen:
                raise WechatPayAnswerError(400, "INVALID_REQUEST", "商户退款单号重复，且与原请求参数不一致")
            return 200, self.refund_payload(existing)
        if order.trade_state not in ("SUCCESS", "REFUND") or order.transaction_id is None:
            raise WechatPayAnswerError(400, "INVALID_REQUEST", "订单未支付，无法退款")
        if total_fen != order.total_fen:
            raise WechatPayAnswerError(400, "INVALID_REQUEST", "订单金额与原订单金额不一致")
        refunded = sum(
            r.refund_fen
            for r in self._refunds.values()
            if r.mchid == merchant.mchid and r.out_trade_no == order.out_trade_no
        )
        if refunded + refund_fen > order.total_fen:
            raise WechatPayAnswerError(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
        now = self.ctx.clock.now()
        faults = self.order_faults.get(order.out_trade_no, NO_ORDER_FAULTS)
        refund = _Refund(
            mchid=merchant.mchid,
            out_trade_no=order.out_trade_no,
            transaction_id=order.transaction_id,
            out_refund_no=out_refund_no,
            refund_id=f"50{self._digits(27)}",
            refund_fen=refund_fen,
            total_fen=order.total_fen,
            reason=reason,
            notify_url=notify_url,
            created_at=now,
            settles_at=now + self.refund_processing,
            abnormal=faults.refund_abnormal or self.vendor_faults.refund_abnormal,
        )
        self._refunds[(merchant.mchid, out_refund_no)] = refund
        order.trade_state = "REFUND"
        if notify_url is not None:
            event_type = "REFUND.ABNORMAL" if refund.abnormal else "REFUND.SUCCESS"
            notification = self._new_notification(
                event_type, merchant, notify_url, order.out_trade_no, out_refund_no, now
            )
            await self._queue(notification, delay_seconds=self.refund_processing.total_seconds())
        return 200, self.refund_payload(refund)

    def query_refund(self, merchant: SimulatedMerchant, out_refund_no: str) -> _Answer:
        refund = self._refunds.get((merchant.mchid, out_refund_no))
        if refund is None:
            raise WechatPayAnswerError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return 200, self.refund_payload(refund)

    def _refund_resource(self, refund: _Refund) -> dict[str, object]:
        now = self.ctx.clock.now()
        status = refund.status(now)
        resource: dict[str, object] = {
            "mchid": refund.mchid,
            "out_trade_no": refund.out_trade_no,
            "transaction_id": refund.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": status,
        }
        if status == "SUCCESS":
            resource["success_time"] = _rfc3339(refund.settles_at)
        resource["user_received_account"] = "支付用户零钱"
        resource["amount"] = {
            "total": refund.total_fen,
            "refund": refund.refund_fen,
            "payer_total": refund.total_fen,
            "payer_refund": refund.refund_fen,
        }
        return resource

    # --- bills -------------------------------------------------------------------------------------------------

    def trade_bill(self, merchant: SimulatedMerchant, query: Mapping[str, str], base: str) -> _Answer:
        raw_date = query.get("bill_date", "")
        try:
            bill_date = date.fromisoformat(raw_date)
        except ValueError:
            raise WechatPayAnswerError(400, "PARAM_ERROR", "参数错误：bill_date格式须为yyyy-MM-dd") from None
        bill_type = query.get("bill_type", "ALL")
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            raise WechatPayAnswerError(400, "PARAM_ERROR", "参数错误：bill_type须为ALL、SUCCESS或REFUND")
        tar_type = query.get("tar_type")
        if tar_type not in (None, "GZIP"):
            raise WechatPayAnswerError(400, "PARAM_ERROR", "参数错误：tar_type只能为GZIP")
        now = self.ctx.clock.now()
        today = to_shanghai(now).date()
        if (today - bill_date).days > BILL_HISTORY_DAYS:
            raise WechatPayAnswerError(400, "INVALID_REQUEST", "只能下载三个月以内的账单")
        ready = datetime.combine(bill_date + timedelta(days=1), datetime.min.time(), SHANGHAI).replace(
            hour=BILL_READY_HOUR
        )
        if now < ready:
            raise WechatPayAnswerError(400, "NO_STATEMENT_EXIST", "账单文件尚未生成，请于次日10点后再下载")
        content = self.bill_csv(merchant.mchid, bill_date, bill_type)
        if content is None:
            raise WechatPayAnswerError(400, "NO_STATEMENT_EXIST", "当日无交易，账单不存在")
        digest = hashlib.sha1(content, usedforsecurity=False).hexdigest()
        served = content + "`篡改\r\n".encode() if self.vendor_faults.tamper_bill else content
        if tar_type == "GZIP":
            served = gzip.compress(served, mtime=0)
        token = "".join(self.ctx.random.choices(_ALNUM + "-_", k=64))
        self._downloads[token] = _Download(
            mchid=merchant.mchid, content=served, expires_at=now + self.download_lifetime
        )
        return 200, {
            "hash_type": "SHA1",
            "hash_value": digest,
            "download_url": f"{base}/v3/billdownload/file?token={token}",
        }

    def bill_csv(self, mchid: str, bill_date: date, bill_type: str) -> bytes | None:
        """The day's trade bill (Beijing date): one row per payment and per refund, then the summary."""
        rows: list[tuple[datetime, list[str]]] = []
        orders_total = refund_total = paid_count = 0
        if bill_type in ("ALL", "SUCCESS"):
            for order in self._orders.values():
                if order.mchid != mchid or order.success_time is None:
                    continue
                if to_shanghai(order.success_time).date() != bill_date:
                    continue
                paid_count += 1
                orders_total += order.total_fen
                rows.append((order.success_time, self._bill_row(order, order.success_time, None)))
        if bill_type in ("ALL", "REFUND"):
            now = self.ctx.clock.now()
            for refund in self._refunds.values():
                if refund.mchid != mchid or refund.status(now) != "SUCCESS":
                    continue
                if to_shanghai(refund.settles_at).date() != bill_date:
                    continue
                order = self._orders[(refund.mchid, refund.out_trade_no)]
                paid_count += 1
                refund_total += refund.refund_fen
                rows.append((refund.settles_at, self._bill_row(order, refund.settles_at, refund)))
        if not rows:
            return None
        rows.sort(key=lambda item: item[0])
        summary = [
            str(paid_count),
            fen_to_yuan(orders_total),
            fen_to_yuan(refund_total),
            "0.00",
            "0.00000",
            fen_to_yuan(orders_total),
            fen_to_yuan(refund_total),
        ]
        lines = [
            _BILL_HEADER,
            *(",".join(row) for _, row in rows),
            _BILL_SUMMARY_HEADER,
            ",".join(f"`{v}" for v in summary),
        ]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def _bill_row(self, order: _Order, at: datetime, refund: _Refund | None) -> list[str]:
        values = [
            to_shanghai(at).strftime("%Y-%m-%d %H:%M:%S"),
            order.appid,
            order.mchid,
            "0",
            "",
            order.transaction_id or "",
            order.out_trade_no,
            order.payer_openid or "",
            order.trade_type,
            "REFUND" if refund is not None else "SUCCESS",
            order.bank_type or "OTHERS",
            "CNY",
            fen_to_yuan(order.total_fen) if refund is None else "0.00",
            "0.00",
            refund.refund_id if refund is not None else "0",
            refund.out_refund_no if refund is not None else "0",
            fen_to_yuan(refund.refund_fen) if refund is not None else "0.00",
            "0.00",
            "ORIGINAL" if refund is not None else "",
            "SUCCESS" if refund is not None else "",
            order.description,
            order.attach or "",
            "0.00000",
            "0.60%",
            fen_to_yuan(order.total_fen),
            fen_to_yuan(refund.refund_fen) if refund is not None else "0.00",
            "",
        ]
        return [f"`{value.replace(',', '，')}" for value in values]

    def download(self, merchant: SimulatedMerchant, token: str | None) -> _Answer:
        download = self._downloads.get(token or "")
        if download is None or download.mchid != merchant.mchid:
            raise WechatPayAnswerError(400, "INVALID_REQUEST", "下载链接无效")
        if self.ctx.clock.now() > download.expires_at:
            raise WechatPayAnswerError(400, "INVALID_REQUEST", "下载链接已过期，请重新申请账单")
        return 200, _Raw(download.content)

    # --- certificates ------------------------------------------------------------------------------------------

    def certificates_answer(self, merchant: SimulatedMerchant) -> _Answer:
        data: list[dict[str, object]] = []
        now = self.ctx.clock.now()
        for current in self.certificates:
            cert = current.certificate
            if cert.not_valid_after_utc < now:
                continue
            nonce = "".join(self.ctx.random.choices(_ALNUM, k=12))
            sealed = AESGCM(merchant.api_v3_key).encrypt(nonce.encode(), current.pem, b"certificate")
            data.append(
                {
                    "serial_no": current.serial_no,
                    "effective_time": _rfc3339(cert.not_valid_before_utc),
                    "expire_time": _rfc3339(cert.not_valid_after_utc),
                    "encrypt_certificate": {
                        "algorithm": AEAD_ALGORITHM,
                        "nonce": nonce,
                        "associated_data": "certificate",
                        "ciphertext": base64.b64encode(sealed).decode("ascii"),
                    },
                }
            )
        return 200, {"data": data}

    # --- notifications -----------------------------------------------------------------------------------------

    def _new_notification(
        self,
        event_type: str,
        merchant: SimulatedMerchant,
        url: str,
        out_trade_no: str,
        out_refund_no: str | None,
        now: datetime,
    ) -> _Notification:
        faults = self.order_faults.get(out_trade_no, NO_ORDER_FAULTS)
        notification = _Notification(
            notification_id=self._hex(24),
            event_id=f"EV-{self._beijing_stamp(now)}{self._digits(5)}",
            event_type=event_type,
            mchid=merchant.mchid,
            url=url,
            out_trade_no=out_trade_no,
            out_refund_no=out_refund_no,
            created_at=now,
            probe_pending=faults.signtest_probe or self.vendor_faults.signtest_probe,
        )
        self._notifications[notification.notification_id] = notification
        return notification

    def _envelope(
        self,
        notification: _Notification,
        merchant: SimulatedMerchant,
        original_type: str,
        summary: str,
        resource: Mapping[str, object],
    ) -> bytes:
        nonce = "".join(self.ctx.random.choices(_ALNUM, k=12))
        sealed = AESGCM(merchant.api_v3_key).encrypt(nonce.encode(), _json(resource), original_type.encode())
        return _json(
            {
                "id": notification.event_id,
                "create_time": _rfc3339(notification.created_at),
                "resource_type": "encrypt-resource",
                "event_type": notification.event_type,
                "summary": summary,
                "resource": {
                    "original_type": original_type,
                    "algorithm": AEAD_ALGORITHM,
                    "ciphertext": base64.b64encode(sealed).decode("ascii"),
                    "associated_data": original_type,
                    "nonce": nonce,
                },
            }
        )

    async def _queue(self, notification: _Notification, *, delay_seconds: float) -> None:
        """Queue the relay call with the retry schedule; per-order drop/duplicate/delay are applied by handing
        the dispatcher a plan that includes them for this one ``send`` (which decides them synchronously)."""
        base_url = self.relay_base_url or self._learned_base
        if base_url is None:
            raise RuntimeError("the WeChat Pay simulator does not know its own address: set relay_base_url")
        faults = self.order_faults.get(notification.out_trade_no, NO_ORDER_FAULTS)
        plan = self.ctx.faults
        callbacks = plan.callbacks
        adjusted = msgspec.structs.replace(
            callbacks,
            drop_rate=1.0 if faults.drop_notifications else callbacks.drop_rate,
            duplicate_rate=1.0 if faults.duplicate_notifications else callbacks.duplicate_rate,
            delay_seconds=callbacks.delay_seconds + faults.delay_notifications_seconds + delay_seconds,
        )
        if adjusted != callbacks:
            self.ctx.faults = msgspec.structs.replace(plan, callbacks=adjusted)
        try:
            notification.callback_id = await self.ctx.callbacks.send(
                f"{base_url}/test/relay/{notification.notification_id}",
                b"",
                {"content-type": "application/json"},
                retry_schedule=NOTIFY_RETRY_SCHEDULE,
            )
        finally:
            self.ctx.faults = plan
        self.ctx.recorder.record_message(
            NOTIFICATIONS,
            {
                "kind": "queued",
                "notificationId": notification.notification_id,
                "callbackId": notification.callback_id,
                "eventId": notification.event_id,
                "eventType": notification.event_type,
                "outTradeNo": notification.out_trade_no,
                "outRefundNo": notification.out_refund_no,
                "url": notification.url,
            },
        )

    async def relay(self, notification_id: str) -> tuple[int, dict[str, object]]:
        """One delivery attempt, signed now; (status for the dispatcher, its body)."""
        notification = self._notifications.get(notification_id)
        if notification is None:
            return 200, {"relayed": False, "reason": "unknown notification (the simulator was seeded)"}
        merchant = self.merchants[notification.mchid]
        if notification.body is None:
            refund = self._refunds[(notification.mchid, notification.out_refund_no or "")]
            summary = "退款异常" if refund.abnormal else "退款成功"
            notification.body = self._envelope(notification, merchant, "refund", summary, self._refund_resource(refund))
        probe = notification.probe_pending
        notification.probe_pending = False
        headers = self.signed_headers(merchant, notification.body, probe=probe)
        headers.update({"Content-Type": "application/json", "User-Agent": "Mozilla/4.0"})
        status: int | None = None
        error: str | None = None
        timeout = max(0.5, self.ctx.sandbox.callback_timeout * 0.8)
        try:
            async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
                response = await client.post(notification.url, content=notification.body, headers=headers)
            status = response.status_code
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = f"{type(exc).__name__}: {exc}"
        now = self.ctx.clock.now()
        notification.attempts.append(_Attempt(at=now, status=status, error=error, probe=probe))
        accepted = status is not None and 200 <= status < 300
        self.ctx.recorder.record_message(
            NOTIFICATIONS,
            {
                "kind": "probe" if probe else "attempt",
                "notificationId": notification.notification_id,
                "eventType": notification.event_type,
                "outTradeNo": notification.out_trade_no,
                "attempt": len(notification.attempts),
                "status": status,
                "error": error,
                "outcome": ("probe-accepted" if accepted else "probe-refused")
                if probe
                else ("delivered" if accepted else "failed"),
            },
        )
        if probe or not accepted:
            return 502, {"relayed": True, "receiverStatus": status, "probe": probe}
        return 200, {"relayed": True, "receiverStatus": status}

    def notification_summaries(self) -> list[dict[str, object]]:
        """Every notification with its attempts and the dispatcher's last word (``dropped`` ...)."""
        outcomes: dict[str, str] = {}
        for entry in self.ctx.recorder.entries(CALLBACKS):
            if isinstance(entry, CallbackRecord):
                outcomes[entry.callback_id] = entry.outcome
        summaries: list[dict[str, object]] = []
        for n in self._notifications.values():
            summaries.append(
                {
                    "notificationId": n.notification_id,
                    "eventId": n.event_id,
                    "eventType": n.event_type,
                    "mchid": n.mchid,
                    "outTradeNo": n.out_trade_no,
                    "outRefundNo": n.out_refund_no,
                    "url": n.url,
                    "callbackId": n.callback_id,
                    "dispatcherOutcome": outcomes.get(n.callback_id or ""),
                    "delivered": n.delivered,
                    "attempts": [
                        {"at": a.at.isoformat(), "status": a.status, "error": a.error, "probe": a.probe}
                        for a in n.attempts
                    ],
                }
            )
        return summaries


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --- body helpers ----------------------------------------------------------------------------------------------


def _object_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise WechatPayAnswerError(400, "PARAM_ERROR", "参数错误：请求体须为JSON对象")
    return data


def _string(data: Mapping[str, Any], key: str, low: int, high: int, *, path: str | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise param_error(path or f"/{key}", f"必填，长度{low}到{high}的字符串")
    return value


def _optional_string(data: Mapping[str, Any], key: str, high: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= high:
        raise param_error(f"/{key}", f"长度须为1到{high}")
    return value


def _optional_time(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise param_error(f"/{key}", "须为RFC3339格式，如2018-06-08T10:34:56+08:00")
    return parsed


def _sub_object(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise param_error(f"/{key}", "必填")
    return value


# --- vendor routes -------------------------------------------------------------------------------------------------


@get("/v3/certificates")
async def certificates(
    request: Request[Any, Any, Any], simulator: NamedDependency[WechatPaySimulator]
) -> Response[bytes]:
    async def operation(merchant: SimulatedMerchant, body: bytes) -> _Answer:
        return simulator.certificates_answer(merchant)

    return await simulator.serve(request, operation)


@post("/v3/pay/transactions/jsapi", status_code=200)
async def jsapi_prepay(
    request: Request[Any, Any, Any], simulator: NamedDependency[WechatPaySimulator]
) -> Response[bytes]:
    async def operation(merchant: SimulatedMerchant, body: bytes) -> _Answer:
        return simulator.prepay(merchant, body, "JSAPI")

    return await simulator.serve(request, operation)


@post("/v3/pay/transactions/app", status_code=200)
async def app_prepay(
    request: Request[Any, Any, Any], simulator: NamedDependency[WechatPaySimulator]
) -> Response[bytes]:
    async def operation(merchant: SimulatedMerchant, body: bytes) -> _Answer:
        return simulator.prepay(merchant, body, "APP")

    return await simulator.serve(request, operation)


@get("/v3/pay/transactions/out-trade-no/{out_trade_no:str}")
async def query_by_out_trade_no(
    out_trade_no: FromPath[str], request: Request[Any, Any, Any], simulator: NamedDependency[WechatPaySimulator]
) -> Response[bytes]:
    async def operation(merchant: SimulatedMerchant, body: bytes) -> _Answer:
        return simulator.query(merchant, request.query_params.get("mchid"), out_trade_no=out_trade_no)

    return await simulator.serve(request, operation)


@get("/v3/pay/transactions/id/{transaction_id:str}")
async def query_by_transaction_id(
    transaction_id: FromPath[str], request: Request[Any, Any, Any], simulator: NamedDependency[WechatPaySimulator]
) -> Response[bytes]:
    async def operation(merchant: SimulatedMerchant, body: bytes) -> _Answer:
        return simulator.query(merchant, request.query_params.get("mchid"), transaction_id=transaction_id)

    return await simulator.serve(request, operation)


@post("/v3/pay/transactions/out-trade-no/{out_trade_no:str}/close", status_code=200)
async def close_order(
    out_trade_no: FromPath[str], request: Request[Any, Any, Any], simulator: NamedDependency[WechatPaySimulator]
) -> Response[bytes]:
    async def operation(merchant: SimulatedMerchant, body: bytes) -> _Answer:
        return simulator.close(merchant, out_trade_no, body)

    return await simulator.serve(request, operation)


@post("/v3/refund/domestic/refunds", status_code=200)
async def create_refund(
    request: Request[Any, Any, Any], simulator: NamedDependency[WechatPaySimulator]
) -> Response[bytes]:
    async def operation(merchant: SimulatedMerchant, body: bytes) -> _Answer:
        return await simulator.refund(merchant, body)

    return await simulator.serve(request, operation)


@get("/v3/refund/domestic/refunds/{out_refund_no:str}")
async def query_refund(
    out_refund_no: FromPath[str], request: Request[Any, Any, Any], simulator: NamedDependency[WechatPaySimulator]
) -> Response[bytes]:
    async def operation(merchant: SimulatedMerchant, body: bytes) -> _Answer:
        return simulator.query_refund(merchant, out_refund_no)

    return await simulator.serve(request, operation)


@get("/v3/bill/tradebill")
async def trade_bill(
    request: Request[Any, Any, Any], simulator: NamedDependency[WechatPaySimulator]
) -> Response[bytes]:
    async def operation(merchant: SimulatedMerchant, body: bytes) -> _Answer:
        base = simulator.learn_base(request)
        return simulator.trade_bill(merchant, dict(request.query_params), base)

    return await simulator.serve(request, operation)


@get("/v3/billdownload/file")
async def download_bill(
    request: Request[Any, Any, Any], simulator: NamedDependency[WechatPaySimulator]
) -> Response[bytes]:
    async def operation(merchant: SimulatedMerchant, body: bytes) -> _Answer:
        return simulator.download(merchant, request.query_params.get("token"))

    return await simulator.serve(request, operation)


_vendor_routes: list[ControllerRouterHandler] = [
    certificates,
    jsapi_prepay,
    app_prepay,
    query_by_out_trade_no,
    query_by_transaction_id,
    close_order,
    create_refund,
    query_refund,
    trade_bill,
    download_bill,
]


# --- test helpers --------------------------------------------------------------------------------------------------


class PayIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    prepay_id: str
    bank_type: str = "OTHERS"
    openid: str | None = None
    """APP payments only: the payer's openid under the app (a fresh one when absent)."""


class PayOut(msgspec.Struct, rename="camel", kw_only=True):
    out_trade_no: str
    transaction_id: str
    trade_state: str
    success_time: datetime


class MerchantIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    public_key_pem: str | None = None
    """Required to register a new merchant."""
    serial_no: str | None = None
    api_v3_key: str | None = None
    mode: MerchantMode | None = None
    appids: list[str] | None = None


class MerchantOut(msgspec.Struct, rename="camel", kw_only=True):
    mchid: str
    serial_no: str
    mode: MerchantMode
    appids: list[str] | None


class PlatformOut(msgspec.Struct, rename="camel", kw_only=True):
    certificate_serial: str
    certificate_pem: str
    certificate_public_key_pem: str
    public_key_id: str
    public_key_pem: str


def _refused(refusal: WechatPayAnswerError) -> Response[bytes]:
    return Response(_json(refusal.payload()), status_code=refusal.status, media_type="application/json")


@post("/test/pay", status_code=200)
async def test_pay(
    data: JSONBody[PayIn], request: Request[Any, Any, Any], simulator: NamedDependency[WechatPaySimulator]
) -> Response[bytes]:
    """The resident completes ``wx.requestPayment`` (or the APP pay sheet) for ``prepayId``."""
    simulator.learn_base(request)
    try:
        order = await simulator.pay(data.prepay_id, bank_type=data.bank_type, openid=data.openid)
    except LookupError:
        raise NotFoundException(f"no prepay {data.prepay_id!r}") from None
    except WechatPayAnswerError as refusal:
        return _refused(refusal)
    assert order.transaction_id is not None
    assert order.success_time is not None
    out = PayOut(
        out_trade_no=order.out_trade_no,
        transaction_id=order.transaction_id,
        trade_state=order.trade_state,
        success_time=order.success_time,
    )
    return Response(msgspec.json.encode(out), media_type="application/json")


@put("/test/merchants/{mchid:str}", status_code=200)
async def configure_merchant(
    mchid: FromPath[str], data: JSONBody[MerchantIn], simulator: NamedDependency[WechatPaySimulator]
) -> MerchantOut:
    """Register a merchant or change its key, serial, APIv3 key, mode (``certificate``/``public_key``), app ids."""
    existing = simulator.merchants.get(mchid)
    if existing is None and (data.public_key_pem is None or data.serial_no is None or data.api_v3_key is None):
        raise NotFoundException(f"no merchant {mchid!r}: give publicKeyPem, serialNo and apiV3Key")
    try:
        if existing is None:
            assert data.public_key_pem is not None
            assert data.serial_no is not None
            assert data.api_v3_key is not None
            merchant = simulator.register_merchant(
                mchid,
                public_key_pem=data.public_key_pem.encode("ascii"),
                serial_no=data.serial_no,
                api_v3_key=data.api_v3_key.encode("utf-8"),
                mode=data.mode or "certificate",
                appids=data.appids,
            )
        else:
            merchant = simulator.register_merchant(
                mchid,
                public_key_pem=data.public_key_pem.encode("ascii") if data.public_key_pem else existing.public_key_pem,
                serial_no=data.serial_no or existing.serial_no,
                api_v3_key=data.api_v3_key.encode("utf-8") if data.api_v3_key else existing.api_v3_key,
                mode=data.mode or existing.mode,
                appids=data.appids if data.appids is not None else existing.appids,
            )
    except ValueError as exc:
        raise ValidationException(str(exc)) from None
    return MerchantOut(
        mchid=merchant.mchid,
        serial_no=merchant.serial_no,
        mode=merchant.mode,
        appids=sorted(merchant.appids) if merchant.appids is not None else None,
    )


def _platform_out(simulator: WechatPaySimulator) -> PlatformOut:
    current = simulator.certificate
    return PlatformOut(
        certificate_serial=current.serial_no,
        certificate_pem=current.pem.decode("ascii"),
        certificate_public_key_pem=_public_pem(current.private_key.public_key()).decode("ascii"),
        public_key_id=simulator.public_key_id,
        public_key_pem=simulator.public_key_mode_pem.decode("ascii"),
    )


@get("/test/platform")
async def read_platform(simulator: NamedDependency[WechatPaySimulator]) -> PlatformOut:
    """The current platform certificate and the ``PUB_KEY_ID_`` public key clients are configured with."""
    return _platform_out(simulator)


@post("/test/rotate-certificate", status_code=200)
async def rotate_certificate(simulator: NamedDependency[WechatPaySimulator]) -> PlatformOut:
    """A new platform certificate signs from now on; the previous ones stay listed."""
    simulator.rotate_certificate()
    return _platform_out(simulator)


@get("/test/faults")
async def read_vendor_faults(simulator: NamedDependency[WechatPaySimulator]) -> WechatPayFaults:
    return simulator.vendor_faults


@put("/test/faults")
async def replace_vendor_faults(
    data: JSONBody[WechatPayFaults], simulator: NamedDependency[WechatPaySimulator]
) -> WechatPayFaults:
    simulator.set_vendor_faults(data)
    return data


@delete("/test/faults")
async def clear_vendor_faults(simulator: NamedDependency[WechatPaySimulator]) -> None:
    """Clear the global vendor faults and every per-order fault."""
    simulator.set_vendor_faults(NO_VENDOR_FAULTS)
    simulator.order_faults.clear()


@put("/test/orders/{out_trade_no:str}/faults")
async def replace_order_faults(
    out_trade_no: FromPath[str], data: JSONBody[OrderFaults], simulator: NamedDependency[WechatPaySimulator]
) -> OrderFaults:
    simulator.order_faults[out_trade_no] = data
    return data


@get("/test/notifications")
async def read_notifications(simulator: NamedDependency[WechatPaySimulator]) -> Response[bytes]:
    return Response(_json(simulator.notification_summaries()), media_type="application/json")


@post("/test/relay/{notification_id:str}", status_code=200)
async def relay_notification(
    notification_id: FromPath[str], simulator: NamedDependency[WechatPaySimulator]
) -> Response[bytes]:
    """Internal: the dispatcher's hop for one delivery attempt (signed at this moment)."""
    status, payload = await simulator.relay(notification_id)
    return Response(_json(payload), status_code=status, media_type="application/json")


_helper_routes: list[ControllerRouterHandler] = [
    test_pay,
    configure_merchant,
    read_platform,
    rotate_certificate,
    read_vendor_faults,
    replace_vendor_faults,
    clear_vendor_faults,
    replace_order_faults,
    read_notifications,
    relay_notification,
]
