"""Our own WeChat Pay API v3 client (protocols §2, §8 item 2; DESIGN D9): signing, verification, AEAD, and an
async client for the mini-program (JSAPI) and APP payments, query, close, refunds and the trade bill.

The pure functions (no clock reads, no I/O) follow the protocol exactly:

* requests are signed over ``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`` with the merchant API key
  (SHA256withRSA, PKCS#1 v1.5, Base64) and carry ``Authorization: WECHATPAY2-SHA256-RSA2048 mchid=...``;
* answers and notifications are verified over ``TIMESTAMP\\nNONCE\\nBODY\\n`` (raw body bytes) with the
  platform key named by ``Wechatpay-Serial``: a platform certificate serial (certificate mode, keys downloaded
  from ``GET /v3/certificates``) or a ``PUB_KEY_ID_...`` (public-key mode);
* signature probes (``WECHATPAY/SIGNTEST/...``), timestamps more than 300 s away from our clock, unknown
  serials and bad signatures are refused, each with its own error code;
* encrypted resources (notifications, certificates) are AEAD_AES_256_GCM under the APIv3 key.

``WechatPayClient`` trusts an answer only once its signature is checked; the bill file is the one unsigned
answer, checked by its SHA1 instead. Openids never appear in exception messages or logs, and
``WechatPayTransaction.payer_openid`` is left out of ``repr``. Money is integer fen throughout.

The APIv3 key length (32 bytes) is checked where settings are loaded, not here: ``decrypt_resource`` takes any
key AES-GCM accepts (the wechatpay-go vector uses a 16-byte key).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import hmac
import json
import logging
import re
import secrets
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, NoReturn
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.kernel.clock import SHANGHAI, Clock, ensure_utc, to_shanghai
from domain.kernel.errors import AuthenticationError, ConflictError, UpstreamError, ValidationError
from domain.kernel.money import yuan_to_fen
from integrations.resilience import Failure

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://api.mch.weixin.qq.com"
AUTH_SCHEMA: Final = "WECHATPAY2-SHA256-RSA2048"
SIGNTEST_PREFIX: Final = "WECHATPAY/SIGNTEST/"
PUBLIC_KEY_ID_PREFIX: Final = "PUB_KEY_ID_"
AEAD_ALGORITHM: Final = "AEAD_AES_256_GCM"
ENCRYPT_RESOURCE: Final = "encrypt-resource"
WINDOW_SECONDS: Final = 300
"""|now - Wechatpay-Timestamp| beyond this is stale (the official SDKs' ``FiveMinute``)."""

HEADER_TIMESTAMP: Final = "wechatpay-timestamp"
HEADER_NONCE: Final = "wechatpay-nonce"
HEADER_SIGNATURE: Final = "wechatpay-signature"
HEADER_SERIAL: Final = "wechatpay-serial"
HEADER_SIGNATURE_TYPE: Final = "wechatpay-signature-type"
HEADER_REQUEST_ID: Final = "request-id"

# trade_state (protocols §2.4)
SUCCESS: Final = "SUCCESS"
REFUND: Final = "REFUND"
NOTPAY: Final = "NOTPAY"
CLOSED: Final = "CLOSED"
REVOKED: Final = "REVOKED"
USERPAYING: Final = "USERPAYING"
PAYERROR: Final = "PAYERROR"
PAID_STATES: Final = frozenset({SUCCESS, REFUND})
"""The money was taken (a refund may have followed)."""

# refund status (protocols §2.6)
REFUND_SUCCESS: Final = "SUCCESS"
REFUND_CLOSED: Final = "CLOSED"
REFUND_PROCESSING: Final = "PROCESSING"
REFUND_ABNORMAL: Final = "ABNORMAL"

MISCONFIGURED_CODES: Final = frozenset({"SIGN_ERROR", "NO_AUTH", "APPID_MCHID_NOT_MATCH", "MCH_NOT_EXISTS"})
"""WeChat Pay refused our request itself: our keys, serial or merchant set-up are wrong."""
PARAM_ERROR: Final = "PARAM_ERROR"

_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
_OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
_TRANSACTION_ID = re.compile(r"[0-9A-Za-z]{1,32}")
_PREPAY_ID = re.compile(r"[0-9A-Za-z_\-]{1,64}")
_TIMESTAMP = re.compile(r"\d{1,12}")
_GZIP_MAGIC: Final = b"\x1f\x8b"
_BILL_LIMIT: Final = 256 * 1024 * 1024
"""The most a gunzipped bill may hold (a bomb guard)."""


# --- errors ------------------------------------------------------------------------------------------------------


class WechatPayDecryptError(ValidationError):
    """An AEAD_AES_256_GCM resource that does not decrypt: wrong APIv3 key, or tampered (bad tag)."""

    code = "wechatpay.decrypt_failed"
    message = "微信支付通知解密失败"


class WechatPayNotificationError(AuthenticationError):
    """A notification (or answer) whose signature we refuse; answer the notification with a 4xx."""

    code = "wechatpay.bad_signature"
    message = "微信支付通知签名校验失败"


class WechatPaySignatureProbeError(WechatPayNotificationError):
    """``Wechatpay-Signature`` starts with ``WECHATPAY/SIGNTEST/``: WeChat checks that we verify. Never process."""

    code = "wechatpay.signature_probe"


class WechatPayUnknownSerialError(WechatPayNotificationError):
    """``Wechatpay-Serial`` names no platform certificate or public key we know."""

    code = "wechatpay.unknown_serial"

    def __init__(self, detail: str | None = None, *, serial: str = "") -> None:
        super().__init__(detail, extra={"serial": serial[:64]})
        self.serial = serial


class WechatPayStaleError(WechatPayNotificationError):
    """``Wechatpay-Timestamp`` is more than the window (300 s) away from our clock: a replay or a bad clock."""

    code = "wechatpay.stale"


class WechatPayBadSignatureError(WechatPayNotificationError):
    """Missing signature headers, or a signature that does not verify."""

    code = "wechatpay.bad_signature"


class WechatPayBadNotificationError(ValidationError):
    """A verified notification that is not the documented envelope (JSON, ``encrypt-resource``, AEAD)."""

    code = "wechatpay.bad_notification"
    message = "微信支付通知格式有误"


class WechatPayUnavailableError(UpstreamError):
    """WeChat Pay could not be reached, timed out, or answered 5xx / 429: retry the same request later
    (``SYSTEM_ERROR``/``BANK_ERROR`` ask for a retry with the same parameters)."""

    code = "wechatpay.unavailable"
    message = "微信支付暂时不可用，请稍后再试"

    def __init__(
        self,
        detail: str | None = None,
        *,
        failure: Failure,
        vendor_code: str | None = None,
        http_status: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(
            detail,
            retry_after=retry_after,
            extra={"failure": failure.value, "vendor_code": vendor_code, "http_status": http_status},
        )
        self.vendor_code = vendor_code
        self.http_status = http_status

    @property
    def retryable(self) -> bool:
        return True


class WechatPayBadResponseError(UpstreamError):
    """An answer we do not trust or understand: unsigned, forged, stale, signed by an unknown key, a bill whose
    SHA1 differs, or a body that breaks the protocol. Not retryable as such."""

    code = "wechatpay.bad_response"
    message = "微信支付暂时不可用，请稍后再试"

    def __init__(self, detail: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(detail, extra={"failure": Failure.BAD_RESPONSE.value, "reason": reason})
        self.reason = reason


class WechatPayMisconfiguredError(UpstreamError):
    """WeChat Pay refused the request itself (``SIGN_ERROR``, ``NO_AUTH`` ...): our keys or set-up are wrong."""

    code = "wechatpay.misconfigured"
    message = "微信支付暂时不可用，请稍后再试"

    def __init__(self, detail: str | None = None, *, vendor_code: str, http_status: int) -> None:
        super().__init__(
            detail,
            extra={"failure": Failure.BAD_RESPONSE.value, "vendor_code": vendor_code, "http_status": http_status},
        )
        self.vendor_code = vendor_code
        self.http_status = http_status


_REJECTION_MESSAGES: Final[Mapping[str, str]] = {
    "ORDERPAID": "订单已支付，请勿重复支付",
    "ORDER_CLOSED": "订单已关闭，请重新下单",
    "ORDER_NOT_EXIST": "订单不存在",
    "RESOURCE_NOT_EXISTS": "记录不存在",
    "OUT_TRADE_NO_USED": "订单号重复，请重新下单",
    "NOT_ENOUGH": "商户账户余额不足，暂时无法退款，请稍后再试",
    "USER_ACCOUNT_ABNORMAL": "用户账户异常，无法原路退款",
    "NO_STATEMENT_EXIST": "账单不存在",
}


class WechatPayRejectedError(ConflictError):
    """A business refusal (4xx): ``ORDER_NOT_EXIST``, ``ORDERPAID``, ``ORDER_CLOSED``, ``NOT_ENOUGH``,
    ``INVALID_REQUEST`` (over-refund ...). ``vendor_code`` is WeChat's code; ``vendor_message`` its text (kept
    out of the exception string: it may echo request values)."""

    code = "wechatpay.rejected"
    message = "微信支付拒绝了该请求"

    def __init__(
        self, detail: str | None = None, *, vendor_code: str, http_status: int, vendor_message: str | None = None
    ) -> None:
        super().__init__(
            detail,
            message=_REJECTION_MESSAGES.get(vendor_code),
            extra={"vendor_code": vendor_code, "http_status": http_status},
        )
        self.vendor_code = vendor_code
        self.http_status = http_status
        self.vendor_message = vendor_message


class WechatPayParamError(ValidationError):
    """``PARAM_ERROR``: WeChat Pay found a parameter malformed (a bug on our side, or bad input passed on)."""

    code = "wechatpay.rejected"
    message = "支付参数有误"

    def __init__(
        self, detail: str | None = None, *, vendor_code: str, http_status: int, vendor_message: str | None = None
    ) -> None:
        super().__init__(detail, extra={"vendor_code": vendor_code, "http_status": http_status})
        self.vendor_code = vendor_code
        self.http_status = http_status
        self.vendor_message = vendor_message


# --- keys --------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def load_private_key(private_key_pem: bytes) -> rsa.RSAPrivateKey:
    """The merchant API key (``apiclient_key.pem``, PKCS#8; PKCS#1 accepted too)."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("WeChat Pay keys are RSA")
    return key


@lru_cache(maxsize=64)
def load_public_key(public_key_pem: bytes) -> rsa.RSAPublicKey:
    """A platform public key from SPKI PEM (public-key mode), PKCS#1 PEM, or an X.509 certificate PEM."""
    text = public_key_pem.strip()
    if text.startswith(b"-----BEGIN CERTIFICATE-----"):
        key: Any = x509.load_pem_x509_certificate(text).public_key()
    else:
        key = serialization.load_pem_public_key(text)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("WeChat Pay keys are RSA")
    return key


def public_key_pem_of(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


_HEX = re.compile(r"[0-9A-Fa-f]{1,128}")


def normalize_serial(serial: str) -> str:
    """Certificate serials compare as numbers (upper-case hex, no leading zeros); ``PUB_KEY_ID_...`` ids and
    anything else as given."""
    serial = serial.strip()
    if _HEX.fullmatch(serial):
        return format(int(serial, 16), "X")
    return serial


def certificate_serial(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "X")


# --- messages and signatures ---------------------------------------------------------------------------------------


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def request_message(
    method: str, url_path_with_query: str, timestamp: str | int, nonce: str, body: bytes | str
) -> bytes:
    """``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`` (protocols §2.1): URL is the path and query exactly as sent,
    BODY the exact bytes sent (empty for GET)."""
    head = f"{method.upper()}\n{url_path_with_query}\n{timestamp}\n{nonce}\n".encode()
    return head + _bytes(body) + b"\n"


def response_message(timestamp: str | int, nonce: str, body: bytes | str) -> bytes:
    """``TIMESTAMP\\nNONCE\\nBODY\\n`` (protocols §2.2), for answers and notifications; an empty body (204)
    leaves just the final ``\\n``."""
    return f"{timestamp}\n{nonce}\n".encode() + _bytes(body) + b"\n"


def sign_message(private_key_pem: bytes, message: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5) over ``message`` with the merchant private key, Base64."""
    signature = load_private_key(private_key_pem).sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify_signature(public_key_pem: bytes, *, timestamp: str, nonce: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is WeChat Pay's over ``timestamp\\nnonce\\nbody\\n``. False on any failure (bad
    Base64, an unusable key, a mismatch), and for ``WECHATPAY/SIGNTEST/`` probes whatever follows."""
    if not signature or signature.startswith(SIGNTEST_PREFIX):
        return False
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
        if not raw:
            return False
        key = load_public_key(public_key_pem)
        key.verify(raw, response_message(timestamp, nonce, body), padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, ValueError, TypeError, UnsupportedAlgorithm, InvalidSignature):
        return False
    return True


def authorization_header(
    *,
    mchid: str,
    serial_no: str,
    private_key_pem: bytes,
    method: str,
    url_path_with_query: str,
    timestamp: str | int,
    nonce: str,
    body: bytes | str,
) -> str:
    """``Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",
    serial_no="…"`` (the documented order; WeChat ignores the order)."""
    signature = sign_message(private_key_pem, request_message(method, url_path_with_query, timestamp, nonce, body))
    return (
        f'{AUTH_SCHEMA} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{serial_no}"'
    )


def pay_sign(private_key_pem: bytes, *, app_id: str, timestamp: str, nonce: str, package: str) -> str:
    """``paySign`` of ``wx.requestPayment`` (protocols §2.3): SHA256withRSA over
    ``appId\\ntimeStamp\\nnonceStr\\npackage\\n`` with the merchant key; ``signType`` is not signed."""
    return sign_message(private_key_pem, f"{app_id}\n{timestamp}\n{nonce}\n{package}\n".encode())


def app_pay_sign(private_key_pem: bytes, *, app_id: str, timestamp: str, nonce: str, prepay_id: str) -> str:
    """``sign`` of the APP ``PayReq``: SHA256withRSA over ``appid\\ntimestamp\\nnoncestr\\nprepayid\\n``."""
    return sign_message(private_key_pem, f"{app_id}\n{timestamp}\n{nonce}\n{prepay_id}\n".encode())


# --- AEAD ----------------------------------------------------------------------------------------------------------


def decrypt_resource(api_v3_key: bytes, *, nonce: str, associated_data: str, ciphertext: str) -> bytes:
    """AEAD_AES_256_GCM: key = the APIv3 key, nonce and AAD as UTF-8, ciphertext = Base64(ct || 16-byte tag).

    A bad tag or bad Base64 raises ``WechatPayDecryptError``. The key length is not checked here (settings
    check it); a key AES cannot take at all raises ``ValueError`` from ``cryptography``.
    """
    aead = AESGCM(api_v3_key)
    try:
        data = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise WechatPayDecryptError("encrypted resource: bad base64") from None
    try:
        return aead.decrypt(nonce.encode("utf-8"), data, associated_data.encode("utf-8"))
    except InvalidTag:
        raise WechatPayDecryptError("encrypted resource: the tag does not verify (wrong APIv3 key?)") from None
    except ValueError as exc:  # a nonce AES-GCM cannot take
        raise WechatPayDecryptError(f"encrypted resource: {exc}") from None


def encrypt_resource(api_v3_key: bytes, *, nonce: str, associated_data: str, plaintext: bytes) -> str:
    """The inverse of ``decrypt_resource`` (for tests and tools): Base64(ct || tag)."""
    sealed = AESGCM(api_v3_key).encrypt(nonce.encode("utf-8"), plaintext, associated_data.encode("utf-8"))
    return base64.b64encode(sealed).decode("ascii")


# --- verification of signed messages -----------------------------------------------------------------------------


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def verify_signed_headers(
    headers: Mapping[str, str],
    body: bytes,
    *,
    keys: Mapping[str, bytes],
    now: datetime,
    window_seconds: int = WINDOW_SECONDS,
) -> str:
    """Check the ``Wechatpay-*`` signature of an answer or a notification; returns the serial it was signed with.

    In order: the headers are present; a ``WECHATPAY/SIGNTEST/`` probe is refused
    (``WechatPaySignatureProbeError``); the timestamp is within ``window_seconds`` of ``now``
    (``WechatPayStaleError``); the serial is in ``keys`` (serial -> public key or certificate PEM;
    ``WechatPayUnknownSerialError``); the signature verifies (``WechatPayBadSignatureError``).
    """
    lowered = _lower(headers)
    signature = lowered.get(HEADER_SIGNATURE, "").strip()
    timestamp = lowered.get(HEADER_TIMESTAMP, "").strip()
    nonce = lowered.get(HEADER_NONCE, "").strip()
    serial = lowered.get(HEADER_SERIAL, "").strip()
    if signature.startswith(SIGNTEST_PREFIX):
        raise WechatPaySignatureProbeError("a WECHATPAY/SIGNTEST/ signature probe")
    if not signature or not timestamp or not nonce or not serial:
        raise WechatPayBadSignatureError("missing Wechatpay-Signature, -Timestamp, -Nonce or -Serial")
    signature_type = lowered.get(HEADER_SIGNATURE_TYPE)
    if signature_type is not None and signature_type.strip() != AUTH_SCHEMA:
        raise WechatPayBadSignatureError(f"unsupported Wechatpay-Signature-Type {signature_type[:40]!r}")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise WechatPayBadSignatureError("Wechatpay-Timestamp is not a number of seconds")
    skew = abs(ensure_utc(now).timestamp() - int(timestamp))
    if skew > window_seconds:
        raise WechatPayStaleError(f"Wechatpay-Timestamp is {skew:.0f} s away from our clock")
    wanted = normalize_serial(serial)
    key = next((pem for name, pem in keys.items() if normalize_serial(name) == wanted), None)
    if key is None:
        raise WechatPayUnknownSerialError(f"unknown Wechatpay-Serial {serial[:64]!r}", serial=wanted)
    if not verify_signature(key, timestamp=timestamp, nonce=nonce, body=body, signature=signature):
        raise WechatPayBadSignatureError("the signature does not verify")
    return wanted


def decrypt_notification(envelope: Mapping[str, Any], api_v3_key: bytes) -> dict[str, Any]:
    """The notification envelope with ``resource`` replaced by its decrypted JSON object (as wechatpayv3's
    ``callback`` returns it)."""
    if envelope.get("resource_type") != ENCRYPT_RESOURCE:
        raise WechatPayBadNotificationError("resource_type is not encrypt-resource")
    resource = envelope.get("resource")
    if not isinstance(resource, Mapping):
        raise WechatPayBadNotificationError("no resource object")
    if resource.get("algorithm") != AEAD_ALGORITHM:
        raise WechatPayBadNotificationError("resource.algorithm is not AEAD_AES_256_GCM")
    nonce, ciphertext, aad = resource.get("nonce"), resource.get("ciphertext"), resource.get("associated_data")
    if not isinstance(nonce, str) or not nonce or not isinstance(ciphertext, str) or not ciphertext:
        raise WechatPayBadNotificationError("resource without nonce or ciphertext")
    if aad is None:
        aad = ""
    if not isinstance(aad, str):
        raise WechatPayBadNotificationError("resource.associated_data is not a string")
    plain = decrypt_resource(api_v3_key, nonce=nonce, associated_data=aad, ciphertext=ciphertext)
    try:
        decoded = json.loads(plain)
    except ValueError:
        raise WechatPayBadNotificationError("the decrypted resource is not JSON") from None
    if not isinstance(decoded, dict):
        raise WechatPayBadNotificationError("the decrypted resource is not a JSON object")
    event = dict(envelope)
    event["resource"] = decoded
    return event


def verify_notification(
    headers: Mapping[str, str],
    body: bytes,
    *,
    keys: Mapping[str, bytes],
    now: datetime,
    api_v3_key: bytes,
    window_seconds: int = WINDOW_SECONDS,
) -> dict[str, Any]:
    """Verify a payment or refund notification (protocols §2.2, §2.5, §2.6), then decrypt it.

    Refuses probes (``wechatpay.signature_probe``), stale timestamps (``wechatpay.stale``), unknown serials
    (``wechatpay.unknown_serial``) and bad signatures (``wechatpay.bad_signature``) before looking at the body;
    then ``wechatpay.bad_notification`` / ``wechatpay.decrypt_failed``. Returns the envelope (``id``,
    ``event_type``, ``create_time``, ``summary`` ...) whose ``resource`` is the decrypted object. Answer any
    error with a 4xx: WeChat retries.
    """
    verify_signed_headers(headers, body, keys=keys, now=now, window_seconds=window_seconds)
    try:
        envelope = json.loads(body)
    except ValueError:
        raise WechatPayBadNotificationError("the notification is not JSON") from None
    if not isinstance(envelope, dict):
        raise WechatPayBadNotificationError("the notification is not a JSON object")
    return decrypt_notification(envelope, api_v3_key)


# --- typed answers -------------------------------------------------------------------------------------------------


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 time (``2018-06-08T10:34:56+08:00``) as aware UTC; None when absent or empty."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise WechatPayBadResponseError("a time is not a string", reason="malformed")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise WechatPayBadResponseError(f"bad time {text[:40]!r}", reason="malformed") from None
    if parsed.tzinfo is None:
        raise WechatPayBadResponseError("a time without an offset", reason="malformed")
    return ensure_utc(parsed)


def format_time(instant: datetime) -> str:
    """An aware instant as WeChat Pay writes times: RFC 3339, Beijing time, ``+08:00``."""
    return to_shanghai(instant).isoformat(timespec="seconds")


def _text(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise WechatPayBadResponseError(f"answer without {key}", reason="malformed")
        return None
    if not isinstance(value, str):
        raise WechatPayBadResponseError(f"{key} is not a string", reason="malformed")
    return value


def _required(data: Mapping[str, Any], key: str) -> str:
    value = _text(data, key, required=True)
    assert value is not None
    return value


def _fen(data: Mapping[str, Any], key: str, *, required: bool = False) -> int | None:
    value = data.get(key)
    if value is None:
        if required:
            raise WechatPayBadResponseError(f"amount without {key}", reason="malformed")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WechatPayBadResponseError(f"{key} is not a number of fen", reason="malformed")
    return value


def _object(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise WechatPayBadResponseError(f"{key} is not an object", reason="malformed")
    return value


@dataclass(frozen=True, slots=True)
class WechatPayTransaction:
    """A payment as query answers and ``TRANSACTION.SUCCESS`` notifications describe it (amounts in fen)."""

    appid: str
    mchid: str
    out_trade_no: str
    trade_state: str
    trade_state_desc: str
    total_fen: int
    currency: str
    transaction_id: str | None = None
    trade_type: str | None = None
    bank_type: str | None = None
    attach: str | None = None
    success_time: datetime | None = None
    payer_total_fen: int | None = None
    payer_currency: str | None = None
    payer_openid: str | None = field(default=None, repr=False)

    @property
    def paid(self) -> bool:
        return self.trade_state in PAID_STATES


@dataclass(frozen=True, slots=True)
class WechatPayRefund:
    """A refund as the refund answers and ``REFUND.*`` notifications describe it (amounts in fen)."""

    out_refund_no: str
    refund_id: str
    out_trade_no: str
    transaction_id: str
    status: str
    refund_fen: int
    total_fen: int
    currency: str = "CNY"
    payer_total_fen: int | None = None
    payer_refund_fen: int | None = None
    channel: str | None = None
    funds_account: str | None = None
    create_time: datetime | None = None
    success_time: datetime | None = None
    user_received_account: str | None = field(default=None, repr=False)


def parse_transaction(data: Mapping[str, Any]) -> WechatPayTransaction:
    """A query answer or a decrypted ``transaction`` resource; ``WechatPayBadResponseError`` when malformed."""
    amount = _object(data, "amount")
    payer = _object(data, "payer")
    total = _fen(amount, "total", required=True)
    assert total is not None
    return WechatPayTransaction(
        appid=_required(data, "appid"),
        mchid=_required(data, "mchid"),
        out_trade_no=_required(data, "out_trade_no"),
        trade_state=_required(data, "trade_state"),
        trade_state_desc=_text(data, "trade_state_desc") or "",
        total_fen=total,
        currency=_text(amount, "currency") or "CNY",
        transaction_id=_text(data, "transaction_id"),
        trade_type=_text(data, "trade_type"),
        bank_type=_text(data, "bank_type"),
        attach=_text(data, "attach"),
        success_time=parse_time(data.get("success_time")),
        payer_total_fen=_fen(amount, "payer_total"),
        payer_currency=_text(amount, "payer_currency"),
        payer_openid=_text(payer, "openid"),
    )


def parse_refund(data: Mapping[str, Any]) -> WechatPayRefund:
    """A refund answer or a decrypted ``refund`` resource (``status`` there is ``refund_status``)."""
    amount = _object(data, "amount")
    refund = _fen(amount, "refund", required=True)
    total = _fen(amount, "total", required=True)
    assert refund is not None
    assert total is not None
    status = _text(data, "status") or _text(data, "refund_status")
    if status is None:
        raise WechatPayBadResponseError("refund without status", reason="malformed")
    return WechatPayRefund(
        out_refund_no=_required(data, "out_refund_no"),
        refund_id=_required(data, "refund_id"),
        out_trade_no=_required(data, "out_trade_no"),
        transaction_id=_required(data, "transaction_id"),
        status=status,
        refund_fen=refund,
        total_fen=total,
        currency=_text(amount, "currency") or "CNY",
        payer_total_fen=_fen(amount, "payer_total"),
        payer_refund_fen=_fen(amount, "payer_refund"),
        channel=_text(data, "channel"),
        funds_account=_text(data, "funds_account"),
        create_time=parse_time(data.get("create_time")),
        success_time=parse_time(data.get("success_time")),
        user_received_account=_text(data, "user_received_account"),
    )


@dataclass(frozen=True, slots=True)
class WechatPayBillRow:
    """One detail row of a downloaded trade bill (``ALL``): a payment (``trade_state`` SUCCESS) or a refund
    (``REFUND``, with its refund numbers), amounts in fen."""

    trade_time: datetime
    transaction_id: str
    out_trade_no: str
    trade_state: str
    settled_fen: int
    """应结订单金额: what the payment settles (0 on refund rows)."""
    total_fen: int
    """订单金额."""
    refund_id: str | None = None
    out_refund_no: str | None = None
    refund_fen: int = 0


def _bill_amount(value: str) -> int:
    try:
        return yuan_to_fen(value)
    except ValueError:
        raise WechatPayBadResponseError(f"bill: bad amount {value[:20]!r}", reason="malformed") from None


def parse_trade_bill(data: bytes) -> list[WechatPayBillRow]:
    """The detail rows of a trade bill CSV (``download_bill``'s bytes, UTF-8): a header row that starts with
    ``交易时间``, one row per payment or refund, every cell prefixed with a backquote, then the summary header
    (``总交易单数``) and its row. Columns are found by name. Raises ``WechatPayBadResponseError``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise WechatPayBadResponseError("bill: not UTF-8", reason="malformed") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("交易时间"):
        raise WechatPayBadResponseError("bill: no header row", reason="malformed")
    header = [cell.strip() for cell in lines[0].split(",")]
    needed = (
        "交易时间",
        "微信订单号",
        "商户订单号",
        "交易状态",
        "应结订单金额",
        "订单金额",
        "微信退款单号",
        "商户退款单号",
        "退款金额",
    )
    missing = [name for name in needed if name not in header]
    if missing:
        raise WechatPayBadResponseError(f"bill: columns missing: {missing}", reason="malformed")
    col = {name: header.index(name) for name in needed}
    rows: list[WechatPayBillRow] = []
    for line in lines[1:]:
        if line.startswith("总交易单数"):
            break
        cells = [cell.strip().lstrip("`") for cell in line.split(",")]
        if len(cells) < len(header):
            raise WechatPayBadResponseError("bill: a short row", reason="malformed")
        try:
            at = datetime.strptime(cells[col["交易时间"]], "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
        except ValueError:
            raise WechatPayBadResponseError("bill: bad trade time", reason="malformed") from None
        state = cells[col["交易状态"]]
        refund = state == REFUND
        rows.append(
            WechatPayBillRow(
                trade_time=ensure_utc(at),
                transaction_id=cells[col["微信订单号"]],
                out_trade_no=cells[col["商户订单号"]],
                trade_state=state,
                settled_fen=_bill_amount(cells[col["应结订单金额"]]),
                total_fen=_bill_amount(cells[col["订单金额"]]),
                refund_id=cells[col["微信退款单号"]] if refund else None,
                out_refund_no=cells[col["商户退款单号"]] if refund else None,
                refund_fen=_bill_amount(cells[col["退款金额"]]) if refund else 0,
            )
        )
    return rows


# --- the platform keys -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlatformCertificate:
    """A platform certificate from ``GET /v3/certificates``, decrypted and parsed."""

    serial_no: str
    certificate_pem: bytes
    public_key_pem: bytes
    effective_time: datetime
    expire_time: datetime


class PlatformKeyStore:
    """The platform keys answers and notifications are verified with, by serial.

    Public-key mode (``PlatformKeyStore.public_key("PUB_KEY_ID_...", pem)``): one key, nothing downloaded.
    Certificate mode (``PlatformKeyStore.certificates()``): empty until the client downloads
    ``GET /v3/certificates``; cached by serial, refreshed when an unknown serial shows up. Both at once during a
    migration (``PlatformKeyStore(public_key_id=..., public_key_pem=..., download_certificates=True)``).
    The store is process memory: a cache, rebuilt by downloading.
    """

    def __init__(
        self,
        *,
        public_key_id: str | None = None,
        public_key_pem: bytes | None = None,
        download_certificates: bool = False,
    ) -> None:
        if (public_key_id is None) != (public_key_pem is None):
            raise ValueError("give both public_key_id and public_key_pem, or neither")
        if public_key_id is not None and not public_key_id.startswith(PUBLIC_KEY_ID_PREFIX):
            raise ValueError("a WeChat Pay public key id starts with PUB_KEY_ID_")
        if public_key_id is None and not download_certificates:
            raise ValueError("a platform key store needs a public key or certificate downloads")
        self._fixed: dict[str, bytes] = {}
        if public_key_id is not None and public_key_pem is not None:
            load_public_key(public_key_pem)  # an unusable key fails here
            self._fixed[public_key_id] = public_key_pem
        self.download_certificates = download_certificates
        self._certificates: dict[str, PlatformCertificate] = {}
        self.refreshed_at: datetime | None = None

    @classmethod
    def public_key(cls, public_key_id: str, public_key_pem: bytes) -> PlatformKeyStore:
        return cls(public_key_id=public_key_id, public_key_pem=public_key_pem)

    @classmethod
    def certificates(cls) -> PlatformKeyStore:
        return cls(download_certificates=True)

    @property
    def has_public_key(self) -> bool:
        return bool(self._fixed)

    def keys(self, now: datetime | None = None) -> dict[str, bytes]:
        """Serial -> public key PEM, for every usable key (certificates within their validity at ``now``)."""
        found = dict(self._fixed)
        for serial, cert in self._certificates.items():
            if now is None or cert.effective_time <= now <= cert.expire_time:
                found[serial] = cert.public_key_pem
        return found

    @property
    def platform_certificates(self) -> list[PlatformCertificate]:
        return sorted(self._certificates.values(), key=lambda c: c.expire_time)

    def replace_certificates(self, certificates: Sequence[PlatformCertificate], now: datetime) -> None:
        """Keep the downloaded certificates (the list WeChat answers holds every valid one)."""
        self._certificates = {cert.serial_no: cert for cert in certificates}
        self.refreshed_at = now


def parse_certificates(body: bytes, api_v3_key: bytes) -> list[PlatformCertificate]:
    """The ``data`` of a ``GET /v3/certificates`` answer, each ``encrypt_certificate`` decrypted (AAD
    ``certificate``) and checked against its ``serial_no``."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise WechatPayBadResponseError("certificates: not JSON", reason="malformed") from None
    items = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        raise WechatPayBadResponseError("certificates: no data list", reason="malformed")
    found: list[PlatformCertificate] = []
    for item in items:
        if not isinstance(item, dict):
            raise WechatPayBadResponseError("certificates: an item is not an object", reason="malformed")
        encrypted = _object(item, "encrypt_certificate")
        if encrypted.get("algorithm") != AEAD_ALGORITHM:
            raise WechatPayBadResponseError("certificates: not AEAD_AES_256_GCM", reason="malformed")
        try:
            pem = decrypt_resource(
                api_v3_key,
                nonce=_required(encrypted, "nonce"),
                associated_data=_text(encrypted, "associated_data") or "",
                ciphertext=_required(encrypted, "ciphertext"),
            )
            certificate = x509.load_pem_x509_certificate(pem)
        except WechatPayDecryptError as exc:
            raise WechatPayBadResponseError(
                f"certificates: {exc.detail} (check the APIv3 key)", reason="decrypt_failed"
            ) from None
        except ValueError:
            raise WechatPayBadResponseError("certificates: not an X.509 certificate", reason="malformed") from None
        serial = normalize_serial(_required(item, "serial_no"))
        if certificate_serial(certificate) != serial:
            raise WechatPayBadResponseError(
                "certificates: serial_no differs from the certificate's", reason="malformed"
            )
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise WechatPayBadResponseError("certificates: not an RSA certificate", reason="malformed")
        effective = parse_time(item.get("effective_time")) or ensure_utc(certificate.not_valid_before_utc)
        expire = parse_time(item.get("expire_time")) or ensure_utc(certificate.not_valid_after_utc)
        found.append(
            PlatformCertificate(
                serial_no=serial,
                certificate_pem=pem,
                public_key_pem=public_key_pem_of(public_key),
                effective_time=effective,
                expire_time=expire,
            )
        )
    return found


# --- the client ------------------------------------------------------------------------------------------------------


def _validate(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"bad {what}")
    return value


def _json_bytes(payload: Mapping[str, object]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _retry_after(response: httpx.Response) -> int | None:
    raw = response.headers.get("retry-after", "").strip()
    return int(raw) if raw.isdigit() else None


def _nonce() -> str:
    return secrets.token_hex(16).upper()


class WechatPayClient:
    """One merchant's WeChat Pay API v3 client (direct merchant, mini-program JSAPI and APP payments).

    ``http`` is shared and owned by the caller; ``base_url`` points at WeChat Pay or at the simulator
    (``http://127.0.0.1:8000/sandbox/wechatpay``): requests are signed over their path relative to it, as
    WeChat Pay signs over the path relative to its host. ``clock`` is the shared clock: request timestamps
    come from it and answers more than ``window_seconds`` away from it are refused.

    Every answer but the bill file must be signed by a platform key of ``platform``; a certificate-mode store
    is filled from ``GET /v3/certificates`` on first need and refreshed when an unknown serial shows up (at
    most once per ``certificate_refresh_seconds``). The client does not retry: wrap idempotent calls with
    ``integrations.resilience`` (``WechatPayUnavailableError`` carries ``extra["failure"]``).
    """

    def __init__(
        self,
        *,
        mchid: str,
        merchant_private_key_pem: bytes,
        merchant_serial_no: str,
        api_v3_key: bytes,
        platform: PlatformKeyStore,
        http: httpx.AsyncClient,
        clock: Clock,
        base_url: str = DEFAULT_BASE_URL,
        timeout_seconds: float = 10.0,
        window_seconds: int = WINDOW_SECONDS,
        certificate_refresh_seconds: float = 60.0,
        user_agent: str = "hsp-bff-wechatpay/1.0",
    ) -> None:
        if not mchid or not merchant_serial_no:
            raise ValueError("a WeChat Pay client needs a mchid and the merchant certificate serial")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        load_private_key(merchant_private_key_pem)  # an unusable key fails here, not on the first call
        self._mchid = mchid
        self._private_key = merchant_private_key_pem
        self._serial_no = normalize_serial(merchant_serial_no)
        self._api_v3_key = api_v3_key
        self._platform = platform
        self._http = http
        self._clock = clock
        self._base_url = base_url.rstrip("/")
        base = httpx.URL(self._base_url)
        self._base_origin = (base.scheme, base.host, base.port)
        self._base_path = base.raw_path.decode("ascii").split("?", 1)[0].rstrip("/")
        self._timeout = timeout_seconds
        self._window = window_seconds
        self._refresh_interval = timedelta(seconds=certificate_refresh_seconds)
        self._user_agent = user_agent
        self._refresh_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"WechatPayClient(mchid={self._mchid!r}, base_url={self._base_url!r})"

    @property
    def mchid(self) -> str:
        return self._mchid

    @property
    def platform(self) -> PlatformKeyStore:
        return self._platform

    # --- payments -----------------------------------------------------------------------------------------------

    async def jsapi_prepay(
        self,
        *,
        app_id: str,
        description: str,
        out_trade_no: str,
        total_fen: int,
        payer_openid: str,
        notify_url: str,
        time_expire: datetime | None = None,
        attach: str | None = None,
    ) -> str:
        """``POST /v3/pay/transactions/jsapi`` (mini-program payments); returns the ``prepay_id`` (valid 2 h)."""
        if not payer_openid:
            raise ValueError("JSAPI payments need the payer's openid")
        body = self._order_body(app_id, description, out_trade_no, total_fen, notify_url, time_expire, attach)
        body["payer"] = {"openid": payer_openid}
        return await self._prepay("/v3/pay/transactions/jsapi", body, api="jsapi_prepay")

    async def app_prepay(
        self,
        *,
        app_id: str,
        description: str,
        out_trade_no: str,
        total_fen: int,
        notify_url: str,
        time_expire: datetime | None = None,
        attach: str | None = None,
    ) -> str:
        """``POST /v3/pay/transactions/app`` (the patient app); returns the ``prepay_id``."""
        body = self._order_body(app_id, description, out_trade_no, total_fen, notify_url, time_expire, attach)
        return await self._prepay("/v3/pay/transactions/app", body, api="app_prepay")

    def _order_body(
        self,
        app_id: str,
        description: str,
        out_trade_no: str,
        total_fen: int,
        notify_url: str,
        time_expire: datetime | None,
        attach: str | None,
    ) -> dict[str, object]:
        _validate(_OUT_TRADE_NO, out_trade_no, "out_trade_no")
        if isinstance(total_fen, bool) or not isinstance(total_fen, int) or total_fen < 1:
            raise ValueError("total_fen is a positive integer")
        if not app_id or not description or len(description) > 127:
            raise ValueError("app_id and a description of 1 to 127 characters are required")
        if not notify_url or len(notify_url) > 256:
            raise ValueError("notify_url is required (at most 256 characters)")
        body: dict[str, object] = {
            "appid": app_id,
            "mchid": self._mchid,
            "description": description,
            "out_trade_no": out_trade_no,
            "notify_url": notify_url,
            "amount": {"total": total_fen, "currency": "CNY"},
        }
        if time_expire is not None:
            body["time_expire"] = format_time(time_expire)
        if attach is not None:
            if len(attach) > 128:
                raise ValueError("attach is at most 128 characters")
            body["attach"] = attach
        return body

    async def _prepay(self, path: str, body: Mapping[str, object], *, api: str) -> str:
        payload = await self._json("POST", path, api=api, body=body)
        prepay_id = payload.get("prepay_id")
        if not isinstance(prepay_id, str) or not _PREPAY_ID.fullmatch(prepay_id):
            raise WechatPayBadResponseError(f"{api}: answer without a prepay_id", reason="malformed")
        return prepay_id

    def client_params_jsapi(self, app_id: str, prepay_id: str) -> dict[str, str]:
        """What ``wx.requestPayment`` takes: ``timeStamp``, ``nonceStr``, ``package``, ``signType`` and
        ``paySign`` (the mini-program's ``app_id`` must be the one of the prepay)."""
        _validate(_PREPAY_ID, prepay_id, "prepay_id")
        timestamp = str(int(self._clock.now().timestamp()))
        nonce = _nonce()
        package = f"prepay_id={prepay_id}"
        return {
            "timeStamp": timestamp,
            "nonceStr": nonce,
            "package": package,
            "signType": "RSA",
            "paySign": pay_sign(self._private_key, app_id=app_id, timestamp=timestamp, nonce=nonce, package=package),
        }

    def client_params_app(self, app_id: str, prepay_id: str) -> dict[str, str]:
        """What the APP SDK's ``PayReq`` takes: ``appid``, ``partnerid``, ``prepayid``, ``package``
        (``Sign=WXPay``), ``noncestr``, ``timestamp`` and ``sign``."""
        _validate(_PREPAY_ID, prepay_id, "prepay_id")
        timestamp = str(int(self._clock.now().timestamp()))
        nonce = _nonce()
        return {
            "appid": app_id,
            "partnerid": self._mchid,
            "prepayid": prepay_id,
            "package": "Sign=WXPay",
            "noncestr": nonce,
            "timestamp": timestamp,
            "sign": app_pay_sign(
                self._private_key, app_id=app_id, timestamp=timestamp, nonce=nonce, prepay_id=prepay_id
            ),
        }

    async def query_by_out_trade_no(self, out_trade_no: str) -> WechatPayTransaction:
        """``GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=``; ``ORDER_NOT_EXIST`` is a
        ``WechatPayRejectedError``."""
        _validate(_OUT_TRADE_NO, out_trade_no, "out_trade_no")
        path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}"
        payload = await self._json("GET", path, api="query", query={"mchid": self._mchid})
        return parse_transaction(payload)

    async def query_by_transaction_id(self, transaction_id: str) -> WechatPayTransaction:
        """``GET /v3/pay/transactions/id/{transaction_id}?mchid=``."""
        _validate(_TRANSACTION_ID, transaction_id, "transaction_id")
        path = f"/v3/pay/transactions/id/{transaction_id}"
        payload = await self._json("GET", path, api="query", query={"mchid": self._mchid})
        return parse_transaction(payload)

    async def close(self, out_trade_no: str) -> None:
        """``POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close`` -> 204 with an empty signed body.
        A paid order answers ``ORDERPAID`` (``WechatPayRejectedError``)."""
        _validate(_OUT_TRADE_NO, out_trade_no, "out_trade_no")
        path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}/close"
        await self._call("POST", path, api="close", body={"mchid": self._mchid}, expect=204)

    # --- refunds ------------------------------------------------------------------------------------------------

    async def refund(
        self,
        out_trade_no: str,
        out_refund_no: str,
        refund_fen: int,
        total_fen: int,
        reason: str | None = None,
        *,
        notify_url: str | None = None,
    ) -> WechatPayRefund:
        """``POST /v3/refund/domestic/refunds``. The same ``out_refund_no`` refunds once however often it is
        sent (retry with the same number after a failure); the status is usually ``PROCESSING`` at first."""
        _validate(_OUT_TRADE_NO, out_trade_no, "out_trade_no")
        _validate(_OUT_REFUND_NO, out_refund_no, "out_refund_no")
        for amount in (refund_fen, total_fen):
            if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
                raise ValueError("refund and total amounts are positive integers of fen")
        if refund_fen > total_fen:
            raise ValueError("a refund cannot exceed the order's total")
        body: dict[str, object] = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "amount": {"refund": refund_fen, "total": total_fen, "currency": "CNY"},
        }
        if reason:
            if len(reason) > 80:
                raise ValueError("reason is at most 80 characters")
            body["reason"] = reason
        if notify_url:
            body["notify_url"] = notify_url
        payload = await self._json("POST", "/v3/refund/domestic/refunds", api="refund", body=body)
        return parse_refund(payload)

    async def query_refund(self, out_refund_no: str) -> WechatPayRefund:
        """``GET /v3/refund/domestic/refunds/{out_refund_no}``."""
        _validate(_OUT_REFUND_NO, out_refund_no, "out_refund_no")
        path = f"/v3/refund/domestic/refunds/{quote(out_refund_no, safe='')}"
        return parse_refund(await self._json("GET", path, api="query_refund"))

    # --- bills --------------------------------------------------------------------------------------------------

    async def trade_bill(self, bill_date: date, *, bill_type: str = "ALL", gzipped: bool = False) -> tuple[str, str]:
        """``GET /v3/bill/tradebill``; returns ``(download_url, sha1 hex)`` of the day's bill (Beijing date)."""
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            raise ValueError("bill_type is ALL, SUCCESS or REFUND")
        query = {"bill_date": bill_date.isoformat(), "bill_type": bill_type}
        if gzipped:
            query["tar_type"] = "GZIP"
        payload = await self._json("GET", "/v3/bill/tradebill", api="trade_bill", query=query)
        url = _text(payload, "download_url")
        hash_type = _text(payload, "hash_type")
        hash_value = _text(payload, "hash_value")
        if url is None or hash_value is None or hash_type != "SHA1":
            raise WechatPayBadResponseError("trade_bill: answer without a SHA1 download", reason="malformed")
        return url, hash_value.lower()

    async def download_bill(self, url: str, expected_sha1: str) -> bytes:
        """``GET`` the ``download_url`` with a signed ``Authorization``; the answer is not signed, so the SHA1 of
        the CSV (gunzipped when it came gzipped) must equal ``expected_sha1``. Returns the CSV bytes."""
        target = httpx.URL(url)
        if (target.scheme, target.host, target.port) != self._base_origin:
            raise WechatPayBadResponseError("download_bill: the download URL is not on the API host", reason="host")
        status, body, response = await self._call("GET", target, api="download_bill", signed_answer=False)
        if status != 200:
            self._raise_for_status("download_bill", response, body)
        data = _gunzip(body) if body.startswith(_GZIP_MAGIC) else body
        actual = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        if not hmac.compare_digest(actual, expected_sha1.strip().lower()):
            raise WechatPayBadResponseError("download_bill: the SHA1 of the bill differs", reason="hash_mismatch")
        return data

    # --- notifications and certificates ---------------------------------------------------------------------

    async def parse_notification(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """``verify_notification`` with this merchant's platform keys, APIv3 key and clock; in certificate mode
        an unknown serial triggers one certificate refresh first."""
        now = self._clock.now()
        keys = await self._keys_for(_lower(headers).get(HEADER_SERIAL, ""))
        return verify_notification(
            headers, body, keys=keys, now=now, api_v3_key=self._api_v3_key, window_seconds=self._window
        )

    async def refresh_certificates(self) -> list[PlatformCertificate]:
        """``GET /v3/certificates``: decrypt every certificate with the APIv3 key, keep the valid ones.

        The answer is verified with the certificates it brings (or keys already known): decrypting them proves
        the sender holds our APIv3 key, the trust anchor of certificate mode (as the official SDKs do).
        """
        async with self._refresh_lock:
            now = self._clock.now()
            status, body, response = await self._call(
                "GET", "/v3/certificates", api="certificates", signed_answer=False
            )
            if status != 200:
                self._raise_for_status("certificates", response, body)
            certificates = parse_certificates(body, self._api_v3_key)
            keys = self._platform.keys(now)
            keys.update({cert.serial_no: cert.public_key_pem for cert in certificates})
            self._check_signature(response, body, keys, api="certificates")
            valid = [c for c in certificates if c.effective_time <= now <= c.expire_time]
            if not valid and not self._platform.has_public_key:
                raise WechatPayBadResponseError("certificates: none is valid now", reason="no_certificate")
            self._platform.replace_certificates(valid, now)
            logger.info("wechatpay %s: %d platform certificate(s) loaded", self._mchid, len(valid))
            return valid

    async def platform_keys(self) -> dict[str, bytes]:
        """The usable platform keys (serial -> public key PEM), downloading certificates on first need."""
        return await self._keys_for("")

    async def _keys_for(self, serial: str) -> dict[str, bytes]:
        """The usable keys; in certificate mode, download first when there is no certificate yet or ``serial``
        is an unknown certificate serial (at most once per ``certificate_refresh_seconds``)."""
        now = self._clock.now()
        keys = self._platform.keys(now)
        if not self._platform.download_certificates:
            return keys
        wanted = normalize_serial(serial) if serial else ""
        if wanted.startswith(PUBLIC_KEY_ID_PREFIX):
            return keys
        known = {normalize_serial(name) for name in keys}
        has_certificate = any(not name.startswith(PUBLIC_KEY_ID_PREFIX) for name in known)
        if (wanted and wanted in known) or (not wanted and has_certificate):
            return keys
        last = self._platform.refreshed_at
        if has_certificate and last is not None and now - last < self._refresh_interval:
            return keys
        try:
            await self.refresh_certificates()
        except (WechatPayUnavailableError, WechatPayBadResponseError):
            logger.warning("wechatpay %s: platform certificate refresh failed", self._mchid)
            if not keys:
                raise
        return self._platform.keys(self._clock.now())

    # --- transport ----------------------------------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        path: str,
        *,
        api: str,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, object] | None = None,
    ) -> dict[str, Any]:
        _, content, _ = await self._call(method, path, api=api, query=query, body=body, expect=200)
        try:
            payload = json.loads(content)
        except ValueError:
            raise WechatPayBadResponseError(f"{api}: answer is not JSON", reason="malformed") from None
        if not isinstance(payload, dict):
            raise WechatPayBadResponseError(f"{api}: answer is not a JSON object", reason="malformed")
        return payload

    def _target(self, path: str | httpx.URL, query: Mapping[str, str] | None) -> tuple[httpx.URL, str]:
        url = path if isinstance(path, httpx.URL) else httpx.URL(self._base_url + path, params=query)
        raw = url.raw_path.decode("ascii")
        if not raw.startswith(self._base_path + "/"):
            raise WechatPayBadResponseError("the URL is outside the API base", reason="host")
        return url, raw[len(self._base_path) :]

    async def _call(
        self,
        method: str,
        path: str | httpx.URL,
        *,
        api: str,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, object] | None = None,
        expect: int | None = None,
        signed_answer: bool = True,
    ) -> tuple[int, bytes, httpx.Response]:
        """One signed exchange. With ``expect``, anything but that status raises (after the answer's signature
        is checked); ``signed_answer=False`` leaves the signature to the caller (bill file, certificates)."""
        url, canonical = self._target(path, query)
        payload = b"" if body is None else _json_bytes(body)
        timestamp = str(int(self._clock.now().timestamp()))
        headers = {
            "Authorization": authorization_header(
                mchid=self._mchid,
                serial_no=self._serial_no,
                private_key_pem=self._private_key,
                method=method,
                url_path_with_query=canonical,
                timestamp=timestamp,
                nonce=_nonce(),
                body=payload,
            ),
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.request(
                    method, url, content=payload if body is not None else None, headers=headers, timeout=self._timeout
                )
        except (TimeoutError, httpx.TimeoutException):
            raise WechatPayUnavailableError(f"{api}: timed out", failure=Failure.TIMEOUT) from None
        except httpx.HTTPError as exc:
            raise WechatPayUnavailableError(f"{api}: {type(exc).__name__}", failure=Failure.TRANSPORT) from None
        status = response.status_code
        content = response.content
        logger.debug("wechatpay %s: HTTP %d", api, status)
        if not signed_answer:
            return status, content, response
        if status == 429 or status >= 500:
            self._raise_for_status(api, response, content)
        keys = await self._keys_for(response.headers.get(HEADER_SERIAL, ""))
        self._check_signature(response, content, keys, api=api)
        if expect is not None and status != expect:
            self._raise_for_status(api, response, content)
        return status, content, response

    def _check_signature(self, response: httpx.Response, body: bytes, keys: Mapping[str, bytes], *, api: str) -> None:
        try:
            verify_signed_headers(response.headers, body, keys=keys, now=self._clock.now(), window_seconds=self._window)
        except WechatPayNotificationError as exc:
            raise WechatPayBadResponseError(f"{api}: {exc.detail}", reason=exc.code) from None

    def _raise_for_status(self, api: str, response: httpx.Response, body: bytes) -> NoReturn:
        """Map a failure answer (protocols §2.8)."""
        status = response.status_code
        vendor_code: str | None = None
        vendor_message: str | None = None
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        if isinstance(payload, dict):
            raw_code, raw_message = payload.get("code"), payload.get("message")
            vendor_code = raw_code if isinstance(raw_code, str) and raw_code else None
            vendor_message = raw_message[:200] if isinstance(raw_message, str) else None
        detail = f"{api}: HTTP {status} {vendor_code or ''}".strip()
        if status == 429 or vendor_code == "FREQUENCY_LIMITED":
            raise WechatPayUnavailableError(
                detail,
                failure=Failure.THROTTLED,
                vendor_code=vendor_code,
                http_status=status,
                retry_after=_retry_after(response) or 1,
            )
        if status >= 500:
            raise WechatPayUnavailableError(
                detail,
                failure=Failure.SERVER,
                vendor_code=vendor_code,
                http_status=status,
                retry_after=_retry_after(response),
            )
        if not 400 <= status < 500 or vendor_code is None:
            raise WechatPayBadResponseError(f"{detail}: unexpected answer", reason="status")
        if status == 401 or vendor_code in MISCONFIGURED_CODES:
            raise WechatPayMisconfiguredError(detail, vendor_code=vendor_code, http_status=status)
        if vendor_code == PARAM_ERROR:
            raise WechatPayParamError(
                detail, vendor_code=vendor_code, http_status=status, vendor_message=vendor_message
            )
        raise WechatPayRejectedError(detail, vendor_code=vendor_code, http_status=status, vendor_message=vendor_message)


def _gunzip(data: bytes) -> bytes:
    decompressor = zlib.decompressobj(wbits=31)
    try:
        plain = decompressor.decompress(data, _BILL_LIMIT)
    except zlib.error:
        raise WechatPayBadResponseError("download_bill: a corrupt gzip file", reason="malformed") from None
    if decompressor.unconsumed_tail or not decompressor.eof:
        raise WechatPayBadResponseError("download_bill: the gzip file is truncated or too big", reason="malformed")
    return plain


def gzip_bytes(data: bytes) -> bytes:
    """Gzip ``data`` deterministically (mtime 0), as a bill file may come."""
    return gzip.compress(data, mtime=0)


__all__ = [
    "AUTH_SCHEMA",
    "DEFAULT_BASE_URL",
    "SIGNTEST_PREFIX",
    "WINDOW_SECONDS",
    "PlatformCertificate",
    "PlatformKeyStore",
    "WechatPayBadNotificationError",
    "WechatPayBadResponseError",
    "WechatPayBadSignatureError",
    "WechatPayBillRow",
    "WechatPayClient",
    "WechatPayDecryptError",
    "WechatPayMisconfiguredError",
    "WechatPayNotificationError",
    "WechatPayParamError",
    "WechatPayRefund",
    "WechatPayRejectedError",
    "WechatPaySignatureProbeError",
    "WechatPayStaleError",
    "WechatPayTransaction",
    "WechatPayUnavailableError",
    "WechatPayUnknownSerialError",
    "app_pay_sign",
    "authorization_header",
    "decrypt_notification",
    "decrypt_resource",
    "encrypt_resource",
    "format_time",
    "parse_certificates",
    "parse_refund",
    "parse_time",
    "parse_trade_bill",
    "parse_transaction",
    "pay_sign",
    "request_message",
    "response_message",
    "sign_message",
    "verify_notification",
    "verify_signature",
    "verify_signed_headers",
]
