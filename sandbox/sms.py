"""SMS simulators: Aliyun dysmsapi ``SendSms`` and Tencent Cloud SMS ``SendSms``, playing the vendors.

Each verifies the request signature with its own implementation of the vendor rule (Aliyun RPC signature
V1, Tencent TC3-HMAC-SHA256 over the ``Host`` it received), checks the timestamp against the shared clock
(Aliyun 15 minutes, Tencent 5 minutes), refuses credentials, sign names and templates it was not configured
with, applies per-number flow control, and answers in the vendor's shape.

Every delivered SMS is recorded in the simulator's ``inbox`` stream (``GET /sandbox/admin/<name>/requests
?stream=inbox``) and can be read per phone, newest first, at ``GET /sandbox/<name>/test/inbox?phone=...``:
that is where a person trying the demo reads a login code.

Routes, relative to ``/sandbox/aliyun-sms``: ``GET /`` and ``POST /`` (form), ``GET /test/inbox``.
Relative to ``/sandbox/tencent-sms``: ``POST /`` (JSON), ``GET /test/inbox``.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import hmac
import json
import re
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter
from litestar.types import ControllerRouterHandler

from sandbox.framework import MessageRecord, Simulator

INBOX = "inbox"
"""The recorder stream every delivered SMS goes to."""

_MAINLAND = re.compile(r"^1[3-9]\d{9}$")
_MAINLAND_PREFIXES = ("+86", "0086", "86")


def mainland_number(number: str) -> str | None:
    """The 11-digit mainland mobile number behind ``number`` (bare, ``+86…``, ``0086…`` or ``86…``), or None."""
    candidate = number.strip()
    if not _MAINLAND.match(candidate):
        for prefix in _MAINLAND_PREFIXES:
            if candidate.startswith(prefix):
                candidate = candidate[len(prefix) :]
                break
    return candidate if _MAINLAND.match(candidate) else None


class SmsMessage(msgspec.Struct, rename="camel", kw_only=True):
    """One delivered SMS, as recorded in the ``inbox`` stream."""

    provider: str
    phone: str
    """11 mainland digits."""
    sign_name: str
    template: str
    """The vendor's template code (Aliyun ``SMS_…``) or id (Tencent)."""
    params: dict[str, str]
    """Aliyun: the TemplateParam object; Tencent: ``{"1": …, "2": …}`` for the template's ``{1}``, ``{2}``."""
    text: str
    """The rendered message, ``【sign name】`` first."""
    message_id: str
    """Aliyun ``BizId`` or Tencent ``SerialNo``."""


class InboxEntry(msgspec.Struct, rename="camel", kw_only=True):
    seq: int
    at: datetime
    message: SmsMessage


class InboxOut(msgspec.Struct, rename="camel", kw_only=True):
    phone: str
    messages: list[InboxEntry]
    """Newest first."""


class FlowLimit(msgspec.Struct, frozen=True, kw_only=True):
    """At most ``count`` messages to one number within ``window_seconds`` of shared-clock time."""

    window_seconds: float
    count: int
    code: str
    message: str


class _SmsSimulator(Simulator):
    """What both vendors share: balance, per-number flow control and the inbox."""

    provider: str

    def __init__(
        self,
        *,
        sign_names: Collection[str],
        templates: Mapping[str, str],
        limits: Sequence[FlowLimit],
        balance: int | None,
        skew_seconds: float,
        name: str | None,
    ) -> None:
        super().__init__(name=name)
        if not sign_names or not templates:
            raise ValueError("an SMS simulator needs at least one sign name and one template")
        self.sign_names = frozenset(sign_names)
        self.templates = dict(templates)
        """Template code or id -> template text."""
        self.limits = list(limits)
        self.initial_balance = balance
        self.balance = balance
        """Messages left; ``None``: unlimited. Reset to ``initial_balance`` by seeding."""
        self.skew = timedelta(seconds=skew_seconds)
        self._sent: dict[str, deque[datetime]] = {}

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        return [read_inbox]

    def seed(self, seed: int) -> None:
        self.balance = self.initial_balance
        self._sent.clear()

    def now(self) -> datetime:
        return self.ctx.clock.now()

    def request_id(self) -> str:
        value = f"{self.ctx.random.getrandbits(128):032x}"
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"

    def flow_limit_hit(self, phone: str) -> FlowLimit | None:
        """The first per-number limit a new message to ``phone`` would exceed."""
        sent = self._sent.get(phone)
        if not sent:
            return None
        now = self.now()
        horizon = max((limit.window_seconds for limit in self.limits), default=0.0)
        while sent and (now - sent[0]).total_seconds() >= horizon:
            sent.popleft()
        for limit in self.limits:
            recent = sum(1 for at in sent if (now - at).total_seconds() < limit.window_seconds)
            if recent >= limit.count:
                return limit
        return None

    def deliver(self, phone: str, sign_name: str, template: str, params: dict[str, str], message_id: str) -> None:
        text = f"【{sign_name}】{self.render(self.templates[template], params)}"
        message = SmsMessage(
            provider=self.provider,
            phone=phone,
            sign_name=sign_name,
            template=template,
            params=params,
            text=text,
            message_id=message_id,
        )
        self.ctx.recorder.record_message(INBOX, message)
        self._sent.setdefault(phone, deque()).append(self.now())
        if self.balance is not None:
            self.balance -= 1

    @abc.abstractmethod
    def render(self, template: str, params: Mapping[str, str]) -> str:
        """The template text with its placeholders filled in."""

    def inbox(self, phone: str, limit: int) -> list[InboxEntry]:
        entries: list[InboxEntry] = []
        for record in reversed(self.ctx.recorder.entries(INBOX)):
            data = record.data if isinstance(record, MessageRecord) else None
            if isinstance(data, SmsMessage) and data.phone == phone:
                entries.append(InboxEntry(seq=record.seq, at=record.at, message=data))
                if len(entries) >= limit:
                    break
        return entries


@get("/test/inbox")
async def read_inbox(
    phone: FromQuery[str],
    simulator: NamedDependency[_SmsSimulator],
    limit: Annotated[int, QueryParameter(ge=1, le=100)] = 10,
) -> InboxOut:
    """The latest messages delivered to ``phone``, newest first (a sandbox aid, not a vendor API)."""
    number = mainland_number(phone) or phone
    return InboxOut(phone=number, messages=simulator.inbox(number, limit))


# --- Aliyun ------------------------------------------------------------------------------------------------

ALIYUN_COMMON_PARAMS = (
    "AccessKeyId",
    "Action",
    "Signature",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureVersion",
    "Timestamp",
    "Version",
)
_ALIYUN_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


class AliyunError(Exception):
    """An Aliyun answer other than ``OK``: HTTP status, ``Code`` and ``Message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message


def aliyun_percent_encode(value: str) -> str:
    """Aliyun POP percentEncode: RFC 3986 over UTF-8 (``%20`` for space, ``%2A`` for ``*``, ``~`` kept)."""
    return quote(value, safe="-_.~")


def aliyun_v1_signature(method: str, params: Mapping[str, str], secret: str) -> str:
    """Aliyun RPC signature V1, as the gateway computes it over the parameters it received."""
    canonical = "&".join(
        f"{aliyun_percent_encode(k)}={aliyun_percent_encode(v)}" for k, v in sorted(params.items()) if k != "Signature"
    )
    to_sign = f"{method}&{aliyun_percent_encode('/')}&{aliyun_percent_encode(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class AliyunSmsSimulator(_SmsSimulator):
    """Aliyun dysmsapi: ``SendSms`` (Version 2017-05-25) under RPC signature V1.

    Answers, like the vendor: ``Missing<Param>``, ``InvalidAccessKeyId.NotFound``, ``SignatureDoesNotMatch``,
    ``InvalidTimeStamp.Format``/``.Expired`` (more than ``skew_seconds`` off the shared clock),
    ``SignatureNonceUsed``, then with HTTP 200 ``isv.SMS_SIGNATURE_ILLEGAL``, ``isv.SMS_TEMPLATE_ILLEGAL``,
    ``isv.INVALID_JSON_PARAM``, ``isv.TEMPLATE_MISSING_PARAMETERS``, ``isv.MOBILE_NUMBER_ILLEGAL``,
    ``isv.BUSINESS_LIMIT_CONTROL`` (per number: ``per_minute``, ``per_hour``, ``per_day``) and
    ``isv.AMOUNT_NOT_ENOUGH``. Templates are ``{code: text}`` with ``${name}`` placeholders.
    """

    name = "aliyun-sms"
    provider = "aliyun"

    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        sign_names: Collection[str],
        templates: Mapping[str, str],
        per_minute: int | None = 5,
        per_hour: int | None = None,
        per_day: int | None = None,
        balance: int | None = None,
        skew_seconds: float = 15 * 60,
        name: str | None = None,
    ) -> None:
        limits = [
            FlowLimit(window_seconds=window, count=count, code="isv.BUSINESS_LIMIT_CONTROL", message=f"{text}:{count}")
            for window, count, text in (
                (60.0, per_minute, "触发分钟级流控Permits"),
                (3600.0, per_hour, "触发小时级流控Permits"),
                (86400.0, per_day, "触发天级流控Permits"),
            )
            if count is not None
        ]
        super().__init__(
            sign_names=sign_names,
            templates=templates,
            limits=limits,
            balance=balance,
            skew_seconds=skew_seconds,
            name=name,
        )
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self._nonces: deque[tuple[datetime, str]] = deque()
        self._nonce_set: set[str] = set()

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        return [aliyun_rpc_get, aliyun_rpc_post, read_inbox]

    def seed(self, seed: int) -> None:
        super().seed(seed)
        self._nonces.clear()
        self._nonce_set.clear()

    def render(self, template: str, params: Mapping[str, str]) -> str:
        return _ALIYUN_PLACEHOLDER.sub(lambda match: params.get(match.group(1), match.group(0)), template)

    def handle(self, method: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """One RPC call: the HTTP status and the answer's fields."""
        request_id = self.request_id()
        try:
            answer = self._send_sms(method, params)
        except AliyunError as error:
            body: dict[str, Any] = {"RequestId": request_id, "Code": error.code, "Message": error.message}
            if error.status != 200:
                body["HostId"] = "dysmsapi.aliyuncs.com"
                body["Recommend"] = f"https://api.aliyun.com/troubleshoot?q={error.code}"
            return error.status, body
        return 200, {"RequestId": request_id, **answer}

    def _authenticate(self, method: str, params: dict[str, str]) -> None:
        for param in ALIYUN_COMMON_PARAMS:
            if not params.get(param):
                raise AliyunError(400, f"Missing{param}", f"{param} is mandatory for this action.")
        if params["Action"] != "SendSms":
            raise AliyunError(404, "InvalidAction.NotFound", "Specified api is not found, please check your url.")
        if params["Version"] != "2017-05-25":
            raise AliyunError(400, "InvalidVersion", "Specified parameter Version is not valid.")
        if params["AccessKeyId"] != self.access_key_id:
            raise AliyunError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if params["SignatureMethod"] != "HMAC-SHA1":
            raise AliyunError(400, "InvalidSignatureMethod", "Specified signature method is not supported.")
        if params["SignatureVersion"] != "1.0":
            raise AliyunError(400, "InvalidSignatureVersion", "Specified signature version is not supported.")
        expected = aliyun_v1_signature(method, params, self.access_key_secret)
        if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
            raise AliyunError(400, "SignatureDoesNotMatch", "Specified signature does not match our calculation.")
        try:
            stamp = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise AliyunError(
                400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."
            ) from None
        now = self.now()
        if abs(now - stamp) > self.skew:
            raise AliyunError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        while self._nonces and now - self._nonces[0][0] > 2 * self.skew:
            self._nonce_set.discard(self._nonces.popleft()[1])
        nonce = params["SignatureNonce"]
        if nonce in self._nonce_set:
            raise AliyunError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        self._nonces.append((now, nonce))
        self._nonce_set.add(nonce)

    def _send_sms(self, method: str, params: dict[str, str]) -> dict[str, Any]:
        self._authenticate(method, params)
        for param in ("PhoneNumbers", "SignName", "TemplateCode"):
            if not params.get(param):
                raise AliyunError(400, f"Missing{param}", f"{param} is mandatory for this action.")
        if params["SignName"] not in self.sign_names:
            raise AliyunError(200, "isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        template = params["TemplateCode"]
        if template not in self.templates:
            raise AliyunError(200, "isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        template_params = self._template_params(params.get("TemplateParam"))
        missing = set(_ALIYUN_PLACEHOLDER.findall(self.templates[template])) - template_params.keys()
        if missing:
            raise AliyunError(200, "isv.TEMPLATE_MISSING_PARAMETERS", "模板变量缺少对应参数值")
        raw_numbers = params["PhoneNumbers"].split(",")
        if len(raw_numbers) > 1000:
            raise AliyunError(200, "isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制，最多支持1000条")
        numbers = [mainland_number(number) for number in raw_numbers]
        phones = [number for number in numbers if number is not None]
        if len(phones) != len(numbers):
            raise AliyunError(200, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        for phone in phones:
            limit = self.flow_limit_hit(phone)
            if limit is not None:
                raise AliyunError(200, limit.code, limit.message)
        if self.balance is not None and self.balance < len(phones):
            raise AliyunError(200, "isv.AMOUNT_NOT_ENOUGH", "账户余额不足")
        biz_id = f"{self.ctx.random.randrange(10**17, 10**18)}^0"
        for phone in phones:
            self.deliver(phone, params["SignName"], template, template_params, biz_id)
        return {"Code": "OK", "Message": "OK", "BizId": biz_id}

    @staticmethod
    def _template_params(raw: str | None) -> dict[str, str]:
        """``TemplateParam``: a JSON object of string values (``isv.INVALID_JSON_PARAM`` otherwise)."""
        if raw is None or raw == "":
            return {}
        try:
            decoded: Any = json.loads(raw)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict) or not all(isinstance(v, str) for v in decoded.values()):
            raise AliyunError(200, "isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        return {str(k): v for k, v in decoded.items()}


def _form(text: str) -> dict[str, str]:
    return dict(parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict"))


def _aliyun_response(simulator: AliyunSmsSimulator, method: str, params: dict[str, str]) -> Response[Any]:
    status, body = simulator.handle(method, params)
    if params.get("Format", "XML").upper() == "JSON":
        return Response(content=body, status_code=status, media_type="application/json")
    root = "SendSmsResponse" if status == 200 and body.get("Code") == "OK" else "Error"
    fields = "".join(f"<{key}>{escape(str(value))}</{key}>" for key, value in body.items())
    xml = f'<?xml version="1.0" encoding="UTF-8"?><{root}>{fields}</{root}>'
    return Response(content=xml, status_code=status, media_type="text/xml")


def _bad_encoding(simulator: AliyunSmsSimulator) -> Response[Any]:
    body = {"RequestId": simulator.request_id(), "Code": "InvalidParameter", "Message": "The request is not UTF-8."}
    return Response(content=body, status_code=400, media_type="application/json")


@get("/")
async def aliyun_rpc_get(
    request: Request[Any, Any, Any], simulator: NamedDependency[AliyunSmsSimulator]
) -> Response[Any]:
    """An RPC call with every parameter in the query string (signed with ``GET``)."""
    try:
        params = _form(request.scope["query_string"].decode("latin-1"))
    except UnicodeDecodeError:
        return _bad_encoding(simulator)
    return _aliyun_response(simulator, "GET", params)


@post("/")
async def aliyun_rpc_post(
    request: Request[Any, Any, Any], simulator: NamedDependency[AliyunSmsSimulator]
) -> Response[Any]:
    """An RPC call with parameters in the query string and/or a form body (signed with ``POST``)."""
    try:
        params = _form(request.scope["query_string"].decode("latin-1"))
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            params.update(_form((await request.body()).decode("utf-8")))
    except UnicodeDecodeError:
        return _bad_encoding(simulator)
    return _aliyun_response(simulator, "POST", params)


# --- Tencent Cloud -----------------------------------------------------------------------------------------

TENCENT_REGIONS = frozenset({"ap-guangzhou", "ap-beijing", "ap-nanjing"})
_TENCENT_PLACEHOLDER = re.compile(r"\{(\d+)\}")
_TC3_AUTHORIZATION = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<secret_id>[^/\s]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[a-z0-9]+)"
    r"/tc3_request, ?SignedHeaders=(?P<signed>[a-z0-9\-;]+), ?Signature=(?P<signature>[0-9a-f]{64})$"
)


class TencentError(Exception):
    """A request-level Tencent Cloud API error (answered with HTTP 200 and ``Response.Error``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


def tc3_expected_signature(
    *,
    secret_key: str,
    date: str,
    service: str,
    timestamp: str,
    signed_headers: Sequence[str],
    headers: Mapping[str, str],
    query: str,
    body: bytes,
) -> str:
    """TC3-HMAC-SHA256 as the API gateway recomputes it: the canonical request over the headers the client
    listed in SignedHeaders, with the values it actually sent (trimmed, lowercased)."""
    canonical_headers = "".join(f"{name}:{headers.get(name, '').strip().lower()}\n" for name in signed_headers)
    canonical = "\n".join(
        ["POST", "/", query, canonical_headers, ";".join(signed_headers), hashlib.sha256(body).hexdigest()]
    )
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(["TC3-HMAC-SHA256", timestamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"TC3{secret_key}".encode()
    for part in (date, service, "tc3_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


class TencentSmsSimulator(_SmsSimulator):
    """Tencent Cloud SMS: ``SendSms`` (X-TC-Version 2021-01-11) under TC3-HMAC-SHA256.

    Request-level errors (HTTP 200, ``Response.Error``): ``MissingParameter``, ``InvalidAction``,
    ``NoSuchVersion``, ``UnsupportedRegion``, ``AuthFailure.InvalidAuthorization``,
    ``AuthFailure.SecretIdNotFound``, ``AuthFailure.SignatureExpire`` (more than ``skew_seconds`` off the
    shared clock), ``AuthFailure.SignatureFailure``, ``InvalidParameterValue.SdkAppIdNotExist``,
    ``FailedOperation.SignatureIncorrectOrUnapproved``, ``FailedOperation.TemplateIncorrectOrUnapproved``,
    ``FailedOperation.TemplateParamSetNotMatchApprovedTemplate``,
    ``FailedOperation.InsufficientBalanceInSmsPackage``. Per number, in ``SendStatusSet``: ``Ok``,
    ``InvalidParameterValue.IncorrectPhoneNumber``, ``FailedOperation.PhoneNumberInBlacklist``,
    ``LimitExceeded.PhoneNumberThirtySecondLimit``/``OneHourLimit``/``DailyLimit``.
    Templates are ``{id: text}`` with ``{1}``, ``{2}`` placeholders.
    """

    name = "tencent-sms"
    provider = "tencent"

    def __init__(
        self,
        *,
        secret_id: str,
        secret_key: str,
        sdk_app_id: str,
        sign_names: Collection[str],
        templates: Mapping[str, str],
        per_thirty_seconds: int | None = None,
        per_hour: int | None = 5,
        per_day: int | None = 10,
        blacklist: Collection[str] = (),
        balance: int | None = None,
        skew_seconds: float = 5 * 60,
        name: str | None = None,
    ) -> None:
        limits = [
            FlowLimit(window_seconds=window, count=count, code=code, message=text)
            for window, count, code, text in (
                (
                    30.0,
                    per_thirty_seconds,
                    "LimitExceeded.PhoneNumberThirtySecondLimit",
                    "单个手机号30秒内下发短信条数超过设定的上限",
                ),
                (
                    3600.0,
                    per_hour,
                    "LimitExceeded.PhoneNumberOneHourLimit",
                    "单个手机号1小时内下发短信条数超过设定的上限",
                ),
                (86400.0, per_day, "LimitExceeded.PhoneNumberDailyLimit", "单个手机号日下发短信条数超过设定的上限"),
            )
            if count is not None
        ]
        super().__init__(
            sign_names=sign_names,
            templates=templates,
            limits=limits,
            balance=balance,
            skew_seconds=skew_seconds,
            name=name,
        )
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.sdk_app_id = sdk_app_id
        self.blacklist = {mainland_number(number) or number for number in blacklist}

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        return [tencent_api, read_inbox]

    def render(self, template: str, params: Mapping[str, str]) -> str:
        return _TENCENT_PLACEHOLDER.sub(lambda match: params.get(match.group(1), match.group(0)), template)

    def handle(self, headers: Mapping[str, str], query: str, body: bytes) -> dict[str, Any]:
        """One API 3.0 call: the whole ``{"Response": …}`` answer."""
        request_id = self.request_id()
        try:
            answer = self._send_sms(headers, query, body)
        except TencentError as error:
            return {"Response": {"Error": {"Code": error.code, "Message": error.message}, "RequestId": request_id}}
        return {"Response": {**answer, "RequestId": request_id}}

    def _authenticate(self, headers: Mapping[str, str], query: str, body: bytes) -> None:
        for header in ("x-tc-action", "x-tc-version", "x-tc-timestamp", "authorization"):
            if not headers.get(header):
                raise TencentError("MissingParameter", f"The request is missing a required parameter `{header}`.")
        if headers["x-tc-action"] != "SendSms":
            raise TencentError("InvalidAction", f"The action `{headers['x-tc-action']}` is not supported.")
        if headers["x-tc-version"] != "2021-01-11":
            raise TencentError("NoSuchVersion", "The requested version does not exist.")
        if headers.get("x-tc-region", "") not in TENCENT_REGIONS:
            raise TencentError("UnsupportedRegion", "The region is not supported by this API.")
        credential = _TC3_AUTHORIZATION.match(headers["authorization"])
        if credential is None:
            raise TencentError("AuthFailure.InvalidAuthorization", "Authorization is not a valid TC3 header.")
        if credential["secret_id"] != self.secret_id:
            raise TencentError("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
        timestamp = headers["x-tc-timestamp"]
        if not timestamp.isdigit():
            raise TencentError("InvalidParameter", "X-TC-Timestamp must be a UNIX timestamp in seconds.")
        sent_at = datetime.fromtimestamp(int(timestamp), UTC)
        if abs(self.now() - sent_at) > self.skew:
            raise TencentError(
                "AuthFailure.SignatureExpire", "签名过期。Timestamp 和服务器时间相差不得超过五分钟，请检查本地时间"
            )
        if credential["date"] != sent_at.strftime("%Y-%m-%d") or credential["service"] != "sms":
            raise TencentError("AuthFailure.InvalidAuthorization", "Credential scope does not match the request.")
        signed = credential["signed"].split(";")
        if "content-type" not in signed or "host" not in signed or signed != sorted(signed):
            raise TencentError("AuthFailure.InvalidAuthorization", "SignedHeaders must list content-type and host.")
        if not all(name in headers for name in signed):
            raise TencentError("AuthFailure.InvalidAuthorization", "A signed header is missing from the request.")
        expected = tc3_expected_signature(
            secret_key=self.secret_key,
            date=credential["date"],
            service=credential["service"],
            timestamp=timestamp,
            signed_headers=signed,
            headers=headers,
            query=query,
            body=body,
        )
        if not hmac.compare_digest(expected, credential["signature"]):
            raise TencentError("AuthFailure.SignatureFailure", "请求签名验证失败，请检查您的签名计算是否正确。")

    def _send_sms(self, headers: Mapping[str, str], query: str, body: bytes) -> dict[str, Any]:
        self._authenticate(headers, query, body)
        try:
            request: Any = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            raise TencentError("InvalidParameter", "The request body is not a JSON object.")
        for field in ("PhoneNumberSet", "SmsSdkAppId", "SignName", "TemplateId"):
            if not request.get(field):
                raise TencentError("MissingParameter", f"The request is missing a required parameter `{field}`.")
        numbers = request["PhoneNumberSet"]
        params = request.get("TemplateParamSet") or []
        if not _string_list(numbers) or not _string_list(params):
            raise TencentError("InvalidParameter", "PhoneNumberSet and TemplateParamSet are lists of strings.")
        if len(numbers) > 200:
            raise TencentError("LimitExceeded.PhoneNumberCountLimit", "单次提交的手机号个数超过200个")
        if request["SmsSdkAppId"] != self.sdk_app_id:
            raise TencentError("InvalidParameterValue.SdkAppIdNotExist", "SdkAppId 不存在")
        if request["SignName"] not in self.sign_names:
            raise TencentError("FailedOperation.SignatureIncorrectOrUnapproved", "签名未审批或格式错误")
        template = request["TemplateId"]
        if template not in self.templates:
            raise TencentError("FailedOperation.TemplateIncorrectOrUnapproved", "模板未审批或内容不合规")
        placeholders = set(_TENCENT_PLACEHOLDER.findall(self.templates[template]))
        if len(params) != len(placeholders):
            raise TencentError(
                "FailedOperation.TemplateParamSetNotMatchApprovedTemplate", "请求内容与审核通过的模板内容不匹配"
            )
        if self.balance is not None and self.balance < len(numbers):
            raise TencentError("FailedOperation.InsufficientBalanceInSmsPackage", "套餐包余量不足")
        named = {str(index): value for index, value in enumerate(params, start=1)}
        context = request.get("SessionContext")
        session = context if isinstance(context, str) else ""
        return {
            "SendStatusSet": [
                self._send_one(number, request["SignName"], template, named, session) for number in numbers
            ]
        }

    def _send_one(
        self, number: str, sign_name: str, template: str, params: dict[str, str], session: str
    ) -> dict[str, Any]:
        status: dict[str, Any] = {
            "SerialNo": "",
            "PhoneNumber": number,
            "Fee": 0,
            "SessionContext": session,
            "Code": "Ok",
            "Message": "send success",
            "IsoCode": "CN",
        }
        phone = mainland_number(number) if number.startswith("+86") or not number.startswith("+") else None
        limit = self.flow_limit_hit(phone) if phone is not None else None
        if phone is None:
            status.update(Code="InvalidParameterValue.IncorrectPhoneNumber", Message="手机号格式错误", IsoCode="")
        elif phone in self.blacklist:
            status.update(Code="FailedOperation.PhoneNumberInBlacklist", Message="手机号在免打扰名单库中")
        elif limit is not None:
            status.update(Code=limit.code, Message=limit.message)
        else:
            serial = f"{self.ctx.random.randrange(1000, 10000)}:{self.ctx.random.randrange(10**26, 10**27)}"
            self.deliver(phone, sign_name, template, params, serial)
            status.update(SerialNo=serial, Fee=1)
        return status


def _string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


@post("/")
async def tencent_api(
    request: Request[Any, Any, Any], simulator: NamedDependency[TencentSmsSimulator]
) -> Response[Any]:
    """The API 3.0 endpoint: one POST with the action in ``X-TC-Action``; errors are HTTP 200 too."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    query = request.scope["query_string"].decode("latin-1")
    answer = simulator.handle(headers, query, await request.body())
    return Response(content=answer, status_code=200, media_type="application/json")
