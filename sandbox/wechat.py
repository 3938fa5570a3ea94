"""The WeChat mini-program simulator (protocols §1), mounted at ``/sandbox/wechat``.

Vendor routes, same paths and shapes as ``https://api.weixin.qq.com`` (so a client's base URL is
``http://127.0.0.1:8000/sandbox/wechat`` in the demo):

* ``GET /sns/jscode2session`` – login code -> openid, session_key, unionid (when the user has one);
* ``POST /cgi-bin/stable_token`` – the stable access token: 7200 s, the same token while more than 300 s are
  left, then a new one (the old one stays valid until it expires); ``force_refresh`` revokes the old one;
* ``POST /wxa/business/getuserphonenumber`` – phone code -> ``phone_info``;
* ``POST /cgi-bin/message/subscribe/send`` – delivered to the ``subscribe`` stream of the recorder (the inbox)
  when the user has a one-time authorisation left for the template.

Every vendor error is HTTP 200 with ``{"errcode", "errmsg": "... rid: ..."}``. Time is the shared clock:
codes live 5 minutes, tokens expire on it. Ids come from the seeded ``ctx.random``; seeding forgets every
user, code, token and authorisation (the configured apps stay).

Test helpers under ``/sandbox/wechat/test/`` play what a front end would get from the WeChat client:
``login-code`` (``wx.login``), ``phone-code`` (the getPhoneNumber button) and ``subscribe-grant``
(``wx.requestSubscribeMessage`` accepted ``count`` times). They answer 400 with the WeChat error shape when
refused.
"""

from __future__ import annotations

import base64
import string
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.types import ControllerRouterHandler

from sandbox.framework import Simulator

DEMO_APPID = "wx0000000000demo1"
DEMO_SECRET = "sandbox0demo0secret0000000000001"  # noqa: S105 - the sandbox's published demo secret

SUBSCRIBE_STREAM = "subscribe"
"""The recorder stream holding delivered subscribe messages (the inbox)."""

TOKEN_LIFETIME = timedelta(seconds=7200)
TOKEN_ROTATION = timedelta(seconds=300)
"""The stable token is renewed when less than this is left; old and new both work meanwhile."""
CODE_LIFETIME = timedelta(minutes=5)
LOGIN_WINDOW = timedelta(minutes=1)
LOGIN_RATE_PER_MINUTE = 100
"""code2Session: 100 calls a minute per user (45011)."""

_ALNUM = string.ascii_letters + string.digits
_OPENID_CHARS = _ALNUM + "-_"
_STATES = frozenset({"developer", "trial", "formal"})
_LANGS = frozenset({"zh_CN", "en_US", "zh_HK", "zh_TW"})
_KEYWORD_LIMITS: Mapping[str, int] = {
    "thing": 20,
    "phrase": 5,
    "name": 20,
    "character_string": 32,
    "number": 32,
    "letter": 32,
    "symbol": 5,
}
"""Subscribe-message keyword types and their maximum lengths (47003 beyond)."""

_T = TypeVar("_T")


class WechatAnswerError(Exception):
    """A WeChat error answer."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode} {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


# --- wire shapes -------------------------------------------------------------------------------------------


class ErrorOut(msgspec.Struct, kw_only=True):
    errcode: int
    errmsg: str


class Code2SessionOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Success without ``errcode``, as WeChat has answered since late 2022."""

    openid: str
    session_key: str
    unionid: str | None = None


class StableTokenIn(msgspec.Struct, kw_only=True):
    grant_type: str = ""
    appid: str = ""
    secret: str = ""
    force_refresh: bool = False


class StableTokenOut(msgspec.Struct, kw_only=True):
    access_token: str
    expires_in: int


class PhoneNumberIn(msgspec.Struct, kw_only=True):
    code: str = ""
    openid: str | None = None


class Watermark(msgspec.Struct, kw_only=True):
    timestamp: int
    appid: str


class PhoneInfo(msgspec.Struct, rename="camel", kw_only=True):
    phone_number: str
    pure_phone_number: str
    country_code: str | int
    watermark: Watermark


class PhoneNumberOut(msgspec.Struct, kw_only=True):
    errcode: int
    errmsg: str
    phone_info: PhoneInfo


class TemplateValue(msgspec.Struct, kw_only=True):
    value: str


class SubscribeIn(msgspec.Struct, kw_only=True):
    touser: str = ""
    template_id: str = ""
    page: str | None = None
    miniprogram_state: str = "formal"
    lang: str = "zh_CN"
    data: dict[str, TemplateValue] = msgspec.field(default_factory=dict)


class SubscribeOut(msgspec.Struct, kw_only=True):
    errcode: int
    errmsg: str
    msgid: int


# --- test helpers' shapes ----------------------------------------------------------------------------------


class LoginCodeIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    appid: str | None = None
    openid: str | None = None
    """An existing user, or a new user with this openid; a new user with a fresh openid when absent."""
    unionid: str | None = None
    """Binds the user to an Open Platform account (an empty string unbinds)."""


class LoginCodeOut(msgspec.Struct, rename="camel", kw_only=True):
    code: str
    openid: str
    unionid: str | None


class PhoneCodeIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    phone: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{5,15}$")]
    appid: str | None = None
    openid: str | None = None
    """When set, the code is bound to this user (getuserphonenumber with another openid: 40029)."""
    country_code: str | int = "86"
    """Answered with the same JSON type (WeChat's documents show both a string and a number)."""


class CodeOut(msgspec.Struct, rename="camel", kw_only=True):
    code: str


class SubscribeGrantIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    openid: str
    template_id: str
    count: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1
    appid: str | None = None


class SubscribeGrantOut(msgspec.Struct, rename="camel", kw_only=True):
    openid: str
    template_id: str
    remaining: int


# --- state -------------------------------------------------------------------------------------------------


@dataclass
class _User:
    openid: str
    unionid: str | None = None
    session_key: str | None = None


@dataclass
class _LoginCode:
    appid: str
    openid: str
    issued_at: datetime
    used: bool = False


@dataclass
class _PhoneCode:
    appid: str
    openid: str | None
    phone: str
    country_code: str | int
    issued_at: datetime
    used: bool = False


@dataclass
class _Token:
    appid: str
    expires_at: datetime
    revoked: bool = False


class WechatSimulator(Simulator):
    """WeChat's mini-program server APIs for the configured apps (``appid -> secret``), always including the
    demo app ``wx0000000000demo1``."""

    name = "wechat"

    def __init__(
        self,
        *,
        name: str | None = None,
        demo_secret: str = DEMO_SECRET,
        apps: Mapping[str, str] | None = None,
        login_rate_per_minute: int = LOGIN_RATE_PER_MINUTE,
    ) -> None:
        super().__init__(name=name)
        self.apps: dict[str, str] = {DEMO_APPID: demo_secret, **(apps or {})}
        self.login_rate_per_minute = login_rate_per_minute
        self._users: dict[str, dict[str, _User]] = {}
        self._login_codes: dict[str, _LoginCode] = {}
        self._phone_codes: dict[str, _PhoneCode] = {}
        self._tokens: dict[str, _Token] = {}
        self._current_token: dict[str, str] = {}
        self._grants: dict[tuple[str, str, str], int] = {}
        self._logins: dict[tuple[str, str], deque[datetime]] = {}

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        return [jscode2session, stable_token, get_user_phone_number, send_subscribe_message, *_helpers]

    def seed(self, seed: int) -> None:
        self._users.clear()
        self._login_codes.clear()
        self._phone_codes.clear()
        self._tokens.clear()
        self._current_token.clear()
        self._grants.clear()
        self._logins.clear()

    # --- ids -------------------------------------------------------------------------------------------------

    def _chars(self, alphabet: str, length: int) -> str:
        return "".join(self.ctx.random.choices(alphabet, k=length))

    def rid(self) -> str:
        bits = self.ctx.random.getrandbits
        return f"{bits(32):08x}-{bits(32):08x}-{bits(32):08x}"

    def _fresh_openid(self, appid: str) -> str:
        users = self._users.setdefault(appid, {})
        while (openid := "o" + self._chars(_OPENID_CHARS, 27)) in users:
            pass
        return openid

    def _fresh_code(self) -> str:
        while (code := self._chars(_ALNUM, 32)) in self._login_codes or code in self._phone_codes:
            pass
        return code

    # --- vendor logic ----------------------------------------------------------------------------------------

    def _app(self, appid: str | None, secret: str | None) -> str:
        if not appid:
            raise WechatAnswerError(41002, "appid missing")
        if not secret:
            raise WechatAnswerError(41004, "appsecret missing")
        expected = self.apps.get(appid)
        if expected is None:
            raise WechatAnswerError(40013, "invalid appid")
        if secret != expected:
            raise WechatAnswerError(40125, "invalid appsecret")
        return appid

    def code_to_session(
        self, appid: str | None, secret: str | None, js_code: str | None, grant_type: str | None
    ) -> Code2SessionOut:
        """Codes are single use (40163) and live 5 minutes (40029 after); 100 calls a minute per user (45011)."""
        app = self._app(appid, secret)
        if grant_type != "authorization_code":
            raise WechatAnswerError(40002, "invalid grant_type")
        if not js_code:
            raise WechatAnswerError(41008, "missing code")
        login = self._login_codes.get(js_code)
        if login is None or login.appid != app:
            raise WechatAnswerError(40029, "invalid code")
        now = self.ctx.clock.now()
        window = self._logins.setdefault((app, login.openid), deque())
        while window and now - window[0] >= LOGIN_WINDOW:
            window.popleft()
        if len(window) >= self.login_rate_per_minute:
            raise WechatAnswerError(45011, "api minute-quota reach limit  mustslower  retry next minute")
        window.append(now)
        if login.used:
            raise WechatAnswerError(40163, "code been used")
        if now - login.issued_at >= CODE_LIFETIME:
            raise WechatAnswerError(40029, "invalid code")
        login.used = True
        user = self._users[app][login.openid]
        user.session_key = base64.b64encode(self.ctx.random.randbytes(16)).decode("ascii")
        return Code2SessionOut(openid=user.openid, session_key=user.session_key, unionid=user.unionid)

    def stable_token(self, body: StableTokenIn) -> StableTokenOut:
        if body.grant_type != "client_credential":
            raise WechatAnswerError(40002, "invalid grant_type")
        app = self._app(body.appid, body.secret)
        now = self.ctx.clock.now()
        current = self._current_token.get(app)
        record = self._tokens.get(current) if current else None
        if body.force_refresh:
            for issued in self._tokens.values():
                if issued.appid == app:
                    issued.revoked = True
        elif current and record and not record.revoked and record.expires_at - now > TOKEN_ROTATION:
            return StableTokenOut(access_token=current, expires_in=int((record.expires_at - now).total_seconds()))
        while (token := f"{self.ctx.random.randint(80, 99)}_{self._chars(_ALNUM + '-_', 136)}") in self._tokens:
            pass
        self._tokens[token] = _Token(appid=app, expires_at=now + TOKEN_LIFETIME)
        self._current_token[app] = token
        return StableTokenOut(access_token=token, expires_in=int(TOKEN_LIFETIME.total_seconds()))

    def token_app(self, access_token: str | None) -> str:
        """The app whose token this is: 41001 missing, 40001 unknown or revoked, 42001 expired."""
        if not access_token:
            raise WechatAnswerError(41001, "access_token missing")
        record = self._tokens.get(access_token)
        if record is None or record.revoked:
            raise WechatAnswerError(40001, "invalid credential, access_token is invalid or not latest")
        if self.ctx.clock.now() >= record.expires_at:
            raise WechatAnswerError(42001, "access_token expired")
        return record.appid

    def phone_number(self, app: str, body: PhoneNumberIn) -> PhoneNumberOut:
        """Phone codes are single use and live 5 minutes; both failures are 40029 (as documented)."""
        now = self.ctx.clock.now()
        phone = self._phone_codes.get(body.code)
        if (
            phone is None
            or phone.appid != app
            or phone.used
            or now - phone.issued_at >= CODE_LIFETIME
            or (body.openid and phone.openid and body.openid != phone.openid)
        ):
            raise WechatAnswerError(40029, "invalid code")
        phone.used = True
        return PhoneNumberOut(
            errcode=0,
            errmsg="ok",
            phone_info=PhoneInfo(
                phone_number=phone.phone if str(phone.country_code) == "86" else f"+{phone.country_code}{phone.phone}",
                pure_phone_number=phone.phone,
                country_code=phone.country_code,
                watermark=Watermark(timestamp=int(now.timestamp()), appid=app),
            ),
        )

    def send_subscribe(self, app: str, body: SubscribeIn) -> SubscribeOut:
        """40003 unknown user, 40037 no template id, 47003 a value breaking its keyword's rule (``thing`` at
        most 20 characters ...), 43101 no one-time authorisation left for (user, template)."""
        if body.touser not in self._users.get(app, {}):
            raise WechatAnswerError(40003, "invalid openid")
        if not body.template_id:
            raise WechatAnswerError(40037, "invalid template_id")
        if body.miniprogram_state not in _STATES or body.lang not in _LANGS:
            raise WechatAnswerError(47001, "data format error")
        for key, item in body.data.items():
            kind = key.rstrip(string.digits)
            limit = _KEYWORD_LIMITS.get(kind)
            if not item.value or (limit is not None and len(item.value) > limit):
                raise WechatAnswerError(47003, f"argument invalid! data.{key}.value invalid")
        grant = (app, body.touser, body.template_id)
        if self._grants.get(grant, 0) <= 0:
            raise WechatAnswerError(43101, "user refuse to accept the msg")
        self._grants[grant] -= 1
        msgid = self.ctx.random.getrandbits(63)
        self.ctx.recorder.record_message(
            SUBSCRIBE_STREAM,
            {
                "appid": app,
                "touser": body.touser,
                "templateId": body.template_id,
                "page": body.page,
                "miniprogramState": body.miniprogram_state,
                "lang": body.lang,
                "data": {key: item.value for key, item in body.data.items()},
                "msgid": str(msgid),
            },
        )
        return SubscribeOut(errcode=0, errmsg="ok", msgid=msgid)

    # --- test helpers ----------------------------------------------------------------------------------------

    def _known_app(self, appid: str | None) -> str:
        app = appid or DEMO_APPID
        if app not in self.apps:
            raise WechatAnswerError(40013, "invalid appid")
        return app

    def issue_login_code(self, body: LoginCodeIn) -> LoginCodeOut:
        app = self._known_app(body.appid)
        users = self._users.setdefault(app, {})
        openid = body.openid or self._fresh_openid(app)
        user = users.setdefault(openid, _User(openid=openid))
        if body.unionid is not None:
            user.unionid = body.unionid or None
        code = self._fresh_code()
        self._login_codes[code] = _LoginCode(appid=app, openid=openid, issued_at=self.ctx.clock.now())
        return LoginCodeOut(code=code, openid=openid, unionid=user.unionid)

    def issue_phone_code(self, body: PhoneCodeIn) -> CodeOut:
        app = self._known_app(body.appid)
        code = self._fresh_code()
        self._phone_codes[code] = _PhoneCode(
            appid=app,
            openid=body.openid,
            phone=body.phone,
            country_code=body.country_code,
            issued_at=self.ctx.clock.now(),
        )
        return CodeOut(code=code)

    def grant_subscription(self, body: SubscribeGrantIn) -> SubscribeGrantOut:
        app = self._known_app(body.appid)
        if body.openid not in self._users.get(app, {}):
            raise WechatAnswerError(40003, "invalid openid")
        grant = (app, body.openid, body.template_id)
        self._grants[grant] = self._grants.get(grant, 0) + body.count
        return SubscribeGrantOut(openid=body.openid, template_id=body.template_id, remaining=self._grants[grant])

    def remaining_grants(self, openid: str, template_id: str, *, appid: str = DEMO_APPID) -> int:
        return self._grants.get((appid, openid, template_id), 0)


# --- handlers ----------------------------------------------------------------------------------------------


def _json(payload: object, status: int = 200) -> Response[bytes]:
    return Response(msgspec.json.encode(payload), status_code=status, media_type="application/json")


def _refused(simulator: WechatSimulator, refusal: WechatAnswerError, status: int = 200) -> Response[bytes]:
    return _json(ErrorOut(errcode=refusal.errcode, errmsg=f"{refusal.errmsg} rid: {simulator.rid()}"), status)


def _decode(body: bytes, kind: type[_T]) -> _T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:
        raise WechatAnswerError(47001, f"data format error hint: {exc}") from None


@get("/sns/jscode2session")
async def jscode2session(
    request: Request[Any, Any, Any], simulator: NamedDependency[WechatSimulator]
) -> Response[bytes]:
    query = request.query_params
    try:
        answer = simulator.code_to_session(
            query.get("appid"), query.get("secret"), query.get("js_code"), query.get("grant_type")
        )
    except WechatAnswerError as refusal:
        return _refused(simulator, refusal)
    return _json(answer)


@post("/cgi-bin/stable_token", status_code=200)
async def stable_token(request: Request[Any, Any, Any], simulator: NamedDependency[WechatSimulator]) -> Response[bytes]:
    try:
        answer = simulator.stable_token(_decode(await request.body(), StableTokenIn))
    except WechatAnswerError as refusal:
        return _refused(simulator, refusal)
    return _json(answer)


@post("/wxa/business/getuserphonenumber", status_code=200)
async def get_user_phone_number(
    request: Request[Any, Any, Any], simulator: NamedDependency[WechatSimulator]
) -> Response[bytes]:
    try:
        app = simulator.token_app(request.query_params.get("access_token"))
        answer = simulator.phone_number(app, _decode(await request.body(), PhoneNumberIn))
    except WechatAnswerError as refusal:
        return _refused(simulator, refusal)
    return _json(answer)


@post("/cgi-bin/message/subscribe/send", status_code=200)
async def send_subscribe_message(
    request: Request[Any, Any, Any], simulator: NamedDependency[WechatSimulator]
) -> Response[bytes]:
    try:
        app = simulator.token_app(request.query_params.get("access_token"))
        answer = simulator.send_subscribe(app, _decode(await request.body(), SubscribeIn))
    except WechatAnswerError as refusal:
        return _refused(simulator, refusal)
    return _json(answer)


@post("/test/login-code", status_code=200)
async def test_login_code(data: JSONBody[LoginCodeIn], simulator: NamedDependency[WechatSimulator]) -> Response[bytes]:
    """What ``wx.login`` gives the front end."""
    try:
        return _json(simulator.issue_login_code(data))
    except WechatAnswerError as refusal:
        return _refused(simulator, refusal, 400)


@post("/test/phone-code", status_code=200)
async def test_phone_code(data: JSONBody[PhoneCodeIn], simulator: NamedDependency[WechatSimulator]) -> Response[bytes]:
    """What the getPhoneNumber button gives the front end once the user allows it."""
    try:
        return _json(simulator.issue_phone_code(data))
    except WechatAnswerError as refusal:
        return _refused(simulator, refusal, 400)


@post("/test/subscribe-grant", status_code=200)
async def test_subscribe_grant(
    data: JSONBody[SubscribeGrantIn], simulator: NamedDependency[WechatSimulator]
) -> Response[bytes]:
    """The user accepted ``wx.requestSubscribeMessage`` for the template ``count`` times (one send each)."""
    try:
        return _json(simulator.grant_subscription(data))
    except WechatAnswerError as refusal:
        return _refused(simulator, refusal, 400)


_helpers: list[ControllerRouterHandler] = [test_login_code, test_phone_code, test_subscribe_grant]
