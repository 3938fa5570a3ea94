"""Tencent Cloud SMS (``SendSms``, API 3.0 version 2021-01-11) with the TC3-HMAC-SHA256 signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from domain.account.ports import ProviderUnavailableError, SmsReceipt, SmsRejectedError
from domain.kernel.clock import Clock

PROVIDER = "tencent"
SERVICE = "sms"
API_VERSION = "2021-01-11"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"
SIGNED_HEADERS = "content-type;host"

ILLEGAL_NUMBER_CODES = frozenset(
    {
        "InvalidParameterValue.IncorrectPhoneNumber",
        "FailedOperation.PhoneNumberParseFail",
        "FailedOperation.PhoneNumberInBlacklist",
    }
)
"""The number itself is refused (malformed, or on the blacklist after the resident unsubscribed)."""
NUMBER_LIMIT_CODES = frozenset(
    {
        "LimitExceeded.PhoneNumberThirtySecondLimit",
        "LimitExceeded.PhoneNumberOneHourLimit",
        "LimitExceeded.PhoneNumberDailyLimit",
        "LimitExceeded.PhoneNumberSameContentDailyLimit",
        "LimitExceeded.DeliveryFrequencyLimit",
    }
)
"""Per-number frequency limits."""

_VENDOR_CODE = re.compile(r"^[A-Za-z0-9_.:\-]{1,80}$")


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac_sha256(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def utc_date(timestamp: int) -> str:
    """The credential-scope date: the UTC date of ``X-TC-Timestamp`` (never the local one)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def canonical_request(*, host: str, payload: bytes) -> str:
    """``POST``, URI ``/``, empty query, headers ``content-type`` and ``host`` (lowercase, sorted), the
    signed-header list, then the hex SHA-256 of the body."""
    return f"POST\n/\n\ncontent-type:{CONTENT_TYPE}\nhost:{host.strip().lower()}\n\n{SIGNED_HEADERS}\n" + _sha256_hex(
        payload
    )


def string_to_sign(*, service: str, host: str, timestamp: int, payload: bytes) -> str:
    """``TC3-HMAC-SHA256\\n<timestamp>\\n<date>/<service>/tc3_request\\n`` + hex SHA-256 of the canonical request."""
    scope = f"{utc_date(timestamp)}/{service}/tc3_request"
    hashed = _sha256_hex(canonical_request(host=host, payload=payload).encode())
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{hashed}"


def tc3_signature(*, secret_key: str, service: str, host: str, timestamp: int, payload: bytes) -> str:
    """TC3-HMAC-SHA256: kDate = HMAC("TC3" + SecretKey, date), kService = HMAC(kDate, service),
    kSigning = HMAC(kService, "tc3_request"); the signature is hex(HMAC(kSigning, StringToSign))."""
    secret_date = _hmac_sha256(f"TC3{secret_key}".encode(), utc_date(timestamp))
    secret_service = _hmac_sha256(secret_date, service)
    secret_signing = _hmac_sha256(secret_service, "tc3_request")
    message = string_to_sign(service=service, host=host, timestamp=timestamp, payload=payload)
    return hmac.new(secret_signing, message.encode(), hashlib.sha256).hexdigest()


def tc3_authorization(
    *, secret_id: str, secret_key: str, service: str, host: str, timestamp: int, payload: bytes
) -> str:
    """The ``Authorization`` header: ``TC3-HMAC-SHA256 Credential=<SecretId>/<scope>, SignedHeaders=...,
    Signature=...``."""
    signature = tc3_signature(secret_key=secret_key, service=service, host=host, timestamp=timestamp, payload=payload)
    scope = f"{utc_date(timestamp)}/{service}/tc3_request"
    return f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={SIGNED_HEADERS}, Signature={signature}"


def _vendor_code(value: object) -> str:
    return value if isinstance(value, str) and _VENDOR_CODE.match(value) else "unexpected-answer"


def _detail(code: str, request_id: object = None) -> str:
    suffix = f" (RequestId {request_id})" if isinstance(request_id, str) and _VENDOR_CODE.match(request_id) else ""
    return f"{PROVIDER} SendSms: {code}{suffix}"


def _e164(phone: str) -> str:
    """Mainland numbers go out as ``+86…``; a number already in E.164 form is left alone."""
    return phone if phone.startswith("+") else f"+86{phone}"


def _rejected_or_unavailable(code: str, request_id: object) -> Exception:
    if code in ILLEGAL_NUMBER_CODES:
        return SmsRejectedError(_detail(code, request_id))
    if code in NUMBER_LIMIT_CODES:
        return SmsRejectedError(
            _detail(code, request_id), code="sms.number_rate_limited", message="短信发送过于频繁，请稍后再试"
        )
    return ProviderUnavailableError(_detail(code, request_id))


class TencentSmsSender:
    """``SmsSender`` over Tencent Cloud SMS ``SendSms``.

    A request-level ``Error`` (signature, expired timestamp, unknown SdkAppId, sign name or template, balance)
    raises ``ProviderUnavailableError``, as do HTTP errors, transport failures and timeouts. The number's own
    ``SendStatusSet`` entry decides otherwise: ``Ok`` gives a receipt with the ``SerialNo``; an illegal or
    blacklisted number and the per-number frequency limits raise ``SmsRejectedError``.
    """

    def __init__(
        self,
        *,
        secret_id: str,
        secret_key: str,
        sdk_app_id: str,
        sign_name: str,
        templates: Mapping[str, str],
        endpoint: str = "https://sms.tencentcloudapi.com",
        region: str = "ap-guangzhou",
        http: httpx.AsyncClient,
        clock: Clock,
        timeout_seconds: float = 5.0,
    ) -> None:
        if not secret_id or not secret_key:
            raise ValueError("Tencent Cloud SMS needs a SecretId and a SecretKey")
        if not sdk_app_id or not sign_name:
            raise ValueError("Tencent Cloud SMS needs an SmsSdkAppId and a sign name")
        url = httpx.URL(endpoint.rstrip("/") + "/")
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._sdk_app_id = sdk_app_id
        self._sign_name = sign_name
        self._templates = dict(templates)
        self._url = url
        self._host = url.netloc.decode("ascii").lower()
        """Signed and sent as ``Host`` (with the port when it is not the scheme's default)."""
        self._region = region
        self._http = http
        self._clock = clock
        self._timeout = timeout_seconds

    def __repr__(self) -> str:
        return f"TencentSmsSender(secret_id={self._secret_id!r}, url={str(self._url)!r})"

    @property
    def provider(self) -> str:
        return PROVIDER

    async def send(self, phone: str, template: str, params: Mapping[str, str]) -> SmsReceipt:
        template_id = self._templates.get(template)
        if template_id is None:
            raise ProviderUnavailableError(f"{PROVIDER}: template {template!r} is not configured")
        number = _e164(phone)
        payload = json.dumps(
            {
                "PhoneNumberSet": [number],
                "SmsSdkAppId": self._sdk_app_id,
                "SignName": self._sign_name,
                "TemplateId": template_id,
                "TemplateParamSet": list(params.values()),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        timestamp = int(self._clock.now().timestamp())
        headers = {
            "Authorization": tc3_authorization(
                secret_id=self._secret_id,
                secret_key=self._secret_key,
                service=SERVICE,
                host=self._host,
                timestamp=timestamp,
                payload=payload,
            ),
            "Content-Type": CONTENT_TYPE,
            "Host": self._host,
            "X-TC-Action": "SendSms",
            "X-TC-Version": API_VERSION,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Region": self._region,
        }
        try:
            response = await self._http.post(self._url, content=payload, headers=headers, timeout=self._timeout)
        except httpx.TimeoutException as exc:
            raise ProviderUnavailableError(f"{PROVIDER} SendSms: timed out") from exc
        except httpx.HTTPError as exc:
            raise ProviderUnavailableError(f"{PROVIDER} SendSms: {type(exc).__name__}") from exc
        return self._receipt(response, number)

    def _receipt(self, response: httpx.Response, number: str) -> SmsReceipt:
        if response.status_code != 200:
            raise ProviderUnavailableError(f"{PROVIDER} SendSms: HTTP {response.status_code}")
        try:
            answer: Any = json.loads(response.content)
        except ValueError:
            answer = None
        body = answer.get("Response") if isinstance(answer, dict) else None
        if not isinstance(body, dict):
            raise ProviderUnavailableError(f"{PROVIDER} SendSms: not a JSON Response object")
        request_id = body.get("RequestId")
        error = body.get("Error")
        if error is not None:
            code = _vendor_code(error.get("Code") if isinstance(error, dict) else None)
            raise _rejected_or_unavailable(code, request_id)
        statuses = body.get("SendStatusSet")
        entries = [item for item in statuses if isinstance(item, dict)] if isinstance(statuses, list) else []
        # One number per request: its entry, or the only one if the vendor wrote the number differently.
        status = next((item for item in entries if item.get("PhoneNumber") == number), None)
        if status is None and len(entries) == 1:
            status = entries[0]
        if status is None:
            raise ProviderUnavailableError(_detail("no SendStatus for the number", request_id))
        code = _vendor_code(status.get("Code"))
        if code == "Ok":
            serial = status.get("SerialNo")
            if not isinstance(serial, str) or not serial:
                raise ProviderUnavailableError(_detail("Ok without a SerialNo", request_id))
            return SmsReceipt(provider=PROVIDER, message_id=serial)
        raise _rejected_or_unavailable(code, request_id)
