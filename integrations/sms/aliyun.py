"""Aliyun SMS (dysmsapi ``SendSms``, API version 2017-05-25) with the RPC signature V1.

The request is a POST form, not a GET: the phone number and the code stay out of URLs, which HTTP clients,
proxies and access logs record.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any
from urllib.parse import quote

import httpx

from domain.account.ports import ProviderUnavailableError, SmsReceipt, SmsRejectedError
from domain.kernel.clock import Clock

PROVIDER = "aliyun"
API_VERSION = "2017-05-25"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""``Timestamp`` is UTC ISO 8601 to the second, ``yyyy-MM-ddTHH:mm:ssZ``."""

ILLEGAL_NUMBER_CODES = frozenset({"isv.MOBILE_NUMBER_ILLEGAL", "isv.DOMESTIC_NUMBER_NOT_SUPPORTED"})
"""The number itself is wrong: another provider would refuse it too."""
NUMBER_LIMIT_CODES = frozenset({"isv.BUSINESS_LIMIT_CONTROL", "isv.DAY_LIMIT_CONTROL"})
"""Per-number flow control (minute/hour/day limits for one phone)."""

_VENDOR_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$")


def percent_encode(value: str) -> str:
    """RFC 3986 percent-encoding of the UTF-8 bytes: unreserved ``A-Za-z0-9-_.~`` kept, space as ``%20``,
    ``*`` as ``%2A`` (the V1 rule; ``application/x-www-form-urlencoded`` encoders differ on all three)."""
    return quote(value, safe="-_.~")


def canonicalized_query(params: Mapping[str, str]) -> str:
    """Every parameter but ``Signature``, sorted by name, as ``pe(name)=pe(value)`` joined by ``&``."""
    return "&".join(
        f"{percent_encode(key)}={percent_encode(value)}" for key, value in sorted(params.items()) if key != "Signature"
    )


def string_to_sign(params: Mapping[str, str], *, method: str = "GET") -> str:
    """``HTTPMethod & pe("/") & pe(CanonicalizedQueryString)``."""
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonicalized_query(params))}"


def signature_v1(params: Mapping[str, str], *, access_key_secret: str, method: str = "GET") -> str:
    """RPC signature V1: Base64(HMAC-SHA1(key = AccessKeySecret + "&", StringToSign))."""
    key = f"{access_key_secret}&".encode()
    digest = hmac.new(key, string_to_sign(params, method=method).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _vendor_code(value: object) -> str:
    """The vendor's error code, if it looks like one (never free text that could echo the request)."""
    return value if isinstance(value, str) and _VENDOR_CODE.match(value) else "unexpected-answer"


def _detail(code: str, request_id: object = None) -> str:
    suffix = f" (RequestId {request_id})" if isinstance(request_id, str) and _VENDOR_CODE.match(request_id) else ""
    return f"{PROVIDER} SendSms: {code}{suffix}"


class AliyunSmsSender:
    """``SmsSender`` over Aliyun dysmsapi ``SendSms``.

    ``Code`` ``OK`` gives a receipt with the ``BizId``; codes about the number itself (illegal, per-number
    flow control) raise ``SmsRejectedError``; everything else (signature, clock skew, balance, sign name or
    template problems, unknown codes, HTTP 5xx, transport failures, timeouts) raises
    ``ProviderUnavailableError``, so that another provider may be tried. A template name missing from
    ``templates`` is a configuration gap of this provider only, and is reported the same way.
    """

    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        sign_name: str,
        templates: Mapping[str, str],
        endpoint: str = "https://dysmsapi.aliyuncs.com",
        http: httpx.AsyncClient,
        clock: Clock,
        nonce: Callable[[], str] | None = None,
        region: str = "cn-hangzhou",
        timeout_seconds: float = 5.0,
    ) -> None:
        if not access_key_id or not access_key_secret:
            raise ValueError("Aliyun SMS needs an AccessKey id and secret")
        if not sign_name:
            raise ValueError("Aliyun SMS needs a sign name")
        self._access_key_id = access_key_id
        self._access_key_secret = access_key_secret
        self._sign_name = sign_name
        self._templates = dict(templates)
        self._url = endpoint.rstrip("/") + "/"
        self._http = http
        self._clock = clock
        self._nonce = nonce or (lambda: uuid.uuid4().hex)
        self._region = region
        self._timeout = timeout_seconds

    def __repr__(self) -> str:
        return f"AliyunSmsSender(access_key_id={self._access_key_id!r}, url={self._url!r})"

    @property
    def provider(self) -> str:
        return PROVIDER

    def _signed_params(self, phone: str, template_code: str, params: Mapping[str, str]) -> dict[str, str]:
        """The full parameter set of one ``SendSms`` call, ``Signature`` included (signed for POST)."""
        request = {
            "AccessKeyId": self._access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "RegionId": self._region,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": self._nonce(),
            "SignatureVersion": "1.0",
            "Timestamp": self._clock.now().astimezone(UTC).strftime(TIMESTAMP_FORMAT),
            "Version": API_VERSION,
            "PhoneNumbers": phone,
            "SignName": self._sign_name,
            "TemplateCode": template_code,
            "TemplateParam": json.dumps(dict(params), ensure_ascii=False, separators=(",", ":")),
        }
        request["Signature"] = signature_v1(request, access_key_secret=self._access_key_secret, method="POST")
        return request

    async def send(self, phone: str, template: str, params: Mapping[str, str]) -> SmsReceipt:
        template_code = self._templates.get(template)
        if template_code is None:
            raise ProviderUnavailableError(f"{PROVIDER}: template {template!r} is not configured")
        form = self._signed_params(phone, template_code, params)
        body = "&".join(f"{percent_encode(key)}={percent_encode(value)}" for key, value in form.items())
        try:
            response = await self._http.post(
                self._url,
                content=body.encode("ascii"),
                headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
                timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise ProviderUnavailableError(f"{PROVIDER} SendSms: timed out") from exc
        except httpx.HTTPError as exc:
            raise ProviderUnavailableError(f"{PROVIDER} SendSms: {type(exc).__name__}") from exc
        return self._receipt(response)

    def _receipt(self, response: httpx.Response) -> SmsReceipt:
        if response.status_code >= 500:
            raise ProviderUnavailableError(f"{PROVIDER} SendSms: HTTP {response.status_code}")
        try:
            answer: Any = json.loads(response.content)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ProviderUnavailableError(f"{PROVIDER} SendSms: HTTP {response.status_code}, not a JSON object")
        code = _vendor_code(answer.get("Code"))
        request_id = answer.get("RequestId")
        if code == "OK" and response.status_code == 200:
            biz_id = answer.get("BizId")
            if not isinstance(biz_id, str) or not biz_id:
                raise ProviderUnavailableError(_detail("OK without a BizId", request_id))
            return SmsReceipt(provider=PROVIDER, message_id=biz_id)
        if code in ILLEGAL_NUMBER_CODES:
            raise SmsRejectedError(_detail(code, request_id))
        if code in NUMBER_LIMIT_CODES:
            raise SmsRejectedError(
                _detail(code, request_id), code="sms.number_rate_limited", message="短信发送过于频繁，请稍后再试"
            )
        raise ProviderUnavailableError(_detail(code, request_id))
