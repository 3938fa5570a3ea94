"""Tencent Cloud FaceID (人脸核身, API 3.0 version 2018-03-01) as the ``RealNameVerifier``.

Actions: ``IdCardVerification`` (name + ID number), ``PhoneVerification`` (name + ID number + phone),
``DetectAuth`` (opens a face-check flow: ``BizToken`` and the page ``Url``) and ``GetDetectInfoEnhanced``
(the flow's result in ``Text.ErrCode``). Requests are signed with TC3-HMAC-SHA256, the signer shared with
Tencent Cloud SMS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import httpx

from domain.identity.verification import (
    FaceCheckPendingError,
    FaceSession,
    FaceSessionInvalidError,
    VerificationOutcome,
    VerificationRateLimitedError,
    VerificationResult,
    VerificationUnavailableError,
)
from domain.kernel.clock import SHANGHAI, Clock
from integrations.sms.tencent import CONTENT_TYPE, tc3_authorization

PROVIDER = "tencent-faceid"
SERVICE = "faceid"
API_VERSION = "2018-03-01"
FACE_TOKEN_TTL_SECONDS = 7200
"""``DetectAuth``: a BizToken is valid for 7,200 seconds."""

_MATCH, _MISMATCH = VerificationOutcome.MATCH, VerificationOutcome.MISMATCH
_NO_RECORD, _INVALID = VerificationOutcome.NO_RECORD, VerificationOutcome.INVALID_INPUT

ID_CARD_RESULTS: Final[Mapping[str, VerificationOutcome]] = {
    "0": _MATCH,  # 姓名和身份证号一致
    "-1": _MISMATCH,  # 姓名和身份证号不一致
    "-2": _INVALID,  # 非法身份证号（长度、校验位等不正确）
    "-3": _INVALID,  # 非法姓名（长度、格式等不正确）
    "-5": _NO_RECORD,  # 证件库中无此身份证记录
}
"""``IdCardVerification`` ``Result``; ``-4`` (证件库服务异常) and ``-6`` (权威比对系统升级中) are outages, ``-7``
(认证次数超过当日限制) the daily limit."""
ID_CARD_UNAVAILABLE: Final = frozenset({"-4", "-6"})
ID_CARD_DAILY_LIMIT: Final = frozenset({"-7"})

PHONE_RESULTS: Final[Mapping[str, VerificationOutcome]] = {
    "0": _MATCH,  # 三要素信息一致（认证通过）
    "-4": _MISMATCH,  # 三要素信息不一致
    "-6": _INVALID,  # 手机号码不合法
    "-7": _INVALID,  # 身份证号码有误
    "-8": _INVALID,  # 姓名校验不通过
    "-9": _NO_RECORD,  # 没有记录
    "-13": _NO_RECORD,  # 该号段不支持验证: the carrier cannot confirm this number, another method is needed
}
"""``PhoneVerification`` ``Result`` (note ``-4`` is a mismatch here, unlike ``IdCardVerification``); ``-11``
(验证中心服务繁忙) is an outage, ``-12`` (认证次数超过当日限制) the daily limit."""
PHONE_UNAVAILABLE: Final = frozenset({"-11"})
PHONE_DAILY_LIMIT: Final = frozenset({"-12"})

FACE_PENDING: Final = frozenset({17})
"""本次流程未完成."""
FACE_EXPIRED: Final = frozenset({15})
"""Token 过期."""
FACE_UNAVAILABLE: Final = frozenset({1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 1001, 1006, 2001})
"""调用方式出错 (1-3, our integration), 服务异常 (4-13), 引擎超时 (1001, 2001), 证照库出错 (1006)."""
FACE_NO_RECORD: Final = frozenset({2005, 2007, 2008, 2009})
"""未查询到身份信息 (2005), 未查询到照片信息 (2007, 2008), 照片分辨率过低 (2009): verify by another channel."""
FACE_INVALID: Final = frozenset({2002, 2003})
"""姓名有误 (2002), 身份证号有误 (2003)."""
# Every other non-zero ErrCode is a failed check: 2006 姓名和身份证号不匹配, 2016 相似度未达到通过阈值,
# 1002 疑似非真人录制, 1003-1005 人脸验证失败, 16 已达到重试上限, 301 证件号码不符 ...

RATE_LIMIT_CODES: Final = frozenset({"RequestLimitExceeded", "FailedOperation.RequestLimitExceeded"})
"""The API 3.0 frequency limit (and its ``RequestLimitExceeded.*`` refinements), FaceID's own call limit."""
FACE_TOKEN_CODES: Final = frozenset({"InvalidParameterValue.BizTokenExpired", "InvalidParameterValue.BizTokenIllegal"})

_VENDOR_CODE = re.compile(r"^[A-Za-z0-9_.:\-]{1,80}$")
_MAINLAND_PREFIXES = ("+86", "0086")


def _vendor_code(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and _VENDOR_CODE.match(value) else "unexpected-answer"


def _request_id(body: Mapping[str, Any]) -> str | None:
    value = body.get("RequestId")
    return value if isinstance(value, str) and _VENDOR_CODE.match(value) else None


def _mainland(phone: str) -> str:
    """The 11 digits FaceID expects: spaces and hyphens dropped, a ``+86``/``0086`` prefix removed."""
    value = "".join(ch for ch in phone if ch not in " -")
    for prefix in _MAINLAND_PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


def seconds_to_next_day(now: datetime) -> int:
    """Seconds until the next midnight in China, when the provider's daily limits reset."""
    local = now.astimezone(SHANGHAI)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - local).total_seconds()))


class _Answer:
    """A successful ``Response`` object and its ``RequestId``."""

    def __init__(self, body: dict[str, Any], request_id: str | None) -> None:
        self.body = body
        self.request_id = request_id


class TencentFaceIdVerifier:
    """``RealNameVerifier`` over Tencent Cloud FaceID.

    Result codes map to outcomes as documented by the vendor (``ID_CARD_RESULTS``, ``PHONE_RESULTS``, the face
    ``ErrCode`` sets). Registry outages, request-level ``Error``s (signature, credentials, rule id, balance),
    HTTP errors, transport failures and timeouts raise ``VerificationUnavailableError``; ``RequestLimitExceeded``
    and the daily limits raise ``VerificationRateLimitedError``. Exception texts carry action names, vendor codes
    and request ids only, never a name, ID number or phone.
    """

    def __init__(
        self,
        *,
        secret_id: str,
        secret_key: str,
        rule_id: str,
        http: httpx.AsyncClient,
        clock: Clock,
        endpoint: str = "https://faceid.tencentcloudapi.com",
        region: str | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        if not secret_id or not secret_key:
            raise ValueError("Tencent Cloud FaceID needs a SecretId and a SecretKey")
        if not rule_id:
            raise ValueError("Tencent Cloud FaceID needs the RuleId of the face-check flow")
        url = httpx.URL(endpoint.rstrip("/") + "/")
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._rule_id = rule_id
        self._url = url
        self._host = url.netloc.decode("ascii").lower()
        """Signed and sent as ``Host`` (with the port when it is not the scheme's default)."""
        self._region = region
        """FaceID needs no region; sent as ``X-TC-Region`` only when configured."""
        self._http = http
        self._clock = clock
        self._timeout = timeout_seconds

    def __repr__(self) -> str:
        return f"TencentFaceIdVerifier(secret_id={self._secret_id!r}, url={str(self._url)!r})"

    @property
    def provider(self) -> str:
        return PROVIDER

    async def verify_id(self, name: str, id_number: str) -> VerificationResult:
        action = "IdCardVerification"
        answer = await self._call(action, {"IdCard": id_number, "Name": name})
        return self._verdict(
            action, answer, ID_CARD_RESULTS, unavailable=ID_CARD_UNAVAILABLE, daily_limit=ID_CARD_DAILY_LIMIT
        )

    async def verify_phone(self, name: str, id_number: str, phone: str) -> VerificationResult:
        action = "PhoneVerification"
        answer = await self._call(action, {"IdCard": id_number, "Name": name, "Phone": _mainland(phone)})
        return self._verdict(
            action, answer, PHONE_RESULTS, unavailable=PHONE_UNAVAILABLE, daily_limit=PHONE_DAILY_LIMIT
        )

    async def start_face(self, name: str, id_number: str, *, redirect_url: str | None) -> FaceSession:
        action = "DetectAuth"
        payload: dict[str, str] = {"RuleId": self._rule_id, "IdCard": id_number, "Name": name}
        if redirect_url:
            payload["RedirectUrl"] = redirect_url
        started = self._clock.now()
        answer = await self._call(action, payload)
        token, url = answer.body.get("BizToken"), answer.body.get("Url")
        if not isinstance(token, str) or not _VENDOR_CODE.match(token):
            raise VerificationUnavailableError(self._detail(action, "no usable BizToken", answer.request_id))
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise VerificationUnavailableError(self._detail(action, "no usable Url", answer.request_id))
        return FaceSession(token=token, url=url, expires_at=started + timedelta(seconds=FACE_TOKEN_TTL_SECONDS))

    async def face_result(self, token: str) -> VerificationResult:
        action = "GetDetectInfoEnhanced"
        if not token or not _VENDOR_CODE.match(token):
            raise FaceSessionInvalidError(f"{PROVIDER} {action}: malformed BizToken")
        # InfoType 1: the text result only, no ID card images, frames or video.
        answer = await self._call(action, {"BizToken": token, "RuleId": self._rule_id, "InfoType": "1"})
        text = answer.body.get("Text")
        code = text.get("ErrCode") if isinstance(text, dict) else None
        if isinstance(code, str) and re.fullmatch(r"-?\d{1,9}", code):
            code = int(code)
        if code is None or code in FACE_PENDING:
            raise FaceCheckPendingError(self._detail(action, f"ErrCode {code}", answer.request_id))
        if not isinstance(code, int) or isinstance(code, bool):
            raise VerificationUnavailableError(self._detail(action, "ErrCode is not an integer", answer.request_id))
        if code in FACE_EXPIRED:
            raise FaceSessionInvalidError(self._detail(action, f"ErrCode {code}", answer.request_id))
        if code in FACE_UNAVAILABLE:
            raise VerificationUnavailableError(self._detail(action, f"ErrCode {code}", answer.request_id))
        if code == 0:
            outcome = _MATCH
        elif code in FACE_NO_RECORD:
            outcome = _NO_RECORD
        elif code in FACE_INVALID:
            outcome = _INVALID
        else:
            outcome = _MISMATCH
        return VerificationResult(outcome=outcome, provider=PROVIDER, reference=token, checked_at=self._clock.now())

    # --- the wire -----------------------------------------------------------------------------------------

    @staticmethod
    def _detail(action: str, what: str, request_id: str | None = None) -> str:
        suffix = f" (RequestId {request_id})" if request_id else ""
        return f"{PROVIDER} {action}: {what}{suffix}"

    def _verdict(
        self,
        action: str,
        answer: _Answer,
        results: Mapping[str, VerificationOutcome],
        *,
        unavailable: frozenset[str],
        daily_limit: frozenset[str],
    ) -> VerificationResult:
        code = _vendor_code(answer.body.get("Result"))
        detail = self._detail(action, f"Result {code}", answer.request_id)
        if code in daily_limit:
            raise VerificationRateLimitedError(
                detail,
                retry_after=seconds_to_next_day(self._clock.now()),
                message="今日实名认证次数已达上限，请明天再试",
            )
        outcome = results.get(code)
        if outcome is None:
            # The registry is down, or an answer we do not know: no verdict either way.
            raise VerificationUnavailableError(detail if code in unavailable else f"{detail}, not a known result")
        return VerificationResult(
            outcome=outcome, provider=PROVIDER, reference=answer.request_id, checked_at=self._clock.now()
        )

    async def _call(self, action: str, fields: Mapping[str, str]) -> _Answer:
        payload = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
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
            "X-TC-Action": action,
            "X-TC-Version": API_VERSION,
            "X-TC-Timestamp": str(timestamp),
        }
        if self._region:
            headers["X-TC-Region"] = self._region
        try:
            response = await self._http.post(self._url, content=payload, headers=headers, timeout=self._timeout)
        except httpx.TimeoutException as exc:
            raise VerificationUnavailableError(self._detail(action, "timed out")) from exc
        except httpx.HTTPError as exc:
            raise VerificationUnavailableError(self._detail(action, type(exc).__name__)) from exc
        if response.status_code != 200:
            raise VerificationUnavailableError(self._detail(action, f"HTTP {response.status_code}"))
        try:
            decoded: Any = json.loads(response.content)
        except ValueError:
            decoded = None
        body = decoded.get("Response") if isinstance(decoded, dict) else None
        if not isinstance(body, dict):
            raise VerificationUnavailableError(self._detail(action, "not a JSON Response object"))
        request_id = _request_id(body)
        error = body.get("Error")
        if error is not None:
            code = _vendor_code(error.get("Code") if isinstance(error, dict) else None)
            detail = self._detail(action, code, request_id)
            if code in RATE_LIMIT_CODES or code.startswith("RequestLimitExceeded."):
                raise VerificationRateLimitedError(detail, retry_after=1)
            if code in FACE_TOKEN_CODES:
                raise FaceSessionInvalidError(detail)
            raise VerificationUnavailableError(detail)
        return _Answer(body, request_id)
