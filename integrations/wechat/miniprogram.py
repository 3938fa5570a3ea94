"""Async client of the WeChat mini-program server APIs (protocols §1 and §8 item 1; DESIGN D9).

One client per app id: ``code2Session``, the stable access token (cached in the ephemeral store, one
refresher at a time), ``getuserphonenumber`` and ``subscribeMessage.send``, plus the legacy ``encryptedData``
decryption. WeChat answers HTTP 200 with ``{"errcode", "errmsg"}``; a missing ``errcode`` or ``0`` is success.

The app secret, the session_key, login codes and access tokens never appear in exceptions or logs: errors
carry the API name and the errcode only, and the ``httpx`` request log gets their query values redacted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from domain.account.ports import (
    LoginCodeError,
    ProviderRateLimitedError,
    ProviderRefusedUserError,
    ProviderUnavailableError,
    WechatSession,
)
from domain.kernel.clock import Clock
from domain.kernel.ephemeral import EphemeralStore, EphemeralStoreUnavailableError
from domain.kernel.errors import DomainError, ForbiddenError, ValidationError

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_BASE_URL: Final = "https://api.weixin.qq.com"

# errcodes (protocols §1)
SYSTEM_BUSY: Final = -1
INVALID_CREDENTIAL: Final = 40001
INVALID_OPENID: Final = 40003
INVALID_ACCESS_TOKEN: Final = 40014
INVALID_CODE: Final = 40029
INVALID_TEMPLATE_ID: Final = 40037
CODE_BEEN_USED: Final = 40163
HIGH_RISK_USER: Final = 40226
INVALID_PAGE: Final = 41030
ACCESS_TOKEN_EXPIRED: Final = 42001
SUBSCRIBE_REFUSED: Final = 43101
RATE_LIMITED: Final = 45011
DATA_FORMAT_ERROR: Final = 47001
TEMPLATE_DATA_INVALID: Final = 47003

TOKEN_ERRORS: Final = frozenset({INVALID_CREDENTIAL, INVALID_ACCESS_TOKEN, ACCESS_TOKEN_EXPIRED})
"""An API that used the access token answered one of these: refresh the token and retry once."""

_STATES: Final = frozenset({"developer", "trial", "formal"})
_LANGS: Final = frozenset({"zh_CN", "en_US", "zh_HK", "zh_TW"})

_TOKEN_EARLY_SECONDS: Final = 300
"""The stable token rotates 5 min before expiry (old and new both valid meanwhile): refresh by then."""
_TOKEN_MIN_TTL_SECONDS: Final = 60


class SubscribeRefusedError(ForbiddenError):
    """43101: the user has no remaining authorisation for this template (one-time templates give one send per
    accept of ``wx.requestSubscribeMessage``). Final: never retry, count the quota as spent."""

    code = "wechat.subscribe_refused"
    message = "用户未订阅该消息或已拒收"


class TemplateDataError(ValidationError):
    """47003: a template value breaks its keyword's rule (e.g. ``thing*`` at most 20 characters)."""

    code = "wechat.template_data_invalid"
    message = "订阅消息内容不符合模板要求"


class SubscribeRejectedError(ValidationError):
    """The message can never be sent as is: 40003 invalid openid, 40037 invalid template id, 41030 invalid
    page or unpublished mini-program, 47001 malformed body. Final, like 43101."""

    code = "wechat.subscribe_rejected"
    message = "订阅消息无法发送"


class UserDataError(ValidationError):
    """Legacy ``encryptedData`` that does not decrypt, is not JSON, or carries another app's watermark."""

    code = "wechat.user_data_invalid"
    message = "用户数据校验失败，请重试"


@dataclass(frozen=True, slots=True)
class WechatPhoneInfo:
    """``phone_info`` of getuserphonenumber; ``country_code`` as a string whatever WeChat sent."""

    phone_number: str
    pure_phone_number: str
    country_code: str


class WechatMiniProgramClient:
    """The :class:`~domain.account.ports.WechatMiniProgram` port on httpx, for one app id.

    ``http`` is shared and owned by the caller; ``base_url`` points at WeChat or at the sandbox simulator
    (``http://127.0.0.1:8000/sandbox/wechat`` in the demo). ``clock`` is the shared clock: a cached token
    is used only while it is fresh by that clock, so a demo clock moved forward refreshes it.
    """

    _lock_poll_interval: float = 0.05
    _lock_polls: int = 20

    def __init__(
        self,
        *,
        appid: str,
        secret: str,
        base_url: str = DEFAULT_BASE_URL,
        store: EphemeralStore,
        http: httpx.AsyncClient,
        clock: Clock,
        timeout_seconds: float = 5.0,
    ) -> None:
        if not appid or not secret:
            raise ValueError("a WeChat mini-program client needs an appid and a secret")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self._appid = appid
        self._secret = secret
        self._base_url = base_url.rstrip("/")
        self._store = store
        self._http = http
        self._clock = clock
        self._timeout = timeout_seconds
        self._token_key = f"wechat:mp:access_token:{appid}"
        self._lock_name = f"wechat:mp:access_token:{appid}"
        install_log_redaction()

    def __repr__(self) -> str:
        return f"WechatMiniProgramClient(appid={self._appid!r}, base_url={self._base_url!r})"

    @property
    def appid(self) -> str:
        return self._appid

    # --- code2Session ---------------------------------------------------------------------------------------

    async def code_to_session(self, code: str) -> WechatSession:
        """``GET /sns/jscode2session`` (no access token). 40029/40163: LoginCodeError; 45011 (100 calls a
        minute per user): ProviderRateLimitedError; 40226: ProviderRefusedUserError."""
        if not code:
            raise LoginCodeError("wechat code2Session: empty code")
        api = "code2Session"
        payload = await self._request(
            "GET",
            "/sns/jscode2session",
            api=api,
            params={
                "appid": self._appid,
                "secret": self._secret,
                "js_code": code,
                "grant_type": "authorization_code",
            },
        )
        errcode = _errcode(payload, api)
        if errcode != 0:
            raise self._login_error(api, errcode, payload)
        openid = payload.get("openid")
        session_key = payload.get("session_key")
        unionid = payload.get("unionid")
        if not isinstance(openid, str) or not openid or not isinstance(session_key, str) or not session_key:
            raise ProviderUnavailableError(f"wechat {api}: answer without openid or session_key")
        return WechatSession(
            openid=openid,
            session_key=session_key,
            unionid=unionid if isinstance(unionid, str) and unionid else None,
        )

    # --- getuserphonenumber ---------------------------------------------------------------------------------

    async def phone_number(self, code: str, *, openid: str | None = None) -> str:
        """The verified phone (``purePhoneNumber``, digits only) behind a getPhoneNumber button code."""
        return (await self.phone_info(code, openid=openid)).pure_phone_number

    async def phone_info(self, code: str, *, openid: str | None = None) -> WechatPhoneInfo:
        """``POST /wxa/business/getuserphonenumber``; ``openid`` makes WeChat check the code's binding.
        ``countryCode`` is documented as a string but shown as a number in the example: both are accepted."""
        api = "getPhoneNumber"
        if not code:
            raise _phone_code_error(api, INVALID_CODE)
        body: dict[str, object] = {"code": code}
        if openid:
            body["openid"] = openid
        payload = await self._call_with_token("/wxa/business/getuserphonenumber", body, api=api)
        errcode = _errcode(payload, api)
        if errcode in (INVALID_CODE, CODE_BEEN_USED):
            raise _phone_code_error(api, errcode)
        if errcode != 0:
            raise self._login_error(api, errcode, payload)
        info = payload.get("phone_info")
        if not isinstance(info, dict):
            raise ProviderUnavailableError(f"wechat {api}: answer without phone_info")
        pure = info.get("purePhoneNumber")
        if not isinstance(pure, str) or not pure.isdigit():
            raise ProviderUnavailableError(f"wechat {api}: answer without a purePhoneNumber")
        full = info.get("phoneNumber")
        country = info.get("countryCode")
        if isinstance(country, bool) or not isinstance(country, str | int):
            country = ""
        watermark = info.get("watermark")
        if isinstance(watermark, dict) and watermark.get("appid") not in (None, self._appid):
            raise ProviderUnavailableError(f"wechat {api}: watermark of another app")
        return WechatPhoneInfo(
            phone_number=full if isinstance(full, str) and full else pure,
            pure_phone_number=pure,
            country_code=str(country),
        )

    # --- subscribeMessage.send ------------------------------------------------------------------------------

    async def send_subscribe_message(
        self,
        openid: str,
        template_id: str,
        data: Mapping[str, str],
        *,
        page: str | None = None,
        state: str = "formal",
        lang: str = "zh_CN",
    ) -> str:
        """``POST /cgi-bin/message/subscribe/send``; returns the msgid (as a string: it exceeds 2^53).

        43101 raises SubscribeRefusedError and 47003 TemplateDataError, both final; 40003/40037/41030/47001
        raise SubscribeRejectedError (final too); anything else ProviderUnavailableError (retry later).
        """
        if state not in _STATES:
            raise ValueError(f"miniprogram_state must be one of {sorted(_STATES)}")
        if lang not in _LANGS:
            raise ValueError(f"lang must be one of {sorted(_LANGS)}")
        api = "subscribeMessage.send"
        body: dict[str, object] = {
            "touser": openid,
            "template_id": template_id,
            "miniprogram_state": state,
            "lang": lang,
            "data": {key: {"value": value} for key, value in data.items()},
        }
        if page:
            body["page"] = page
        payload = await self._call_with_token("/cgi-bin/message/subscribe/send", body, api=api)
        errcode = _errcode(payload, api)
        extra = {"api": api, "errcode": errcode}
        if errcode == SUBSCRIBE_REFUSED:
            raise SubscribeRefusedError(f"wechat {api}: errcode {errcode}", extra=extra)
        if errcode == TEMPLATE_DATA_INVALID:
            raise TemplateDataError(f"wechat {api}: errcode {errcode}", extra=extra)
        if errcode in (INVALID_OPENID, INVALID_TEMPLATE_ID, INVALID_PAGE, DATA_FORMAT_ERROR):
            raise SubscribeRejectedError(f"wechat {api}: errcode {errcode}", extra=extra)
        if errcode != 0:
            raise ProviderUnavailableError(
                f"wechat {api}: errcode {errcode}", message="消息服务暂时不可用，请稍后再试", extra=extra
            )
        msgid = payload.get("msgid")
        if isinstance(msgid, bool) or not isinstance(msgid, int | str) or str(msgid) == "":
            raise ProviderUnavailableError(f"wechat {api}: answer without msgid", extra={"api": api})
        return str(msgid)

    # --- the stable access token ----------------------------------------------------------------------------

    async def access_token(self) -> str:
        """The app's access token from the cache, or from ``POST /cgi-bin/stable_token`` by one refresher."""
        cached = await self._cached_token()
        if cached is not None:
            return cached
        return await self._refresh(force=False, stale=None)

    async def _call_with_token(self, path: str, body: Mapping[str, object], *, api: str) -> dict[str, Any]:
        """Call an API with the token; on 40001/40014/42001 drop it, force one refresh and retry once."""
        token = await self.access_token()
        payload = await self._request("POST", path, api=api, params={"access_token": token}, json_body=body)
        errcode = _errcode(payload, api)
        if errcode not in TOKEN_ERRORS:
            return payload
        logger.warning("wechat %s: access token refused (errcode %d), refreshing", api, errcode)
        token = await self._refresh(force=True, stale=token)
        payload = await self._request("POST", path, api=api, params={"access_token": token}, json_body=body)
        errcode = _errcode(payload, api)
        if errcode in TOKEN_ERRORS:
            raise ProviderUnavailableError(
                f"wechat {api}: fresh access token refused (errcode {errcode})",
                extra={"api": api, "errcode": errcode},
            )
        return payload

    async def _refresh(self, *, force: bool, stale: str | None) -> str:
        """One refresher per app id across processes: the lock holder fetches and caches; the others poll
        the cache briefly, then fetch in normal mode themselves (the stable token is the same while valid).

        ``stale`` is a token WeChat refused: it is dropped from the cache, and a token other than it that
        another refresher cached meanwhile is used without forcing a second refresh (a forced refresh
        invalidates the previous token, so competing forced refreshes would knock each other out).
        """
        if stale is not None and await self._cached_token() == stale:
            await _store_call(self._store.delete(self._token_key), 0)
        lock_token = secrets.token_hex(16)
        held = await _store_call(
            self._store.acquire_lock(self._lock_name, token=lock_token, ttl_seconds=self._timeout + 2.0), True
        )
        if held:
            try:
                cached = await self._cached_token()
                if cached is not None and cached != stale:
                    return cached
                return await self._fetch_and_cache(force=force)
            finally:
                await _store_call(self._store.release_lock(self._lock_name, token=lock_token), False)
        for _ in range(self._lock_polls):
            await asyncio.sleep(self._lock_poll_interval)
            cached = await self._cached_token()
            if cached is not None and cached != stale:
                return cached
        return await self._fetch_and_cache(force=False)

    async def _fetch_and_cache(self, *, force: bool) -> str:
        token, expires_in = await self._fetch_stable_token(force=force)
        ttl = max(_TOKEN_MIN_TTL_SECONDS, expires_in - _TOKEN_EARLY_SECONDS)
        record = {"access_token": token, "expires_at": self._clock.now().timestamp() + ttl}
        await _store_call(self._store.set(self._token_key, json.dumps(record).encode("utf-8"), ttl_seconds=ttl), None)
        logger.info("wechat access token refreshed for %s (forced: %s, ttl %d s)", self._appid, force, ttl)
        return token

    async def _fetch_stable_token(self, *, force: bool) -> tuple[str, int]:
        """``POST /cgi-bin/stable_token``: normal mode returns the same token while valid; ``force_refresh``
        (20 a day, 30 s apart) issues a new one and invalidates the previous."""
        api = "stable_token"
        payload = await self._request(
            "POST",
            "/cgi-bin/stable_token",
            api=api,
            json_body={
                "grant_type": "client_credential",
                "appid": self._appid,
                "secret": self._secret,
                "force_refresh": force,
            },
        )
        errcode = _errcode(payload, api)
        if errcode != 0:
            raise ProviderUnavailableError(f"wechat {api}: errcode {errcode}", extra={"api": api, "errcode": errcode})
        token = payload.get("access_token")
        expires_in = payload.get("expires_in")
        if (
            not isinstance(token, str)
            or not token
            or isinstance(expires_in, bool)
            or not isinstance(expires_in, int)
            or expires_in <= 0
        ):
            raise ProviderUnavailableError(f"wechat {api}: answer without access_token or expires_in")
        return token, expires_in

    async def _cached_token(self) -> str | None:
        raw = await _store_call(self._store.get(self._token_key), None)
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            token, expires_at = record["access_token"], float(record["expires_at"])
        except (ValueError, TypeError, KeyError):
            return None
        if not isinstance(token, str) or not token or self._clock.now().timestamp() >= expires_at:
            return None
        return token

    # --- transport ------------------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        api: str,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, object] | None = None,
    ) -> dict[str, Any]:
        """One HTTP exchange, bounded by ``timeout_seconds`` overall; transport failures, non-200 answers and
        non-JSON bodies are ProviderUnavailableError. The httpx error is not chained: its text may hold the
        URL, whose query carries the secret or the token."""
        extra = {"api": api}
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.request(
                    method, self._base_url + path, params=params, json=json_body, timeout=self._timeout
                )
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderUnavailableError(f"wechat {api}: timed out", extra=extra) from None
        except httpx.HTTPError as exc:
            raise ProviderUnavailableError(f"wechat {api}: {type(exc).__name__}", extra=extra) from None
        if response.status_code != httpx.codes.OK:
            raise ProviderUnavailableError(f"wechat {api}: HTTP {response.status_code}", extra=extra)
        try:
            payload = json.loads(response.content)
        except ValueError:
            raise ProviderUnavailableError(f"wechat {api}: answer is not JSON", extra=extra) from None
        if not isinstance(payload, dict):
            raise ProviderUnavailableError(f"wechat {api}: answer is not a JSON object", extra=extra)
        return payload

    def _login_error(self, api: str, errcode: int, payload: Mapping[str, Any]) -> DomainError:
        """The port's error for a login-side errcode (code2Session, getuserphonenumber)."""
        detail = f"wechat {api}: errcode {errcode}"
        extra: dict[str, object] = {"api": api, "errcode": errcode}
        errmsg = payload.get("errmsg")
        if isinstance(errmsg, str) and errmsg:
            extra["errmsg"] = errmsg.replace(self._secret, "***")[:200]
        if errcode in (INVALID_CODE, CODE_BEEN_USED):
            return LoginCodeError(detail, extra=extra)
        if errcode == RATE_LIMITED:
            return ProviderRateLimitedError(detail, retry_after=60, extra=extra)
        if errcode == HIGH_RISK_USER:
            return ProviderRefusedUserError(detail, extra=extra)
        return ProviderUnavailableError(detail, extra=extra)


async def _store_call(call: Awaitable[_T], fallback: _T) -> _T:
    """The store is a cache here: when it is down, go without it (one fetch per call at worst)."""
    try:
        return await call
    except EphemeralStoreUnavailableError:
        logger.warning("wechat access token cache unavailable")
        return fallback


def _phone_code_error(api: str, errcode: int) -> LoginCodeError:
    return LoginCodeError(
        f"wechat {api}: errcode {errcode}",
        message="手机号授权已失效，请重新授权",
        extra={"api": api, "errcode": errcode},
    )


def _errcode(payload: Mapping[str, Any], api: str) -> int:
    """A missing ``errcode`` is success (code2Session often omits it since late 2022)."""
    errcode = payload.get("errcode", 0)
    if errcode is None:
        return 0
    if isinstance(errcode, bool) or not isinstance(errcode, int):
        raise ProviderUnavailableError(f"wechat {api}: errcode is not a number", extra={"api": api})
    return errcode


# --- legacy encryptedData ----------------------------------------------------------------------------------


def decrypt_user_data(session_key: str, encrypted_data: str, iv: str, appid: str) -> dict[str, Any]:
    """Decrypt legacy ``encryptedData`` (protocols §1.3): AES-128-CBC keyed by base64(session_key) with the
    base64 ``iv``, PKCS#7 padding, JSON whose ``watermark.appid`` must be ours."""
    try:
        key = base64.b64decode(session_key, validate=True)
        nonce = base64.b64decode(iv, validate=True)
        data = base64.b64decode(encrypted_data, validate=True)
    except (binascii.Error, ValueError):
        raise UserDataError("encrypted user data: bad base64") from None
    if len(key) != 16 or len(nonce) != 16 or not data or len(data) % 16:
        raise UserDataError("encrypted user data: bad key, iv or length")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(nonce)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
        decoded = json.loads(plain)
    except ValueError:
        raise UserDataError("encrypted user data: does not decrypt") from None
    if not isinstance(decoded, dict):
        raise UserDataError("encrypted user data: not a JSON object")
    watermark = decoded.get("watermark")
    if not isinstance(watermark, dict) or watermark.get("appid") != appid:
        raise UserDataError("encrypted user data: watermark of another app")
    return decoded


# --- log redaction -----------------------------------------------------------------------------------------

_SENSITIVE_PARAMS: Final = frozenset({"secret", "js_code", "access_token", "code"})


class _RedactSensitiveQuery(logging.Filter):
    """Replaces the values of sensitive query parameters in URLs that httpx logs ("HTTP Request: ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(arg, httpx.URL) for arg in args):
            record.args = tuple(redact_url(arg) if isinstance(arg, httpx.URL) else arg for arg in args)
        return True


def redact_url(url: httpx.URL) -> httpx.URL:
    if not url.query:
        return url
    params = [(k, "REDACTED" if k in _SENSITIVE_PARAMS else v) for k, v in url.params.multi_items()]
    return url.copy_with(params=params)


def install_log_redaction() -> None:
    """Idempotently add the redacting filter to the ``httpx`` logger."""
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactSensitiveQuery) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactSensitiveQuery())
