"""Tencent Cloud FaceID (人脸核身, API 3.0 version 2018-03-01) simulator, playing the vendor for real-name checks.

It verifies TC3-HMAC-SHA256 over the ``Host`` it received (credential scope service ``faceid``) and the
timestamp against the shared clock (5 minutes), then answers from a *population registry*: the persons the
ID registry and the carriers know (name, citizen ID number, mobile number), seeded with ``DEMO_PERSONS`` and
extended with ``add_person`` or ``POST /test/persons``.

* ``IdCardVerification``: ``Result`` ``0`` 一致, ``-1`` 不一致, ``-2`` 非法身份证号 (length, birth date or check
  digit), ``-3`` 非法姓名, ``-4`` 证件库服务异常 (switch), ``-5`` 无此身份证记录, ``-7`` 当日次数超限 (switch).
* ``PhoneVerification``: ``0`` 一致, ``-4`` 不一致 (``ResultDetail`` with ``VerifyMode`` 1), ``-6`` 手机号码不合法,
  ``-7`` 身份证号码有误, ``-8`` 姓名校验不通过, ``-9`` 没有记录 (no person holds the number), ``-11`` 验证中心服务繁忙
  (switch), ``-12`` 当日次数超限 (switch), ``-13`` 号段不支持 (``unsupported_prefixes``); ``Isp`` from the prefix.
* ``DetectAuth`` opens a face flow (``RuleId`` must be configured; ``Name`` and ``IdCard`` required, as the
  flows are configured here): ``BizToken`` and a ``Url`` on the sandbox, valid ``token_ttl_seconds``.
  The resident (or a test) completes it on that page or with ``POST /test/face/{token}/complete``: a passing
  face still fails with ``2005`` (unknown ID), ``2006`` (name and ID disagree), ``2002``/``2003`` (malformed);
  a failing face gives ``2016``. ``GetDetectInfoEnhanced`` answers ``Text.ErrCode`` (``17`` 本次流程未完成 until
  then, ``15`` once the token expired unfinished), ``InvalidParameterValue.BizTokenIllegal`` for an unknown
  token and ``InvalidParameterValue.BizTokenExpired`` after 3 days.

Request-level errors (HTTP 200, ``Response.Error``): ``MissingParameter``, ``InvalidAction``, ``NoSuchVersion``,
``AuthFailure.InvalidAuthorization``, ``AuthFailure.SecretIdNotFound``, ``AuthFailure.SignatureExpire``,
``AuthFailure.SignatureFailure``, ``InvalidParameter``, ``InvalidParameterValue``,
``InvalidParameterValue.RuleIdNotExist``, and by switch ``RequestLimitExceeded`` and ``InternalError``.

Switches (``PUT /test/switches``, reset by seeding): ``requestLimitExceeded``, ``internalError``,
``serverError`` (HTTP 502), ``registryUnavailable``, ``dailyLimitPerId``. Timeouts and other HTTP errors come
from the framework's fault plan (``PUT /sandbox/admin/tencent-faceid/faults``).

Every API call is recorded in the ``calls`` stream (action, request id, result, the masked ID number, the
face token), so tests can count calls; the bodies the framework recorded in the ``requests`` stream have their
``IdCard``, ``Name`` and ``Phone`` masked as soon as the call is handled. No clear ID number is kept in any
recording.

Routes, relative to ``/sandbox/tencent-faceid``: ``POST /`` (the API), ``GET``/``POST /face/{token}`` (the
face-check page ``DetectAuth`` links to), ``POST /test/persons``, ``POST /test/face/{token}/complete``,
``GET``/``PUT /test/switches``.
"""

from __future__ import annotations

import hmac
import html
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
from litestar import Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath, JSONBody
from litestar.types import ControllerRouterHandler

from domain.identity.masking import mask_id_number, mask_name, mask_phone
from domain.kernel.clock import SHANGHAI
from sandbox.framework import REQUESTS, MessageRecord, RequestRecord, Simulator
from sandbox.sms import TencentError, mainland_number, tc3_expected_signature

SERVICE = "faceid"
VERSION = "2018-03-01"
ACTIONS = frozenset({"IdCardVerification", "PhoneVerification", "DetectAuth", "GetDetectInfoEnhanced"})
CALLS = "calls"
"""The recorder stream every API call goes to."""
DEMO_RULE_ID = "1"
RESULT_RETENTION = timedelta(days=3)
"""``GetDetectInfoEnhanced``: a BizToken's result can be fetched for three days."""

_TC3_AUTHORIZATION = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<secret_id>[^/\s]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[a-z0-9]+)"
    r"/tc3_request, ?SignedHeaders=(?P<signed>[a-z0-9\-;]+), ?Signature=(?P<signature>[0-9a-f]{64})$"
)
_ID_NUMBER = re.compile(r"^\d{17}[\dX]$")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_NAME = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff·•]{2,32}$")
_MASKS: Final[Mapping[str, Mapping[str, Callable[[str], str]]]] = {
    "/": {"IdCard": mask_id_number, "Name": mask_name, "Phone": mask_phone},
    "/test/persons": {"idNumber": mask_id_number, "name": mask_name, "phone": mask_phone},
}
"""Per simulator path, the JSON body fields masked in the framework's recording of the request."""

_ISP_PREFIXES: Final[Mapping[str, tuple[str, ...]]] = {
    "移动": (
        "134", "135", "136", "137", "138", "139", "147", "150", "151", "152", "157", "158", "159",
        "172", "178", "182", "183", "184", "187", "188", "195", "197", "198",
    ),
    "联通": ("130", "131", "132", "145", "155", "156", "166", "175", "176", "185", "186", "196"),
    "电信": ("133", "149", "153", "173", "177", "180", "181", "189", "190", "191", "193", "199"),
}  # fmt: skip
VIRTUAL_OPERATOR_PREFIXES = ("162", "165", "167", "170", "171")
"""Mobile virtual network operators' ranges, which the three-factor check does not cover by default."""

ID_CARD_DESCRIPTIONS: Final[Mapping[str, str]] = {
    "0": "姓名和身份证号一致",
    "-1": "姓名和身份证号不一致",
    "-2": "非法身份证号(长度、校验位等不正确)",
    "-3": "非法姓名(长度、格式等不正确)",
    "-4": "证件库服务异常",
    "-5": "证件库中无此身份证记录",
    "-7": "认证次数超过当日限制",
}
PHONE_DESCRIPTIONS: Final[Mapping[str, str]] = {
    "0": "认证通过",
    "-4": "三要素信息不一致",
    "-6": "手机号码不合法",
    "-7": "身份证号码有误",
    "-8": "姓名校验不通过",
    "-9": "没有记录",
    "-11": "验证中心服务繁忙",
    "-12": "认证次数超过当日限制，请次日重试",
    "-13": "该号段不支持验证",
}
FACE_MESSAGES: Final[Mapping[int, str]] = {
    0: "成功",
    15: "Token 过期，请重试",
    16: "已达到重试上限",
    17: "本次流程未完成",
    1001: "引擎超时，请稍后重试",
    1002: "疑似非真人录制",
    1003: "人脸识别验证未成功，请重试",
    1004: "人脸验证失败，请重试",
    1005: "人脸验证失败，请重试",
    1006: "证照库出错，请重试",
    2001: "引擎超时，请稍后重试",
    2002: "姓名有误，请确认后重试",
    2003: "身份证号有误，请确认后重试",
    2004: "视频提取照片出错，请重试或更换手机进行验证",
    2005: "未查询到身份信息，请通过其他渠道验证",
    2006: "姓名和身份证号不匹配，请核实身份后重试",
    2007: "未查询到照片信息，请通过其他渠道验证",
    2016: "无法判断为同一人，请确认身份后重试(相似度未达到通过阈值)",
}
"""Face-check ``ErrCode`` values (Plus edition return codes) the simulator can produce."""
_UNFINISHED = frozenset({15, 17})


@dataclass(frozen=True, slots=True)
class Person:
    """One person of the population registry: the ID registry's record and, with ``phone``, the carrier's."""

    name: str
    id_number: str
    phone: str | None = None

    def __repr__(self) -> str:
        phone = mask_phone(self.phone) if self.phone else None
        return f"Person({mask_name(self.name)!r}, {mask_id_number(self.id_number)!r}, {phone!r})"


DEMO_PERSONS: Final = (
    Person(name="张三", id_number="110101199003070011", phone="13800000001"),
    Person(name="李四", id_number="44030519850615002X", phone="13600000002"),
    Person(name="王小明", id_number="310104197211200033", phone="18600000003"),
    Person(name="司马小芳", id_number="510107199801010040", phone="17000000004"),
    Person(name="赵六", id_number="330106198808080055"),
    Person(name="张小明", id_number="110101201905200022"),
    Person(name="李秀兰", id_number="440305195810010044", phone="13900000006"),
)
"""Fictitious residents the demo can verify; ``司马小芳``'s number is in an unsupported (virtual operator) range
and ``赵六`` has no mobile number on record."""


def valid_id_number(value: str) -> bool:
    """An 18-character citizen ID number: 17 digits, a real birth date and the ISO 7064 MOD 11-2 check digit."""
    if not _ID_NUMBER.match(value):
        return False
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    total = sum(int(digit) * weight for digit, weight in zip(value[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == value[17]


def valid_name(value: str) -> bool:
    return bool(_NAME.match(value))


def isp_of(phone: str) -> str:
    return next((isp for isp, prefixes in _ISP_PREFIXES.items() if phone.startswith(prefixes)), "")


def _normal_id(value: str) -> str:
    return value.strip().upper()


def _mask_fields(data: Mapping[str, Any], masks: Mapping[str, Callable[[str], str]]) -> dict[str, Any]:
    """``data`` with the fields of ``masks`` masked (masking is idempotent)."""
    return {key: masks[key](value) if key in masks and isinstance(value, str) else value for key, value in data.items()}


class FaceIdSwitches(msgspec.Struct, rename="camel", frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The simulator's fault switches, as set by ``PUT /test/switches``."""

    request_limit_exceeded: bool = False
    """Every API call answers ``Error`` ``RequestLimitExceeded``."""
    internal_error: bool = False
    """Every API call answers ``Error`` ``InternalError``."""
    server_error: bool = False
    """Every API call answers HTTP 502 (recorded and masked like any other call)."""
    registry_unavailable: bool = False
    """The authorities are down: ``Result`` ``-4`` (two factors), ``-11`` (three factors), face ``ErrCode`` 1006."""
    daily_limit_per_id: int | None = None
    """At most this many two- and three-factor checks per ID number per China day; then ``-7`` / ``-12``."""


NO_SWITCHES = FaceIdSwitches()


class FaceIdCall(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    """One API call, as recorded in the ``calls`` stream."""

    action: str
    request_id: str
    result: str
    """``Result``, ``ErrCode <n>``, ``BizToken``, ``Error <Code>`` or ``HTTP <status>``."""
    id_number: str | None = None
    """Masked (``110***********0011``)."""
    biz_token: str | None = None


@dataclass(slots=True)
class _FaceFlow:
    token: str
    rule_id: str
    name: str
    id_number: str
    redirect_url: str | None
    extra: str | None
    created_at: datetime
    err_code: int | None = None
    """``None`` until the resident finished."""

    def __repr__(self) -> str:
        return f"_FaceFlow({self.token!r}, err_code={self.err_code!r})"


class FaceFlowError(Exception):
    """The face flow cannot be completed: ``status`` 404 (unknown token) or 409 (finished, expired)."""

    def __init__(self, status: int, err_code: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.err_code = err_code
        self.message = message


class TencentFaceIdSimulator(Simulator):
    """Tencent Cloud FaceID: ``IdCardVerification``, ``PhoneVerification``, ``DetectAuth`` and
    ``GetDetectInfoEnhanced`` under TC3-HMAC-SHA256 (see the module text for the behaviour)."""

    name = "tencent-faceid"

    def __init__(
        self,
        *,
        secret_id: str,
        secret_key: str,
        rule_ids: Collection[str] = (DEMO_RULE_ID,),
        persons: Sequence[Person] = DEMO_PERSONS,
        unsupported_prefixes: Collection[str] = VIRTUAL_OPERATOR_PREFIXES,
        token_ttl_seconds: float = 7200,
        skew_seconds: float = 5 * 60,
        page_base_url: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if not secret_id or not secret_key:
            raise ValueError("the FaceID simulator needs a SecretId and a SecretKey")
        if not rule_ids:
            raise ValueError("the FaceID simulator needs at least one RuleId")
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.rule_ids = frozenset(rule_ids)
        self.initial_persons = tuple(persons)
        self.unsupported_prefixes = tuple(unsupported_prefixes)
        self.token_ttl = timedelta(seconds=token_ttl_seconds)
        self.skew = timedelta(seconds=skew_seconds)
        self.page_base_url = page_base_url.rstrip("/") if page_base_url else None
        """Where the face page is served (``…/sandbox/tencent-faceid``); default: derived from each request."""
        self.switches = NO_SWITCHES
        self._by_id: dict[str, Person] = {}
        self._by_phone: dict[str, Person] = {}
        self._flows: dict[str, _FaceFlow] = {}
        self._daily: dict[tuple[str, date], int] = {}
        self._load_persons()

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        return [faceid_api, face_page, face_submit, add_person, complete_face, read_switches, replace_switches]

    def seed(self, seed: int) -> None:
        self.switches = NO_SWITCHES
        self._flows.clear()
        self._daily.clear()
        self._load_persons()

    def _load_persons(self) -> None:
        self._by_id.clear()
        self._by_phone.clear()
        for person in self.initial_persons:
            self.add_person(person.name, person.id_number, person.phone)

    # --- the population registry ------------------------------------------------------------------------

    def add_person(self, name: str, id_number: str, phone: str | None = None) -> tuple[Person, bool]:
        """Add a person to the registry, or replace the one with that ID number; True when replaced."""
        number = _normal_id(id_number)
        if not valid_id_number(number):
            raise ValueError("not a valid citizen ID number")
        if not valid_name(name.strip()):
            raise ValueError("not a valid name")
        mobile = mainland_number(phone) if phone else None
        if phone and mobile is None:
            raise ValueError("not a mainland mobile number")
        old = self._by_id.pop(number, None)
        if old is not None and old.phone:
            self._by_phone.pop(old.phone, None)
        person = Person(name=name.strip(), id_number=number, phone=mobile)
        if mobile:
            holder = self._by_phone.get(mobile)
            if holder is not None:  # a number has one holder: it moves to the new person
                self._by_id[holder.id_number] = Person(name=holder.name, id_number=holder.id_number)
            self._by_phone[mobile] = person
        self._by_id[number] = person
        return person, old is not None

    def person(self, id_number: str) -> Person | None:
        return self._by_id.get(_normal_id(id_number))

    # --- calls --------------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.ctx.clock.now()

    def request_id(self) -> str:
        value = f"{self.ctx.random.getrandbits(128):032x}"
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"

    def calls(self, action: str | None = None) -> list[FaceIdCall]:
        """The recorded API calls, oldest first; with ``action``, only that action's."""
        entries = [r.data for r in self.ctx.recorder.entries(CALLS) if isinstance(r, MessageRecord)]
        return [c for c in entries if isinstance(c, FaceIdCall) and (action is None or c.action == action)]

    def handle(self, headers: Mapping[str, str], query: str, body: bytes, *, page_base: str) -> tuple[int, Any]:
        """One API 3.0 call: the HTTP status and the ``{"Response": …}`` answer (or a plain-text error)."""
        request_id = self.request_id()
        action = headers.get("x-tc-action", "")
        request: dict[str, Any] = {}
        status, answer = 200, None
        try:
            self._authenticate(headers, query, body)
            request = self._decode(body)
            if self.switches.server_error:
                status = 502
            elif self.switches.request_limit_exceeded:
                raise TencentError("RequestLimitExceeded", "请求的次数超过了频率限制。")
            elif self.switches.internal_error:
                raise TencentError("InternalError", "内部错误。")
            else:
                answer = self._dispatch(action, request, page_base)
        except TencentError as error:
            answer = {"Error": {"Code": error.code, "Message": error.message}}
        self._record_call(action, request_id, request, status, answer)
        self.redact_recorded_requests()
        if status != 200 or answer is None:
            return status, "502 Bad Gateway"
        return 200, {"Response": {**answer, "RequestId": request_id}}

    def _record_call(
        self, action: str, request_id: str, request: Mapping[str, Any], status: int, answer: Mapping[str, Any] | None
    ) -> None:
        if status != 200 or answer is None:
            result = f"HTTP {status}"
        elif isinstance(answer.get("Error"), dict):
            result = f"Error {answer['Error']['Code']}"
        elif "Result" in answer:
            result = str(answer["Result"])
        elif isinstance(answer.get("Text"), dict):
            result = f"ErrCode {answer['Text']['ErrCode']}"
        else:
            result = "BizToken"
        id_number = request.get("IdCard")
        token = request.get("BizToken") or (answer or {}).get("BizToken")
        self.ctx.recorder.record_message(
            CALLS,
            FaceIdCall(
                action=action if action in ACTIONS else "-",
                request_id=request_id,
                result=result,
                id_number=mask_id_number(id_number) if isinstance(id_number, str) else None,
                biz_token=token if isinstance(token, str) else None,
            ),
        )

    def redact_recorded_requests(self) -> int:
        """Mask names, ID numbers and phones in the request bodies the framework recorded (API calls, including
        those it answered with an injected fault without reaching the simulator, and ``/test/persons``);
        returns how many records changed."""
        changed = 0
        for record in self.ctx.recorder.entries(REQUESTS):
            masks = _MASKS.get(record.path) if isinstance(record, RequestRecord) else None
            if masks is None or not isinstance(record, RequestRecord) or record.body_encoding != "text":
                continue
            try:
                data: Any = json.loads(record.body)
            except ValueError:
                continue
            if not isinstance(data, dict):
                continue
            masked = _mask_fields(data, masks)
            if masked != data:
                record.body = json.dumps(masked, ensure_ascii=False, separators=(",", ":"))
                changed += 1
        return changed

    def _authenticate(self, headers: Mapping[str, str], query: str, body: bytes) -> None:
        for header in ("x-tc-action", "x-tc-version", "x-tc-timestamp", "authorization"):
            if not headers.get(header):
                raise TencentError("MissingParameter", f"The request is missing a required parameter `{header}`.")
        if headers["x-tc-action"] not in ACTIONS:
            raise TencentError("InvalidAction", f"The action `{headers['x-tc-action']}` is not supported.")
        if headers["x-tc-version"] != VERSION:
            raise TencentError("NoSuchVersion", "The requested version does not exist.")
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
        if credential["date"] != sent_at.strftime("%Y-%m-%d") or credential["service"] != SERVICE:
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

    @staticmethod
    def _decode(body: bytes) -> dict[str, Any]:
        try:
            request: Any = json.loads(body) if body.strip() else {}
        except ValueError:
            request = None
        if not isinstance(request, dict):
            raise TencentError("InvalidParameter", "The request body is not a JSON object.")
        return request

    @staticmethod
    def _strings(request: Mapping[str, Any], *fields: str) -> list[str]:
        values = []
        for field in fields:
            value = request.get(field)
            if value is None or value == "":
                raise TencentError("MissingParameter", f"The request is missing a required parameter `{field}`.")
            if not isinstance(value, str):
                raise TencentError("InvalidParameter", f"The parameter `{field}` must be a string.")
            values.append(value)
        return values

    def _dispatch(self, action: str, request: Mapping[str, Any], page_base: str) -> dict[str, Any]:
        if action == "IdCardVerification":
            return self._id_card_verification(request)
        if action == "PhoneVerification":
            return self._phone_verification(request)
        if action == "DetectAuth":
            return self._detect_auth(request, page_base)
        return self._get_detect_info(request)

    def _over_daily_limit(self, id_number: str) -> bool:
        limit = self.switches.daily_limit_per_id
        if limit is None:
            return False
        key = (id_number, self.now().astimezone(SHANGHAI).date())
        used = self._daily.get(key, 0)
        if used >= limit:
            return True
        self._daily[key] = used + 1
        return False

    def _id_card_verification(self, request: Mapping[str, Any]) -> dict[str, Any]:
        raw_id, raw_name = self._strings(request, "IdCard", "Name")
        id_number, name = _normal_id(raw_id), raw_name.strip()
        if not valid_id_number(id_number):
            result = "-2"
        elif not valid_name(name):
            result = "-3"
        elif self.switches.registry_unavailable:
            result = "-4"
        elif self._over_daily_limit(id_number):
            result = "-7"
        elif (person := self._by_id.get(id_number)) is None:
            result = "-5"
        else:
            result = "0" if person.name == name else "-1"
        return {"Result": result, "Description": ID_CARD_DESCRIPTIONS[result]}

    def _phone_verification(self, request: Mapping[str, Any]) -> dict[str, Any]:
        raw_id, raw_name, raw_phone = self._strings(request, "IdCard", "Name", "Phone")
        mode = request.get("VerifyMode", "0")
        if mode not in ("0", "1"):
            raise TencentError("InvalidParameterValue", "VerifyMode 取值为 0（简版）或 1（详版）。")
        id_number, name, phone = _normal_id(raw_id), raw_name.strip(), mainland_number(raw_phone)
        detail = ""
        if phone is None:
            result = "-6"
        elif not valid_id_number(id_number):
            result = "-7"
        elif not valid_name(name):
            result = "-8"
        elif phone.startswith(self.unsupported_prefixes):
            result = "-13"
        elif self.switches.registry_unavailable:
            result = "-11"
        elif self._over_daily_limit(id_number):
            result = "-12"
        elif (holder := self._by_phone.get(phone)) is None:
            result = "-9"
        else:
            name_ok, id_ok = holder.name == name, holder.id_number == id_number
            result = "0" if name_ok and id_ok else "-4"
            if result == "-4" and mode == "1":
                detail = (
                    "PhoneIdCardMismatch" if name_ok else "PhoneNameMismatch" if id_ok else "PhoneNameIdCardMismatch"
                )
        return {
            "Result": result,
            "Description": PHONE_DESCRIPTIONS[result],
            "Isp": isp_of(phone) if phone else "",
            "ResultDetail": detail,
        }

    def _rule(self, request: Mapping[str, Any]) -> str:
        (rule_id,) = self._strings(request, "RuleId")
        if rule_id not in self.rule_ids:
            raise TencentError("InvalidParameterValue.RuleIdNotExist", "RuleId不存在，请到人脸核身控制台申请。")
        return rule_id

    def _detect_auth(self, request: Mapping[str, Any], page_base: str) -> dict[str, Any]:
        rule_id = self._rule(request)
        raw_id, raw_name = self._strings(request, "IdCard", "Name")
        redirect = request.get("RedirectUrl")
        if redirect is not None and (
            not isinstance(redirect, str) or len(redirect) > 1024 or urlsplit(redirect).scheme not in ("http", "https")
        ):
            raise TencentError("InvalidParameterValue", "RedirectUrl 须为 http(s) 地址，最长 1024 位。")
        extra = request.get("Extra")
        value = f"{self.ctx.random.getrandbits(128):032X}"
        token = f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
        self._flows[token] = _FaceFlow(
            token=token,
            rule_id=rule_id,
            name=raw_name.strip(),
            id_number=_normal_id(raw_id),
            redirect_url=redirect or None,
            extra=extra if isinstance(extra, str) else None,
            created_at=self.now(),
        )
        return {"Url": f"{self.page_base_url or page_base}/face/{token}", "BizToken": token}

    def _get_detect_info(self, request: Mapping[str, Any]) -> dict[str, Any]:
        (token,) = self._strings(request, "BizToken")
        self._rule(request)
        flow = self._flows.get(token)
        if flow is None:
            raise TencentError("InvalidParameterValue.BizTokenIllegal", "BizToken不合法。")
        age = self.now() - flow.created_at
        if age > RESULT_RETENTION:
            raise TencentError("InvalidParameterValue.BizTokenExpired", "BizToken过期。")
        code = flow.err_code
        if code is None:
            code = 15 if age > self.token_ttl else 17
        live = code if 1000 <= code < 2000 else (0 if code not in _UNFINISHED else None)
        compare = code if code >= 2000 else (0 if code == 0 else None)
        similarity = {0: "95.21", 2016: "41.37"}.get(code)
        text = {
            "ErrCode": code,
            "ErrMsg": FACE_MESSAGES.get(code, "人脸验证失败"),
            "IdCard": flow.id_number,
            "UseIDType": 0,
            "Name": flow.name,
            "IdInfoFrom": "其他",
            "LiveStatus": live,
            "LiveMsg": None if live is None else FACE_MESSAGES.get(live, "成功"),
            "Comparestatus": compare,
            "Comparemsg": None if compare is None else FACE_MESSAGES.get(compare, "成功"),
            "Sim": similarity,
            "Location": None,
            "Extra": flow.extra,
            "LivenessDetail": [],
            "Mobile": "",
            "CompareLibType": "权威库",
            "LivenessMode": 3 if code not in _UNFINISHED else None,
        }
        return {"Text": text, "IdCardData": None, "BestFrame": None, "VideoData": None, "Encryption": None}

    # --- the face page ------------------------------------------------------------------------------------

    def flow(self, token: str) -> _FaceFlow:
        flow = self._flows.get(token)
        if flow is None:
            raise FaceFlowError(404, None, "没有这个人脸核验流程")
        return flow

    def complete_face(self, token: str, *, passed: bool, err_code: int | None = None) -> _FaceFlow:
        """Finish a face flow as the resident's device would: ``passed`` says whether the face matched the
        registry photo; the registry still decides name and ID. ``err_code`` forces a ``FACE_MESSAGES`` code."""
        flow = self.flow(token)
        if flow.err_code is not None:
            raise FaceFlowError(409, 14, "本次校验已完成")
        if self.now() - flow.created_at > self.token_ttl:
            raise FaceFlowError(409, 15, FACE_MESSAGES[15])
        if err_code is not None:
            if err_code not in FACE_MESSAGES or err_code in _UNFINISHED:
                raise ValueError(f"not a completion ErrCode: {err_code}")
            flow.err_code = err_code
            return flow
        person = self._by_id.get(flow.id_number)
        if not valid_name(flow.name):
            flow.err_code = 2002
        elif not valid_id_number(flow.id_number):
            flow.err_code = 2003
        elif self.switches.registry_unavailable:
            flow.err_code = 1006
        elif person is None:
            flow.err_code = 2005
        elif person.name != flow.name:
            flow.err_code = 2006
        else:
            flow.err_code = 0 if passed else 2016
        return flow

    def back_to_caller(self, flow: _FaceFlow) -> str | None:
        """The caller's ``RedirectUrl`` with ``token=<BizToken>`` added, as the vendor's page redirects."""
        if flow.redirect_url is None:
            return None
        parts = urlsplit(flow.redirect_url)
        query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), ("token", flow.token)])
        return urlunsplit(parts._replace(query=query))


def _page_base(request: Request[Any, Any, Any]) -> str:
    """``<scheme>://<host>/sandbox/<name>`` from the API request (``POST /`` at the simulator's mount)."""
    return str(request.base_url).rstrip("/") + request.scope["path"].rstrip("/")


@post("/")
async def faceid_api(
    request: Request[Any, Any, Any], simulator: NamedDependency[TencentFaceIdSimulator]
) -> Response[Any]:
    """The API 3.0 endpoint: one POST with the action in ``X-TC-Action``; errors are HTTP 200 too."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    query = request.scope["query_string"].decode("latin-1")
    status, answer = simulator.handle(headers, query, await request.body(), page_base=_page_base(request))
    media_type = "application/json" if status == 200 else "text/plain"
    return Response(content=answer, status_code=status, media_type=media_type)


_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>人脸核验（沙箱）</title></head>
<body style="font-family:sans-serif;max-width:28em;margin:2em auto">
<h1>人脸核验（沙箱）</h1>
<p>{status}</p>
{forms}
</body></html>
"""


def _html(status: str, forms: str = "", code: int = 200) -> Response[Any]:
    return Response(
        content=_PAGE.format(status=html.escape(status), forms=forms), status_code=code, media_type="text/html"
    )


@get("/face/{biz_token:str}")
async def face_page(biz_token: FromPath[str], simulator: NamedDependency[TencentFaceIdSimulator]) -> Response[Any]:
    """The page ``DetectAuth`` links to: the resident (or the person trying the demo) passes or fails the check."""
    try:
        flow = simulator.flow(biz_token)
    except FaceFlowError as exc:
        return _html(exc.message, code=exc.status)
    if flow.err_code is not None:
        return _html(f"本次校验已完成：{FACE_MESSAGES.get(flow.err_code, '人脸验证失败')}")
    action = html.escape(biz_token)
    forms = "".join(
        f'<form method="post" action="{action}"><input type="hidden" name="result" value="{value}">'
        f'<button type="submit">{label}</button></form>'
        for value, label in (("pass", "模拟刷脸成功"), ("fail", "模拟刷脸失败（非本人）"))
    )
    return _html(f"正在为 {mask_name(flow.name)}（{mask_id_number(flow.id_number)}）进行人脸核验。", forms)


@post("/face/{biz_token:str}", status_code=200)
async def face_submit(
    biz_token: FromPath[str], request: Request[Any, Any, Any], simulator: NamedDependency[TencentFaceIdSimulator]
) -> Response[Any]:
    """The page's form (``result=pass|fail``): completes the flow, then goes back to the caller's RedirectUrl."""
    form = dict(parse_qsl((await request.body()).decode("utf-8", errors="replace")))
    try:
        flow = simulator.complete_face(biz_token, passed=form.get("result") == "pass")
    except FaceFlowError as exc:
        return _html(exc.message, code=exc.status)
    target = simulator.back_to_caller(flow)
    if target is not None:
        return Response(content=b"", status_code=303, headers={"Location": target})
    return _html(f"核验结束：{FACE_MESSAGES.get(flow.err_code or 0, '人脸验证失败')}")


class PersonIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    name: str
    id_number: str
    phone: str | None = None


class PersonOut(msgspec.Struct, rename="camel", kw_only=True):
    """Masked, as everything the sandbox shows."""

    name: str
    id_number: str
    phone: str | None
    replaced: bool


@post("/test/persons", status_code=200)
async def add_person(data: JSONBody[PersonIn], simulator: NamedDependency[TencentFaceIdSimulator]) -> PersonOut:
    """Add a person to the population registry (or replace the one with that ID number)."""
    try:
        person, replaced = simulator.add_person(data.name, data.id_number, data.phone)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    simulator.redact_recorded_requests()
    return PersonOut(
        name=mask_name(person.name),
        id_number=mask_id_number(person.id_number),
        phone=mask_phone(person.phone) if person.phone else None,
        replaced=replaced,
    )


class CompleteFaceIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    result: Literal["pass", "fail"] = "pass"
    err_code: int | None = None
    """Force this ``ErrCode`` (one of ``FACE_MESSAGES``) instead of deciding from ``result`` and the registry."""


class CompleteFaceOut(msgspec.Struct, rename="camel", kw_only=True):
    biz_token: str
    err_code: int
    err_msg: str


@post("/test/face/{biz_token:str}/complete", status_code=200)
async def complete_face(
    biz_token: FromPath[str], data: JSONBody[CompleteFaceIn], simulator: NamedDependency[TencentFaceIdSimulator]
) -> CompleteFaceOut:
    """Finish a face flow without the page (tests, scripted demos)."""
    try:
        flow = simulator.complete_face(biz_token, passed=data.result == "pass", err_code=data.err_code)
    except FaceFlowError as exc:
        if exc.status == 404:
            raise NotFoundException(exc.message) from None
        raise HTTPException(status_code=exc.status, detail=exc.message, extra={"errCode": exc.err_code}) from None
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    code = flow.err_code if flow.err_code is not None else 17
    return CompleteFaceOut(biz_token=flow.token, err_code=code, err_msg=FACE_MESSAGES.get(code, "人脸验证失败"))


@get("/test/switches")
async def read_switches(simulator: NamedDependency[TencentFaceIdSimulator]) -> FaceIdSwitches:
    return simulator.switches


@put("/test/switches")
async def replace_switches(
    data: JSONBody[FaceIdSwitches], simulator: NamedDependency[TencentFaceIdSimulator]
) -> FaceIdSwitches:
    """Replace the fault switches (seeding resets them)."""
    if data.daily_limit_per_id is not None and data.daily_limit_per_id < 0:
        raise HTTPException(status_code=400, detail="dailyLimitPerId must not be negative")
    simulator.switches = data
    return data


def faceid_simulator(
    *, secret_id: str, secret_key: str, rule_id: str = DEMO_RULE_ID, page_base_url: str | None = None
) -> TencentFaceIdSimulator:
    """The FaceID simulator as the demo and the sandbox command mount it: one face-check flow (``rule_id``),
    the ``DEMO_PERSONS`` registry. Tencent Cloud credentials are per account, so pass the same SecretId and
    SecretKey as the Tencent Cloud SMS simulator."""
    return TencentFaceIdSimulator(
        secret_id=secret_id, secret_key=secret_key, rule_ids=(rule_id,), page_base_url=page_base_url
    )
