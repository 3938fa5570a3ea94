"""The national e-health-card platform simulator (Tencent health-card open platform, protocols §6), mounted at
``/sandbox/healthcard``; a client's base URL is ``http://127.0.0.1:8000/sandbox/healthcard`` in the demo.

Vendor routes, same paths and envelope as ``https://p-healthopen.tengmed.com`` (every answer HTTP 200 with
``{"commonOut": {"requestId", "resultCode", "errMsg", "sign"}, "rsp": {...}}``):

* ``POST /rest/auth/HealthCard/HealthOpenAuth/AuthObj/getAppToken`` – ``req.appId`` -> ``appToken``,
  ``expiresIn`` 7200; fetching again invalidates the app's previous tokens, as the platform does;
* ``POST /rest/auth/HealthCard/HealthOpenPlatform/ISVOpenObj/<api>`` for ``registerHealthCard`` (one person,
  one card: the same idType+idNumber answers the existing card), ``getHealthCardByHealthCode`` (one-time
  codes), ``getHealthCardByQRCode``, ``getDynamicQRCode`` (a real PNG, the code expiring on the shared clock),
  ``verifyQRCode``, ``bindCardRelation`` (the ``bindings`` stream) and ``reportHISData`` (the ``reports``
  stream).

Every request is checked like the platform would: the ``sign`` with the app secret (its own implementation of
the rule, independent of our client's), the appToken, the ``timestamp`` within ``timestamp_window`` of the
shared clock, a 32-hex ``requestId`` never seen before, and the relate ids where the API needs them.

Answers are signed (``commonOut.sign``, our extension of the protocol: the platform does not sign) with the
rule of the requests over ``{"commonOut": <commonOut without sign>, "rsp": <rsp>}``. An answer to a request
that could not be authenticated (unknown app or token, wrong sign, malformed envelope) goes unsigned: there is
no secret shared with that caller to sign it with.

The result codes are the sandbox's own (the platform's table could not be consulted); our client's
``HealthCardResultCodes`` defaults to them.

Test helpers under ``/sandbox/healthcard/test/``: ``health-code`` mints a one-time health code for a card (what
the health-card mini-program hands the front end), ``tamper-signatures`` switches on answers whose signature
does not verify, ``invalidate-tokens`` revokes an app's tokens (another party fetched one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final

import msgspec
import segno
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.types import ControllerRouterHandler

from domain.kernel.clock import to_shanghai
from sandbox.framework import Simulator

DEMO_APP_ID: Final = "hcdemo0000000000000000000000app1"
DEMO_APP_SECRET: Final = "hcdemo0sandbox0secret00000000001"  # noqa: S105 - the sandbox's published demo secret
DEMO_HOSPITAL_ID: Final = "90003"
DEMO_ORG_CODE: Final = "35020001001"
"""The issuing-organisation code at the end of dynamic QR texts (the example of protocols §6.3)."""

TOKEN_PATH: Final = "/rest/auth/HealthCard/HealthOpenAuth/AuthObj/getAppToken"  # noqa: S105 - a path
ISV_PATH: Final = "/rest/auth/HealthCard/HealthOpenPlatform/ISVOpenObj"

BINDINGS: Final = "bindings"
"""Recorder stream of accepted bindCardRelation calls."""
REPORTS: Final = "reports"
"""Recorder stream of accepted reportHISData calls."""

# result codes (the sandbox's own; -10044 is the platform's observed "Value for ... cannot be null")
OK: Final = 0
SIGN_ERROR: Final = -10002
TOKEN_INVALID: Final = -10003
TIMESTAMP_INVALID: Final = -10004
APP_INVALID: Final = -10005
DUPLICATE_REQUEST: Final = -10006
PARAM_ERROR: Final = -10044
HEALTH_CODE_INVALID: Final = -11001
QR_EXPIRED: Final = -11002
QR_INVALID: Final = -11003
CARD_NOT_FOUND: Final = -11004

TOKEN_LIFETIME: Final = timedelta(seconds=7200)
TIMESTAMP_WINDOW: Final = timedelta(minutes=5)
HEALTH_CODE_LIFETIME: Final = timedelta(minutes=5)
DYNAMIC_CODE_LIFETIME: Final = timedelta(minutes=5)
"""Matches the client's default ``dynamic_code_lifetime_seconds``; not confirmed with the platform."""

CODE_TYPE_DYNAMIC: Final = "0"
CODE_TYPE_STATIC: Final = "1"

_HEX32 = re.compile(r"^[0-9A-Fa-f]{32}$")
_STATIC_QR = re.compile(r"^([0-9A-F]{64}):1$")
_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK: Final = "10X98765432"
_GENDERS: Final = frozenset({"男", "女"})
_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
_RELATED_APIS: Final = frozenset({"getHealthCardByHealthCode", "getDynamicQRCode", "reportHISData"})
"""APIs whose commonIn must carry relateAppId and relateOpenId (goairix/wx README)."""


# --- the signing rule, implemented here independently of integrations/ ---------------------------------------


def _render(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def platform_sign(fields: Mapping[str, Any], secret: str) -> str:
    """Keys sorted, ``sign`` left out, empty renderings dropped, ``k=v`` joined by ``&``, the secret appended,
    SHA-256, Base64 (strings raw, everything else as compact JSON)."""
    pairs = sorted((key, _render(value)) for key, value in fields.items() if key != "sign")
    text = "&".join(f"{key}={rendered}" for key, rendered in pairs if rendered)
    return base64.b64encode(hashlib.sha256((text + secret).encode("utf-8")).digest()).decode("ascii")


def _signature_matches(fields: Mapping[str, Any], signature: object, secret: str) -> bool:
    if not isinstance(signature, str) or not signature:
        return False
    return hmac.compare_digest(platform_sign(fields, secret).encode("ascii"), signature.encode("utf-8"))


# --- state -------------------------------------------------------------------------------------------------


class HealthCardAnswerError(Exception):
    """A non-zero resultCode answer."""

    def __init__(self, result_code: int, err_msg: str) -> None:
        super().__init__(f"{result_code} {err_msg}")
        self.result_code = result_code
        self.err_msg = err_msg


@dataclass
class _Token:
    app_id: str
    expires_at: datetime
    revoked: bool = False


@dataclass
class _Card:
    health_card_id: str
    phid: str
    name: str
    gender: str
    nation: str
    birthday: str
    id_type: str
    id_number: str
    phone1: str
    phone2: str = ""
    address: str = ""
    patid: str = ""
    relation: str = ""

    @property
    def static_qr(self) -> str:
        return f"{self.health_card_id}:1"

    def as_json(self, qr_code_text: str | None = None) -> dict[str, Any]:
        return {
            "qrCodeText": qr_code_text or self.static_qr,
            "name": self.name,
            "gender": self.gender,
            "nation": self.nation,
            "birthday": self.birthday,
            "idNumber": self.id_number,
            "idType": self.id_type,
            "address": self.address,
            "phone1": self.phone1,
            "phone2": self.phone2,
            "phid": self.phid,
            "patid": self.patid,
            "relation": self.relation,
            "healthCardId": self.health_card_id,
            "adminExt": "",
        }


@dataclass
class _HealthCode:
    health_card_id: str
    issued_at: datetime
    used: bool = False


@dataclass
class _DynamicCode:
    health_card_id: str
    expires_at: datetime


@dataclass
class _Call:
    """One authenticated request."""

    app_id: str
    common_in: Mapping[str, Any]
    req: Mapping[str, Any]


class HealthCardSimulator(Simulator):
    """The platform for the configured ISV apps (``appId -> appSecret``), always including the demo app."""

    name = "healthcard"

    def __init__(
        self,
        *,
        name: str | None = None,
        apps: Mapping[str, str] | None = None,
        org_code: str = DEMO_ORG_CODE,
        timestamp_window: timedelta = TIMESTAMP_WINDOW,
        dynamic_code_lifetime: timedelta = DYNAMIC_CODE_LIFETIME,
        health_code_lifetime: timedelta = HEALTH_CODE_LIFETIME,
        token_lifetime: timedelta = TOKEN_LIFETIME,
    ) -> None:
        super().__init__(name=name)
        self.apps: dict[str, str] = {DEMO_APP_ID: DEMO_APP_SECRET, **(apps or {})}
        self.org_code = org_code
        self.timestamp_window = timestamp_window
        self.dynamic_code_lifetime = dynamic_code_lifetime
        self.health_code_lifetime = health_code_lifetime
        self.token_lifetime = token_lifetime
        self.tamper_signatures = False
        self._tokens: dict[str, _Token] = {}
        self._cards: dict[str, _Card] = {}
        self._by_identity: dict[tuple[str, str], str] = {}
        self._health_codes: dict[str, _HealthCode] = {}
        self._dynamic_codes: dict[str, _DynamicCode] = {}
        self._seen_requests: set[tuple[str, str]] = set()
        self._seen_order: deque[tuple[datetime, tuple[str, str]]] = deque()
        self._apis: dict[str, Callable[[_Call], dict[str, Any]]] = {
            "registerHealthCard": self._register,
            "getHealthCardByHealthCode": self._by_health_code,
            "getHealthCardByQRCode": self._by_qr_code,
            "getDynamicQRCode": self._dynamic_qr_code,
            "verifyQRCode": self._verify_qr_code,
            "bindCardRelation": self._bind_card_relation,
            "reportHISData": self._report_his_data,
        }

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        return [get_app_token, isv_api, test_health_code, test_tamper_signatures, test_invalidate_tokens]

    def seed(self, seed: int) -> None:
        self.tamper_signatures = False
        self._tokens.clear()
        self._cards.clear()
        self._by_identity.clear()
        self._health_codes.clear()
        self._dynamic_codes.clear()
        self._seen_requests.clear()
        self._seen_order.clear()

    @property
    def api_names(self) -> frozenset[str]:
        return frozenset(self._apis)

    # --- ids ---------------------------------------------------------------------------------------------------

    def _hex(self, length: int) -> str:
        return f"{self.ctx.random.getrandbits(4 * length):0{length}X}"

    def _now(self) -> datetime:
        return self.ctx.clock.now()

    # --- the envelope ------------------------------------------------------------------------------------------

    def answer(self, api: str, raw: bytes) -> bytes:
        """The JSON answer to one request (``api`` is ``getAppToken`` or an ISV API name)."""
        request_id = ""
        secret: str | None = None
        try:
            common_in, req = _envelope(raw)
            request_id = common_in["requestId"] if isinstance(common_in.get("requestId"), str) else ""
            app_id = (
                self._authenticate_app(common_in, req) if api == "getAppToken" else self._authenticate(common_in, req)
            )
            secret = self.apps[app_id]
            self._check_common(app_id, common_in)
            if api == "getAppToken":
                rsp = self._issue_token(app_id)
            else:
                self._check_token(common_in["appToken"])
                if api in _RELATED_APIS:
                    _require(common_in, "relateAppId", "relateOpenId")
                rsp = self._apis[api](_Call(app_id=app_id, common_in=common_in, req=req))
        except HealthCardAnswerError as refusal:
            return self._encode(request_id, refusal.result_code, refusal.err_msg, None, secret)
        return self._encode(request_id, OK, "", rsp, secret)

    def _encode(
        self, request_id: str, result_code: int, err_msg: str, rsp: dict[str, Any] | None, secret: str | None
    ) -> bytes:
        common_out: dict[str, Any] = {"requestId": request_id, "resultCode": result_code, "errMsg": err_msg}
        if secret is not None:
            signature = platform_sign({"commonOut": common_out, "rsp": rsp}, secret)
            if self.tamper_signatures:
                signature = platform_sign({"commonOut": common_out, "rsp": rsp}, secret + "-tampered")
            common_out["sign"] = signature
        body: dict[str, Any] = {"commonOut": common_out}
        if rsp is not None:
            body["rsp"] = rsp
        return msgspec.json.encode(body)

    def _authenticate_app(self, common_in: Mapping[str, Any], req: Mapping[str, Any]) -> str:
        """getAppToken: the app named by ``req.appId``, whose secret must verify the sign."""
        app_id = req.get("appId")
        if not isinstance(app_id, str) or not app_id:
            raise HealthCardAnswerError(PARAM_ERROR, "Value for appId cannot be null")
        secret = self.apps.get(app_id)
        if secret is None:
            raise HealthCardAnswerError(APP_INVALID, "appId is invalid")
        if not _signature_matches(_merged(common_in, req), common_in.get("sign"), secret):
            raise HealthCardAnswerError(SIGN_ERROR, "sign is invalid")
        return app_id

    def _authenticate(self, common_in: Mapping[str, Any], req: Mapping[str, Any]) -> str:
        """Other APIs: the app the appToken was issued to (even a revoked one), whose secret must verify."""
        token = common_in.get("appToken")
        if not isinstance(token, str) or not token:
            raise HealthCardAnswerError(TOKEN_INVALID, "Value for appToken cannot be null")
        record = self._tokens.get(token)
        if record is None:
            raise HealthCardAnswerError(TOKEN_INVALID, "appToken is invalid")
        if not _signature_matches(_merged(common_in, req), common_in.get("sign"), self.apps[record.app_id]):
            raise HealthCardAnswerError(SIGN_ERROR, "sign is invalid")
        return record.app_id

    def _check_common(self, app_id: str, common_in: Mapping[str, Any]) -> None:
        """hospitalId present, timestamp within the window, requestId 32 hex and never seen for this app."""
        _require(common_in, "hospitalId", "timestamp", "requestId")
        now = self._now()
        timestamp = common_in["timestamp"]
        if not isinstance(timestamp, str) or not timestamp.isdigit():
            raise HealthCardAnswerError(PARAM_ERROR, "timestamp must be unix seconds as a string")
        if abs(now.timestamp() - int(timestamp)) > self.timestamp_window.total_seconds():
            raise HealthCardAnswerError(TIMESTAMP_INVALID, "timestamp is out of range")
        request_id = common_in["requestId"]
        if not isinstance(request_id, str) or not _HEX32.match(request_id):
            raise HealthCardAnswerError(PARAM_ERROR, "requestId must be 32 hex characters")
        while self._seen_order and now - self._seen_order[0][0] > 2 * self.timestamp_window:
            self._seen_requests.discard(self._seen_order.popleft()[1])
        key = (app_id, request_id.upper())
        if key in self._seen_requests:
            raise HealthCardAnswerError(DUPLICATE_REQUEST, "requestId was already used")
        self._seen_requests.add(key)
        self._seen_order.append((now, key))

    def _check_token(self, token: str) -> None:
        record = self._tokens[token]
        if record.revoked or self._now() >= record.expires_at:
            raise HealthCardAnswerError(TOKEN_INVALID, "appToken is invalid or expired")

    def _issue_token(self, app_id: str) -> dict[str, Any]:
        self.invalidate_tokens(app_id)
        while (token := self._hex(32)) in self._tokens:
            pass
        self._tokens[token] = _Token(app_id=app_id, expires_at=self._now() + self.token_lifetime)
        return {"appToken": token, "expiresIn": int(self.token_lifetime.total_seconds())}

    def invalidate_tokens(self, app_id: str) -> int:
        """Revoke every live token of the app; returns how many."""
        revoked = 0
        for record in self._tokens.values():
            if record.app_id == app_id and not record.revoked:
                record.revoked = True
                revoked += 1
        return revoked

    # --- cards and codes ---------------------------------------------------------------------------------------

    def _resolve(self, qr_code_text: object, *, allow_expired: bool = False) -> tuple[_Card, str]:
        """The card behind a static or dynamic QR text; an expired dynamic one is refused unless allowed."""
        if not isinstance(qr_code_text, str) or not qr_code_text:
            raise HealthCardAnswerError(PARAM_ERROR, "Value for qrCodeText cannot be null")
        static = _STATIC_QR.match(qr_code_text)
        if static is not None and static.group(1) in self._cards:
            return self._cards[static.group(1)], qr_code_text
        dynamic = self._dynamic_codes.get(qr_code_text)
        if dynamic is None:
            raise HealthCardAnswerError(QR_INVALID, "qrCodeText is invalid")
        if not allow_expired and self._now() >= dynamic.expires_at:
            raise HealthCardAnswerError(QR_EXPIRED, "qrCodeText has expired")
        return self._cards[dynamic.health_card_id], qr_code_text

    def card(self, health_card_id: str) -> _Card | None:
        return self._cards.get(health_card_id)

    def mint_health_code(self, health_card_id: str) -> str:
        """A one-time health code for an existing card (what the health-card mini-program hands over)."""
        if health_card_id not in self._cards:
            raise HealthCardAnswerError(CARD_NOT_FOUND, "healthCardId is unknown")
        while (code := self._hex(32)) in self._health_codes:
            pass
        self._health_codes[code] = _HealthCode(health_card_id=health_card_id, issued_at=self._now())
        return code

    def _register(self, call: _Call) -> dict[str, Any]:
        req = call.req
        _require(req, "wechatCode", "name", "gender", "nation", "birthday", "idNumber", "idType", "phone1")
        if req["gender"] not in _GENDERS:
            raise HealthCardAnswerError(PARAM_ERROR, "gender must be 男 or 女")
        try:
            date.fromisoformat(req["birthday"])
        except ValueError:
            raise HealthCardAnswerError(PARAM_ERROR, "birthday must be yyyy-MM-dd") from None
        id_type, id_number = req["idType"], req["idNumber"].upper()
        if id_type == "01" and not _valid_resident_id(id_number):
            raise HealthCardAnswerError(PARAM_ERROR, "idNumber is invalid")
        existing = self._by_identity.get((id_type, id_number))
        if existing is not None:
            card = self._cards[existing]
        else:
            while (health_card_id := self._hex(64)) in self._cards:
                pass
            card = _Card(
                health_card_id=health_card_id,
                phid=self._hex(24),
                name=req["name"],
                gender=req["gender"],
                nation=req["nation"],
                birthday=req["birthday"],
                id_type=id_type,
                id_number=id_number,
                phone1=req["phone1"],
                phone2=_optional(req, "phone2"),
                address=_optional(req, "address"),
                patid=_optional(req, "patid"),
                relation=_optional(req, "relation"),
            )
            self._cards[health_card_id] = card
            self._by_identity[(id_type, id_number)] = health_card_id
        return {"qrCodeText": card.static_qr, "healthCardId": card.health_card_id, "phid": card.phid, "adminExt": ""}

    def _by_health_code(self, call: _Call) -> dict[str, Any]:
        _require(call.req, "healthCode")
        code = self._health_codes.get(call.req["healthCode"])
        if code is None or code.used or self._now() - code.issued_at >= self.health_code_lifetime:
            raise HealthCardAnswerError(HEALTH_CODE_INVALID, "healthCode is invalid or was used")
        code.used = True
        return {"card": self._cards[code.health_card_id].as_json()}

    def _by_qr_code(self, call: _Call) -> dict[str, Any]:
        card, text = self._resolve(call.req.get("qrCodeText"))
        return {"card": card.as_json(text)}

    def _dynamic_qr_code(self, call: _Call) -> dict[str, Any]:
        req = call.req
        _require(req, "healthCardId", "idType", "idNumber")
        card = self._cards.get(req["healthCardId"])
        if card is None or card.id_type != req["idType"] or card.id_number != req["idNumber"].upper():
            raise HealthCardAnswerError(CARD_NOT_FOUND, "no card for healthCardId, idType and idNumber")
        code_type = req.get("codeType") or CODE_TYPE_DYNAMIC
        if code_type == CODE_TYPE_STATIC:
            text = card.static_qr
        elif code_type == CODE_TYPE_DYNAMIC:
            while (text := f"{self._hex(64)}:0:{self._hex(32)}::{self.org_code}") in self._dynamic_codes:
                pass
            self._dynamic_codes[text] = _DynamicCode(
                health_card_id=card.health_card_id, expires_at=self._now() + self.dynamic_code_lifetime
            )
        else:
            raise HealthCardAnswerError(PARAM_ERROR, "codeType is invalid")
        image = base64.b64encode(qr_png(text)).decode("ascii")
        return {"qrCodeText": text, "qrCodeImg": image, "healthCardId": card.health_card_id}

    def _verify_qr_code(self, call: _Call) -> dict[str, Any]:
        card, text = self._resolve(call.req.get("qrCodeText"))
        details = card.as_json(text)
        flat = {key: details[key] for key in ("address", "birthday", "gender", "healthCardId", "idNumber")}
        flat.update({key: details[key] for key in ("idType", "name", "nation", "phid")})
        return {**flat, "phone": card.phone1, "card": details, "result": True}

    def _bind_card_relation(self, call: _Call) -> dict[str, Any]:
        _require(call.req, "patid", "qrCodeText")
        card, text = self._resolve(call.req["qrCodeText"])
        card.patid = call.req["patid"]
        self.ctx.recorder.record_message(
            BINDINGS,
            {"appId": call.app_id, "patid": card.patid, "healthCardId": card.health_card_id, "qrCodeText": text},
        )
        return {"result": True}

    def _report_his_data(self, call: _Call) -> dict[str, Any]:
        req = call.req
        _require(req, "qrCodeText", "time", "hospitalCode", "scene", "cardType", "cardChannel")
        try:
            datetime.strptime(req["time"], _TIME_FORMAT)  # noqa: DTZ007 - Beijing wall time, as sent
        except ValueError:
            raise HealthCardAnswerError(PARAM_ERROR, "time must be yyyy-MM-dd HH:mm:ss") from None
        card, _ = self._resolve(req["qrCodeText"], allow_expired=True)
        self.ctx.recorder.record_message(
            REPORTS,
            {
                "appId": call.app_id,
                "hospitalId": call.common_in.get("hospitalId"),
                "relateAppId": call.common_in.get("relateAppId"),
                "relateOpenId": call.common_in.get("relateOpenId"),
                "healthCardId": card.health_card_id,
                "receivedAt": to_shanghai(self._now()).strftime(_TIME_FORMAT),
                **{key: value for key, value in req.items() if isinstance(value, str)},
            },
        )
        return {}


# --- helpers -----------------------------------------------------------------------------------------------


def _envelope(raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        payload = json.loads(raw)
    except ValueError:
        raise HealthCardAnswerError(PARAM_ERROR, "request body is not JSON") from None
    common_in = payload.get("commonIn") if isinstance(payload, dict) else None
    req = payload.get("req", {}) if isinstance(payload, dict) else None
    if not isinstance(common_in, dict) or not isinstance(req, dict):
        raise HealthCardAnswerError(PARAM_ERROR, "Value for commonIn cannot be null")
    return common_in, req


def _merged(common_in: Mapping[str, Any], req: Mapping[str, Any]) -> dict[str, Any]:
    merged = {key: value for key, value in common_in.items() if key != "sign"}
    merged.update(req)
    return merged


def _require(fields: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        value = fields.get(key)
        if not isinstance(value, str) or not value:
            raise HealthCardAnswerError(PARAM_ERROR, f"Value for {key} cannot be null")


def _optional(fields: Mapping[str, Any], key: str) -> str:
    value = fields.get(key)
    return value if isinstance(value, str) else ""


def _valid_resident_id(number: str) -> bool:
    """18 characters, a real birth date, and the GB 11643 check character."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    try:
        date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    total = sum(int(digit) * weight for digit, weight in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17]


def qr_png(text: str) -> bytes:
    """A real QR code of ``text`` as PNG (segno, a project dependency)."""
    buffer = io.BytesIO()
    segno.make(text, error="m", micro=False).save(buffer, kind="png", scale=4, border=2)
    return buffer.getvalue()


# --- handlers ----------------------------------------------------------------------------------------------


def _json(body: bytes, status: int = 200) -> Response[bytes]:
    return Response(body, status_code=status, media_type="application/json")


@post(TOKEN_PATH, status_code=200)
async def get_app_token(
    request: Request[Any, Any, Any], simulator: NamedDependency[HealthCardSimulator]
) -> Response[bytes]:
    return _json(simulator.answer("getAppToken", await request.body()))


@post(ISV_PATH + "/{api:str}", status_code=200)
async def isv_api(
    api: FromPath[str], request: Request[Any, Any, Any], simulator: NamedDependency[HealthCardSimulator]
) -> Response[bytes]:
    if api not in simulator.api_names:
        return _json(msgspec.json.encode({"error": f"no API {api!r} in the sandbox"}), 404)
    return _json(simulator.answer(api, await request.body()))


class HealthCodeIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    health_card_id: str


class HealthCodeOut(msgspec.Struct, rename="camel", kw_only=True):
    health_code: str
    expires_at: datetime


class SwitchIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    enabled: bool


class SwitchOut(msgspec.Struct, rename="camel", kw_only=True):
    enabled: bool


class InvalidateIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    app_id: str = DEMO_APP_ID


class InvalidateOut(msgspec.Struct, rename="camel", kw_only=True):
    revoked: int


@post("/test/health-code", status_code=200)
async def test_health_code(
    data: JSONBody[HealthCodeIn], simulator: NamedDependency[HealthCardSimulator]
) -> Response[bytes]:
    """A one-time health code for an existing card; 400 with ``{"resultCode", "errMsg"}`` for an unknown one."""
    try:
        code = simulator.mint_health_code(data.health_card_id)
    except HealthCardAnswerError as refusal:
        return _json(msgspec.json.encode({"resultCode": refusal.result_code, "errMsg": refusal.err_msg}), 400)
    expires_at = simulator.ctx.clock.now() + simulator.health_code_lifetime
    return _json(msgspec.json.encode(HealthCodeOut(health_code=code, expires_at=expires_at)))


@post("/test/tamper-signatures", status_code=200)
async def test_tamper_signatures(
    data: JSONBody[SwitchIn], simulator: NamedDependency[HealthCardSimulator]
) -> SwitchOut:
    """Fault switch: signed answers carry a signature that does not verify (until switched off or reseeded)."""
    simulator.tamper_signatures = data.enabled
    return SwitchOut(enabled=simulator.tamper_signatures)


@post("/test/invalidate-tokens", status_code=200)
async def test_invalidate_tokens(
    data: JSONBody[InvalidateIn], simulator: NamedDependency[HealthCardSimulator]
) -> InvalidateOut:
    """Revoke the app's tokens, as when another party fetched a new one."""
    return InvalidateOut(revoked=simulator.invalidate_tokens(data.app_id))


def healthcard_simulator(
    apps: Mapping[str, str] | None = None,
    *,
    dynamic_code_lifetime_seconds: float = DYNAMIC_CODE_LIFETIME.total_seconds(),
) -> HealthCardSimulator:
    """The simulator as the demo and tests mount it: the demo app plus ``apps`` (``appId -> appSecret``)."""
    return HealthCardSimulator(apps=apps, dynamic_code_lifetime=timedelta(seconds=dynamic_code_lifetime_seconds))
