"""Async client of the national e-health-card platform (Tencent health-card open platform, protocols §6).

Every call is ``POST application/json`` of ``{"commonIn": {...}, "req": {...}}``; ``commonIn`` carries the
appToken, a fresh 32-hex ``requestId``, the platform hospital id, the unix ``timestamp`` (a string),
``channelNum`` 0 and the ``sign`` (``integrations.healthcard.signing``). The answer is
``{"commonOut": {"requestId", "resultCode", "errMsg"}, "rsp": {...}}``; ``resultCode`` 0 is success.

The appToken: ``getAppToken`` issues one per app id and re-fetching invalidates the previous one, so there is
one refresher at a time: an ``asyncio.Lock`` in the process and, with a shared ``token_cache``, a lock in the
ephemeral store across processes. The token is cached until ``expiresIn`` minus a margin (60 s, as the
goairix/wx SDK does) by the client's clock, and fetched again once when the platform refuses it.

Answer signatures: the platform itself does not sign answers (the goairix/wx SDK has no ``commonOut.sign``);
our sandbox does (``signing.sign_response``). With ``require_response_signature`` (the default) a success
must carry a signature that verifies; a failure that carries one must verify too; an unsigned failure is
taken as a failure, since it can only make us give up, never grant anything (the sandbox cannot sign an answer
to a request it could not authenticate). A signature that does not verify raises
``HealthCardBadResponseError`` and nothing of that answer is used.

Personal data: names, ID numbers, phones, codes and QR texts never appear in exceptions or logs; the
platform's ``errMsg`` is kept in ``extra`` only, with the request's own personal values and the secrets
blanked out and the rest scrubbed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, TypeVar

import httpx

from domain.kernel.clock import Clock, ensure_utc, to_shanghai
from domain.kernel.ephemeral import EphemeralStore, EphemeralStoreUnavailableError
from domain.kernel.errors import ConflictError, UpstreamError
from domain.privacy.scrub import scrub_text
from integrations.healthcard.signing import SIGN, sign_request, verify_response

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_BASE_URL: Final = "https://p-healthopen.tengmed.com"
APP_TOKEN_PATH: Final = "/rest/auth/HealthCard/HealthOpenAuth/AuthObj/getAppToken"  # noqa: S105 - a path
ISV_PATH: Final = "/rest/auth/HealthCard/HealthOpenPlatform/ISVOpenObj/"

REGISTER_HEALTH_CARD: Final = "registerHealthCard"
GET_BY_HEALTH_CODE: Final = "getHealthCardByHealthCode"
GET_BY_QR_CODE: Final = "getHealthCardByQRCode"
GET_DYNAMIC_QR_CODE: Final = "getDynamicQRCode"
VERIFY_QR_CODE: Final = "verifyQRCode"
BIND_CARD_RELATION: Final = "bindCardRelation"
REPORT_HIS_DATA: Final = "reportHISData"

ID_TYPE_RESIDENT_CARD: Final = "01"
"""``idType`` of the mainland resident ID card."""
CODE_TYPE_DYNAMIC: Final = "0"
CODE_TYPE_STATIC: Final = "1"
"""``codeType`` of getDynamicQRCode. Not confirmed with the platform's documents (unavailable offline): these
mirror the flag inside the QR texts (``…:0:…`` dynamic, ``…:1`` static)."""
GENDERS: Final = frozenset({"男", "女"})
REPORT_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
"""``time`` of reportHISData / verifyQRCode: Beijing time, ``2018-10-02 16:36:57``."""

DEFAULT_TOKEN_MARGIN_SECONDS: Final = 60.0
"""The goairix/wx SDK ends a cached appToken 60 s before the platform's ``expiresIn``."""
DEFAULT_DYNAMIC_CODE_LIFETIME_SECONDS: Final = 300.0
"""getDynamicQRCode answers no expiry and the goairix/wx SDK sets none; 5 minutes here, configurable."""

_LOCK_POLL_INTERVAL: Final = 0.05
_LOCK_POLLS: Final = 40
_ERRMSG_LIMIT: Final = 200


@dataclass(frozen=True, slots=True)
class HealthCardResultCodes:
    """Which ``resultCode`` values mean what.

    The platform's code table (open.tengmed.com) could not be consulted: the defaults are the sandbox's codes.
    Set the platform's own values here once confirmed; any other non-zero code is a plain rejection.
    """

    token_invalid: frozenset[int] = frozenset({-10003})
    bad_signature: frozenset[int] = frozenset({-10002})
    code_used: frozenset[int] = frozenset({-11001})
    qr_expired: frozenset[int] = frozenset({-11002})


DEFAULT_RESULT_CODES: Final = HealthCardResultCodes()


# --- errors ------------------------------------------------------------------------------------------------


class HealthCardUnavailableError(UpstreamError):
    """The platform could not be reached, timed out, answered 5xx, or kept refusing a fresh appToken."""

    code = "healthcard.unavailable"
    message = "电子健康卡服务暂时不可用，请稍后再试"


class HealthCardBadResponseError(UpstreamError):
    """An answer that is not the platform's shape, or whose signature does not verify: nothing of it is used."""

    code = "healthcard.bad_response"
    message = "电子健康卡服务返回异常，请稍后再试"


class HealthCardRejectedError(ConflictError):
    """The platform answered a non-zero ``resultCode``; ``result_code`` carries it."""

    code = "healthcard.rejected"
    message = "电子健康卡平台未受理本次请求，请核对信息后重试"

    def __init__(
        self,
        detail: str | None = None,
        *,
        result_code: int,
        api: str,
        err_msg: str | None = None,
    ) -> None:
        extra: dict[str, object] = {"api": api, "resultCode": result_code}
        if err_msg:
            extra["errMsg"] = err_msg
        super().__init__(detail, extra=extra)
        self.result_code = result_code
        self.api = api


class HealthCardCodeUsedError(HealthCardRejectedError):
    """The one-time health code was already used, has expired or is unknown."""

    code = "healthcard.code_used"
    message = "健康卡授权码已使用或已失效，请重新授权"


class HealthCardQrExpiredError(HealthCardRejectedError):
    """The dynamic QR code has expired."""

    code = "healthcard.qr_expired"
    message = "健康卡二维码已过期，请刷新二维码后重试"


class HealthCardBadSignatureError(HealthCardRejectedError):
    """The platform refused our request signature: the app secret (or our signing) is wrong."""

    code = "healthcard.bad_signature"
    message = "电子健康卡服务配置有误，请联系工作人员"


# --- results -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthCard:
    """A card as the platform answers it; personal fields stay out of ``repr``."""

    health_card_id: str
    qr_code_text: str = field(repr=False)
    phid: str = ""
    name: str = field(default="", repr=False)
    gender: str = field(default="", repr=False)
    nation: str = ""
    birthday: str = field(default="", repr=False)
    id_type: str = ""
    id_number: str = field(default="", repr=False)
    phone: str = field(default="", repr=False)
    phone2: str = field(default="", repr=False)
    address: str = field(default="", repr=False)
    patid: str = ""
    relation: str = ""
    admin_ext: str = ""


@dataclass(frozen=True, slots=True)
class DynamicQrCode:
    """getDynamicQRCode: the QR text, the PNG image, and when the code stops being accepted (None for a
    static code, which does not expire)."""

    health_card_id: str
    qr_code_text: str = field(repr=False)
    image: bytes = field(repr=False)
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class QrCodeVerification:
    """verifyQRCode: whether the platform accepted the code, and the card behind it."""

    result: bool
    card: HealthCard


# --- the client --------------------------------------------------------------------------------------------


class HealthCardClient:
    """One ISV app's client for one platform hospital id.

    ``http`` is shared and owned by the caller; ``base_url`` points at the platform or at the sandbox
    (``http://127.0.0.1:8000/sandbox/healthcard`` in the demo). ``clock`` is the shared clock (a ``Clock`` or a
    callable returning an aware datetime): it stamps requests, ages the cached token and dates dynamic codes.
    ``token_cache`` shares the appToken between processes; without it the token lives in this object.
    """

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str,
        hospital_id: str,
        http: httpx.AsyncClient,
        clock: Clock | Callable[[], datetime],
        base_url: str = DEFAULT_BASE_URL,
        relate_app_id: str | None = None,
        token_cache: EphemeralStore | None = None,
        timeout_seconds: float = 5.0,
        token_margin_seconds: float = DEFAULT_TOKEN_MARGIN_SECONDS,
        dynamic_code_lifetime_seconds: float = DEFAULT_DYNAMIC_CODE_LIFETIME_SECONDS,
        require_response_signature: bool = True,
        result_codes: HealthCardResultCodes = DEFAULT_RESULT_CODES,
        channel_num: int = 0,
    ) -> None:
        if not app_id or not app_secret or not hospital_id:
            raise ValueError("a health-card client needs an app id, an app secret and a hospital id")
        if timeout_seconds <= 0 or dynamic_code_lifetime_seconds <= 0 or token_margin_seconds < 0:
            raise ValueError("timeouts and lifetimes must be positive")
        self._app_id = app_id
        self._app_secret = app_secret
        self._hospital_id = hospital_id
        self._http = http
        self._now: Callable[[], datetime] = clock if callable(clock) else clock.now
        self._base_url = base_url.rstrip("/")
        self._relate_app_id = relate_app_id
        self._store = token_cache
        self._timeout = timeout_seconds
        self._token_margin = token_margin_seconds
        self._dynamic_lifetime = timedelta(seconds=dynamic_code_lifetime_seconds)
        self._require_signature = require_response_signature
        self._codes = result_codes
        self._channel_num = channel_num
        self._token: tuple[str, float] | None = None
        """The in-process appToken and the unix time it stops being used."""
        self._lock = asyncio.Lock()
        self._cache_key = f"healthcard:app_token:{app_id}"

    def __repr__(self) -> str:
        return (
            f"HealthCardClient(app_id={self._app_id!r}, hospital_id={self._hospital_id!r}, base_url={self._base_url!r})"
        )

    @property
    def app_id(self) -> str:
        return self._app_id

    # --- appToken --------------------------------------------------------------------------------------------

    async def get_app_token(self) -> str:
        """The cached appToken, or a new one fetched by the single refresher."""
        cached = await self._cached_token()
        if cached is not None:
            return cached
        return await self._refresh(stale=None)

    async def _refresh(self, *, stale: str | None) -> str:
        """Fetch a token unless someone else did meanwhile; ``stale`` is one the platform refused."""
        async with self._lock:
            cached = await self._cached_token()
            if cached is not None and cached != stale:
                return cached
            if self._store is None:
                return await self._fetch_and_cache()
            lock_token = secrets.token_hex(16)
            held = await _store_call(
                self._store.acquire_lock(self._cache_key, token=lock_token, ttl_seconds=self._timeout + 2.0), True
            )
            if held:
                try:
                    cached = await self._cached_token()
                    if cached is not None and cached != stale:
                        return cached
                    return await self._fetch_and_cache()
                finally:
                    await _store_call(self._store.release_lock(self._cache_key, token=lock_token), False)
            for _ in range(_LOCK_POLLS):
                await asyncio.sleep(_LOCK_POLL_INTERVAL)
                cached = await self._cached_token()
                if cached is not None and cached != stale:
                    return cached
            return await self._fetch_and_cache()

    async def _fetch_and_cache(self) -> str:
        token, expires_in = await self._fetch_app_token()
        keep = expires_in - self._token_margin if expires_in > self._token_margin else float(expires_in)
        expires_at = self._now().timestamp() + keep
        self._token = (token, expires_at)
        if self._store is not None:
            record = json.dumps({"appToken": token, "expiresAt": expires_at}).encode("utf-8")
            await _store_call(self._store.set(self._cache_key, record, ttl_seconds=keep), None)
        logger.info("healthcard appToken fetched for %s (kept %d s)", self._app_id, keep)
        return token

    async def _fetch_app_token(self) -> tuple[str, int]:
        api = "getAppToken"
        common_out, rsp = await self._exchange(APP_TOKEN_PATH, api, {"appId": self._app_id}, token="", relate=None)
        result_code = _result_code(common_out, api)
        if result_code != 0:
            raise self._rejection(api, result_code, common_out, ())
        token = rsp.get("appToken")
        expires_in = rsp.get("expiresIn")
        if (
            not isinstance(token, str)
            or not token
            or isinstance(expires_in, bool)
            or not isinstance(expires_in, int)
            or expires_in <= 0
        ):
            raise HealthCardBadResponseError(f"healthcard {api}: answer without appToken or expiresIn")
        return token, expires_in

    async def _cached_token(self) -> str | None:
        now = self._now().timestamp()
        if self._store is not None:
            raw = await _store_call(self._store.get(self._cache_key), None)
            if raw is not None:
                try:
                    record = json.loads(raw)
                    token, expires_at = record["appToken"], float(record["expiresAt"])
                except (ValueError, TypeError, KeyError):
                    token, expires_at = None, 0.0
                if isinstance(token, str) and token and now < expires_at:
                    return token
        if self._token is not None and now < self._token[1]:
            return self._token[0]
        return None

    # --- card APIs -------------------------------------------------------------------------------------------

    async def register_health_card(
        self,
        *,
        wechat_code: str,
        name: str,
        gender: str,
        nation: str,
        birthday: date | str,
        id_number: str,
        phone: str,
        id_type: str = ID_TYPE_RESIDENT_CARD,
        patid: str | None = None,
        relation: str | None = None,
        address: str | None = None,
    ) -> HealthCard:
        """``registerHealthCard``: one person has one card, so registering a person again answers their card.
        ``wechat_code`` comes from the health-card plugin or authorisation page."""
        if gender not in GENDERS:
            raise ValueError("gender must be 男 or 女")
        born = birthday.isoformat() if isinstance(birthday, date) else birthday
        req: dict[str, object] = {
            "wechatCode": wechat_code,
            "name": name,
            "gender": gender,
            "nation": nation,
            "birthday": born,
            "idNumber": id_number,
            "idType": id_type,
            "phone1": phone,
        }
        _put_optional(req, patid=patid, relation=relation, address=address)
        sensitive = (wechat_code, name, id_number, phone, address or "")
        rsp = await self._call(REGISTER_HEALTH_CARD, req, sensitive=sensitive)
        health_card_id = _text(rsp, "healthCardId")
        qr_code_text = _text(rsp, "qrCodeText")
        if not health_card_id or not qr_code_text:
            raise HealthCardBadResponseError(
                f"healthcard {REGISTER_HEALTH_CARD}: answer without healthCardId or qrCodeText"
            )
        return HealthCard(
            health_card_id=health_card_id,
            qr_code_text=qr_code_text,
            phid=_text(rsp, "phid"),
            name=name,
            gender=gender,
            nation=nation,
            birthday=born,
            id_type=id_type,
            id_number=id_number,
            phone=phone,
            address=address or "",
            patid=patid or "",
            relation=relation or "",
            admin_ext=_text(rsp, "adminExt"),
        )

    async def get_by_health_code(self, health_code: str, *, relate_app_id: str, relate_open_id: str) -> HealthCard:
        """``getHealthCardByHealthCode``: the card behind a one-time health code (single use)."""
        relate = self._relate(relate_app_id, relate_open_id)
        rsp = await self._call(GET_BY_HEALTH_CODE, {"healthCode": health_code}, relate=relate, sensitive=(health_code,))
        return _card(rsp, GET_BY_HEALTH_CODE)

    async def get_by_qr_code(self, qr_code_text: str) -> HealthCard:
        """``getHealthCardByQRCode``: the card behind a static or (unexpired) dynamic QR text."""
        rsp = await self._call(GET_BY_QR_CODE, {"qrCodeText": qr_code_text}, sensitive=(qr_code_text,))
        return _card(rsp, GET_BY_QR_CODE)

    async def get_dynamic_qr_code(
        self,
        health_card_id: str,
        id_type: str,
        id_number: str,
        code_type: str = CODE_TYPE_DYNAMIC,
        *,
        relate_open_id: str,
        relate_app_id: str | None = None,
    ) -> DynamicQrCode:
        """``getDynamicQRCode`` (needs the relate ids, per the goairix/wx SDK). The platform gives no expiry:
        a dynamic code is taken to expire ``dynamic_code_lifetime_seconds`` after it was fetched."""
        relate = self._relate(relate_app_id, relate_open_id)
        req: dict[str, object] = {
            "healthCardId": health_card_id,
            "idType": id_type,
            "idNumber": id_number,
            "codeType": code_type,
        }
        fetched_at = ensure_utc(self._now())
        rsp = await self._call(GET_DYNAMIC_QR_CODE, req, relate=relate, sensitive=(id_number,))
        qr_code_text = _text(rsp, "qrCodeText")
        if not qr_code_text:
            raise HealthCardBadResponseError(f"healthcard {GET_DYNAMIC_QR_CODE}: answer without qrCodeText")
        return DynamicQrCode(
            health_card_id=_text(rsp, "healthCardId") or health_card_id,
            qr_code_text=qr_code_text,
            image=_image(rsp.get("qrCodeImg")),
            expires_at=fetched_at + self._dynamic_lifetime if code_type != CODE_TYPE_STATIC else None,
        )

    async def verify_qr_code(
        self,
        qr_code_text: str,
        *,
        used_at: datetime | None = None,
        terminal_id: str | None = None,
        medical_step: str | None = None,
        channel_code: str | None = None,
        hospital_code: str | None = None,
        hospital_name: str | None = None,
        use_city_code: str | None = None,
        use_city_name: str | None = None,
        org_id: str | None = None,
    ) -> QrCodeVerification:
        """``verifyQRCode`` (a terminal scanned the code); ``used_at`` defaults to now."""
        req: dict[str, object] = {
            "qrCodeText": qr_code_text,
            "time": _beijing(used_at or self._now()),
        }
        _put_optional(
            req,
            terminalId=terminal_id,
            medicalStep=medical_step,
            channelCode=channel_code,
            hospitalCode=hospital_code,
            hospitalName=hospital_name,
            useCityCode=use_city_code,
            useCityName=use_city_name,
            orgId=org_id,
        )
        rsp = await self._call(VERIFY_QR_CODE, req, sensitive=(qr_code_text,))
        result = rsp.get("result", True)
        if not isinstance(result, bool):
            raise HealthCardBadResponseError(f"healthcard {VERIFY_QR_CODE}: result is not a boolean")
        return QrCodeVerification(result=result, card=_card(rsp, VERIFY_QR_CODE))

    async def bind_card_relation(self, patid: str, qr_code_text: str) -> bool:
        """``bindCardRelation``: bind the hospital's patient id to the card."""
        rsp = await self._call(
            BIND_CARD_RELATION, {"patid": patid, "qrCodeText": qr_code_text}, sensitive=(qr_code_text,)
        )
        result = rsp.get("result")
        if not isinstance(result, bool):
            raise HealthCardBadResponseError(f"healthcard {BIND_CARD_RELATION}: answer without a boolean result")
        return result

    async def report_his_data(
        self,
        *,
        qr_code_text: str,
        used_at: datetime,
        hospital_code: str,
        scene: str,
        card_type: str,
        card_channel: str,
        relate_open_id: str,
        relate_app_id: str | None = None,
        department: str | None = None,
        card_cost_types: str | None = None,
        sub_hospital_code: str | None = None,
    ) -> None:
        """``reportHISData``, the card-use report (用卡数据监测); ``time`` is ``used_at`` in Beijing time. The
        code tables of scene, department, cardType, cardChannel and cardCostTypes are the platform's
        (configuration); the relate ids are required per the goairix/wx SDK."""
        relate = self._relate(relate_app_id, relate_open_id)
        req: dict[str, object] = {
            "qrCodeText": qr_code_text,
            "time": _beijing(used_at),
            "hospitalCode": hospital_code,
            "scene": scene,
            "cardType": card_type,
            "cardChannel": card_channel,
        }
        _put_optional(req, subHospitalCode=sub_hospital_code, department=department, cardCostTypes=card_cost_types)
        await self._call(REPORT_HIS_DATA, req, relate=relate, sensitive=(qr_code_text,))

    # --- the exchange ----------------------------------------------------------------------------------------

    def _relate(self, relate_app_id: str | None, relate_open_id: str) -> tuple[str, str]:
        app = relate_app_id or self._relate_app_id
        if not app or not relate_open_id:
            raise ValueError("this API needs relateAppId and relateOpenId")
        return app, relate_open_id

    async def _call(
        self,
        api: str,
        req: Mapping[str, object],
        *,
        relate: tuple[str, str] | None = None,
        sensitive: Iterable[str] = (),
    ) -> dict[str, Any]:
        """One API call with the appToken; a refused token is replaced once and the call retried."""
        path = ISV_PATH + api
        token = await self.get_app_token()
        common_out, rsp = await self._exchange(path, api, req, token=token, relate=relate)
        result_code = _result_code(common_out, api)
        if result_code in self._codes.token_invalid:
            logger.warning("healthcard %s: appToken refused (resultCode %d), fetching a new one", api, result_code)
            token = await self._refresh(stale=token)
            common_out, rsp = await self._exchange(path, api, req, token=token, relate=relate)
            result_code = _result_code(common_out, api)
            if result_code in self._codes.token_invalid:
                raise HealthCardUnavailableError(
                    f"healthcard {api}: a fresh appToken was refused (resultCode {result_code})",
                    extra={"api": api, "resultCode": result_code},
                )
        if result_code != 0:
            raise self._rejection(api, result_code, common_out, (*sensitive, token))
        return rsp

    async def _exchange(
        self,
        path: str,
        api: str,
        req: Mapping[str, object],
        *,
        token: str,
        relate: tuple[str, str] | None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One signed request; returns the answer's ``commonOut`` and ``rsp`` once its signature is checked."""
        request_id = secrets.token_hex(16).upper()
        common_in: dict[str, object] = {
            "appToken": token,
            "requestId": request_id,
            "hospitalId": self._hospital_id,
            "timestamp": str(int(self._now().timestamp())),
            "channelNum": self._channel_num,
        }
        if relate is not None:
            common_in["relateAppId"], common_in["relateOpenId"] = relate
        common_in[SIGN] = sign_request(common_in, req, app_secret=self._app_secret)
        body = json.dumps({"commonIn": common_in, "req": dict(req)}, ensure_ascii=False, separators=(",", ":"))
        extra = {"api": api}
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(
                    self._base_url + path,
                    content=body.encode("utf-8"),
                    headers={"Content-Type": "application/json; charset=utf-8", "Accept": "application/json"},
                    timeout=self._timeout,
                )
        except (TimeoutError, httpx.TimeoutException):
            raise HealthCardUnavailableError(f"healthcard {api}: timed out", extra=extra) from None
        except httpx.HTTPError as exc:
            raise HealthCardUnavailableError(f"healthcard {api}: {type(exc).__name__}", extra=extra) from None
        status = response.status_code
        if status >= 500 or status == httpx.codes.TOO_MANY_REQUESTS:
            raise HealthCardUnavailableError(f"healthcard {api}: HTTP {status}", extra=extra)
        if status != httpx.codes.OK:
            raise HealthCardBadResponseError(f"healthcard {api}: HTTP {status}", extra=extra)
        try:
            payload = json.loads(response.content)
        except ValueError:
            raise HealthCardBadResponseError(f"healthcard {api}: answer is not JSON", extra=extra) from None
        common_out = payload.get("commonOut") if isinstance(payload, dict) else None
        if not isinstance(common_out, dict):
            raise HealthCardBadResponseError(f"healthcard {api}: answer without commonOut", extra=extra)
        raw_rsp = payload.get("rsp")
        if raw_rsp is not None and not isinstance(raw_rsp, dict):
            raise HealthCardBadResponseError(f"healthcard {api}: rsp is not an object", extra=extra)
        self._check_signature(api, request_id, common_out, raw_rsp)
        return common_out, raw_rsp or {}

    def _check_signature(
        self, api: str, request_id: str, common_out: Mapping[str, Any], rsp: Mapping[str, Any] | None
    ) -> None:
        """See the module docstring. A signed answer must also answer our own request id (no replays)."""
        extra = {"api": api}
        signature = common_out.get(SIGN)
        if signature is not None and not isinstance(signature, str):
            raise HealthCardBadResponseError(f"healthcard {api}: sign is not a string", extra=extra)
        if signature:
            if not verify_response(common_out, rsp, signature, app_secret=self._app_secret):
                raise HealthCardBadResponseError(f"healthcard {api}: the signature does not verify", extra=extra)
            if common_out.get("requestId") != request_id:
                raise HealthCardBadResponseError(f"healthcard {api}: a signed answer to another request", extra=extra)
        elif self._require_signature and common_out.get("resultCode") == 0:
            raise HealthCardBadResponseError(f"healthcard {api}: a success answer without a signature", extra=extra)

    def _rejection(
        self, api: str, result_code: int, common_out: Mapping[str, Any], sensitive: Iterable[str]
    ) -> HealthCardRejectedError:
        err_msg = common_out.get("errMsg")
        cleaned = _sanitize(err_msg, (*sensitive, self._app_secret)) if isinstance(err_msg, str) else None
        detail = f"healthcard {api}: resultCode {result_code}"
        kind: type[HealthCardRejectedError] = HealthCardRejectedError
        if result_code in self._codes.bad_signature:
            kind = HealthCardBadSignatureError
        elif result_code in self._codes.code_used:
            kind = HealthCardCodeUsedError
        elif result_code in self._codes.qr_expired:
            kind = HealthCardQrExpiredError
        return kind(detail, result_code=result_code, api=api, err_msg=cleaned)


# --- helpers -----------------------------------------------------------------------------------------------


async def _store_call(call: Awaitable[_T], fallback: _T) -> _T:
    """The store is a cache here: when it is down, go without it (the in-process token still serves)."""
    try:
        return await call
    except EphemeralStoreUnavailableError:
        logger.warning("healthcard appToken cache unavailable")
        return fallback


def _result_code(common_out: Mapping[str, Any], api: str) -> int:
    code = common_out.get("resultCode")
    if isinstance(code, bool) or not isinstance(code, int):
        raise HealthCardBadResponseError(f"healthcard {api}: resultCode is not a number", extra={"api": api})
    return code


def _text(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else ""


def _card(rsp: Mapping[str, Any], api: str) -> HealthCard:
    """A card from ``rsp.card``, or from ``rsp`` itself when the card fields are at the top level."""
    nested = rsp.get("card")
    source: Mapping[str, Any] = nested if isinstance(nested, dict) and nested else rsp
    health_card_id = _text(source, "healthCardId") or _text(rsp, "healthCardId")
    if not health_card_id:
        raise HealthCardBadResponseError(f"healthcard {api}: answer without a card", extra={"api": api})
    return HealthCard(
        health_card_id=health_card_id,
        qr_code_text=_text(source, "qrCodeText") or _text(rsp, "qrCodeText"),
        phid=_text(source, "phid"),
        name=_text(source, "name"),
        gender=_text(source, "gender"),
        nation=_text(source, "nation"),
        birthday=_text(source, "birthday"),
        id_type=_text(source, "idType"),
        id_number=_text(source, "idNumber"),
        phone=_text(source, "phone1") or _text(source, "phone"),
        phone2=_text(source, "phone2"),
        address=_text(source, "address"),
        patid=_text(source, "patid"),
        relation=_text(source, "relation"),
        admin_ext=_text(source, "adminExt"),
    )


def _image(value: object) -> bytes:
    """The decoded ``qrCodeImg`` (Base64, with or without a ``data:`` prefix); empty when absent."""
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise HealthCardBadResponseError(f"healthcard {GET_DYNAMIC_QR_CODE}: qrCodeImg is not text")
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HealthCardBadResponseError(f"healthcard {GET_DYNAMIC_QR_CODE}: qrCodeImg is not Base64") from None


def _beijing(instant: datetime) -> str:
    return to_shanghai(instant).strftime(REPORT_TIME_FORMAT)


def _put_optional(req: dict[str, object], **values: str | None) -> None:
    for key, value in values.items():
        if value:
            req[key] = value


def _sanitize(text: str, sensitive: Iterable[str]) -> str:
    """The platform's errMsg without the request's personal values or secrets, scrubbed and cut short."""
    for value in sorted({item for item in sensitive if item and len(item) >= 2}, key=len, reverse=True):
        text = text.replace(value, "***")
    return scrub_text(text)[:_ERRMSG_LIMIT]
