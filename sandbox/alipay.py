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

Extending it (payments): write ``async def handler(simulator, call: GatewayCall) -> dict[str, object]``
returning the inner response object (``ok(...)`` adds ``code``/``msg``), raise ``GatewayFailure`` (e.g.
``business_failed("ACQ.TRADE_NOT_EXIST", "交易不存在")``) for failures, register it in ``METHODS`` (or on
one instance's ``methods``), keep its state on the simulator and reset it in ``seed``, and send
notifications with ``sign_notification`` + ``ctx.callbacks.send``.

Simplifications: one Alipay key pair for every app (the real gateway keeps one per app), public-key mode only
(no certificates), UTF-8 only, JSON only, no refresh-token grant.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Literal, get_args
from urllib.parse import parse_qsl

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from litestar import Request, Response, get, post, put, route
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import FromPath, JSONBody
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


@dataclass(frozen=True)
class GatewayCall:
    """One verified gateway request, as a method handler sees it."""

    app: SimulatedApp
    method: str
    params: Mapping[str, str]
    now: datetime

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
    ) -> None:
        """``apps`` maps app ids to app public keys (PEM or bare Base64, SPKI or PKCS#1), in ``user_id``
        mode; ``alipay_private_key_pem`` pins the simulator's key pair (a fresh 2048-bit pair otherwise)."""
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
        self.methods: dict[str, MethodHandler] = dict(METHODS)
        self.auth_code_ttl = timedelta(seconds=auth_code_ttl_seconds)
        self.timestamp_tolerance = timedelta(seconds=timestamp_tolerance_seconds)
        self.users: dict[str, SimulatedUser] = {}
        self.open_ids: dict[tuple[str, str], str] = {}
        """(app id, user id) -> open id."""
        self.open_id_owners: dict[str, tuple[str, str]] = {}
        self.auth_codes: dict[str, IssuedAuthCode] = {}

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        return [gateway, issue_auth_code, configure_app, read_public_key]

    def seed(self, seed: int) -> None:
        """Drop users, open ids and auth codes; apps and their modes are configuration and stay."""
        self.users.clear()
        self.open_ids.clear()
        self.open_id_owners.clear()
        self.auth_codes.clear()

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
        if open_id is not None:
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
        else:
            person = self.user(user_id)
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

    async def answer(self, params: Mapping[str, str]) -> bytes:
        """The gateway's answer to one request's merged parameters."""
        method = params.get("method", "")
        key = method.replace(".", "_") + "_response" if method else ERROR_RESPONSE
        app: SimulatedApp | None = None
        try:
            app = self._identify(params)
            self._authenticate(app, params)
            handler = self.methods.get(method)
            if handler is None:
                raise invalid_arguments("isv.invalid-method", "不存在的方法名")
            payload = await handler(self, GatewayCall(app=app, method=method, params=params, now=self.ctx.clock.now()))
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


METHODS: Final[Mapping[str, MethodHandler]] = {OAUTH_METHOD: oauth_token}
"""The methods every new simulator starts with; ``AlipaySimulator.methods`` is its own copy."""


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
        answer = await simulator.answer(params)
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
