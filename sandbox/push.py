"""The app push simulators (protocols §5): APNs at ``/sandbox/apns`` and JPush at ``/sandbox/jpush``.

APNs (``ApnsSimulator``), same path and answers as ``https://api.push.apple.com``:

* ``POST /3/device/{token}`` – checks the provider token (ES256 JWT, known ``kid``, ``iss`` = the team id,
  ``iat`` at most 60 minutes old and not in the future by the shared clock; a new token less than 20 minutes
  after the previous one is throttled), the ``apns-*`` headers, the payload and the device token; answers 200
  with an ``apns-id`` header, or the status with ``{"reason": ...}`` (410 adds ``timestamp``).

Served by hypercorn over TLS, the route speaks HTTP/2 like APNs; under uvicorn it is HTTP/1.1.

JPush (``JpushSimulator``), same path and answers as ``https://api.jpush.cn``:

* ``POST /v3/push`` – Basic ``appKey:masterSecret`` (401 / 1004), the body (400 / 1003), the registration ids
  (400 / 1011 when none is known); answers ``{"sendno", "msg_id"}``.

Delivered notifications go to the recorder stream ``inbox``. Test helpers: ``POST /sandbox/apns/test/device``
(register a device token, or mark it unregistered) and ``POST /sandbox/jpush/test/device`` (register a
registration id). Seeding forgets every device and provider token.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.types import ControllerRouterHandler

from sandbox.framework import Simulator

INBOX = "inbox"
"""The recorder stream holding delivered notifications."""

PROVIDER_TOKEN_LIFETIME = timedelta(minutes=60)
"""APNs refuses a provider token whose ``iat`` is more than an hour old (403 ExpiredProviderToken)."""
PROVIDER_TOKEN_MIN_INTERVAL = timedelta(minutes=20)
"""APNs throttles a new provider token less than 20 minutes after the previous (429)."""
APNS_MAX_PAYLOAD = 4096
"""Bytes of an alert payload (413 PayloadTooLarge beyond)."""
APNS_MAX_COLLAPSE_ID = 64
"""Bytes of ``apns-collapse-id`` (400 BadCollapseId beyond)."""

_PUSH_TYPES = frozenset(
    {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity"}
)
_DEVICE_TOKEN = re.compile(r"^[0-9a-fA-F]{64}$")


class ApnsAnswerError(Exception):
    """An APNs error answer: the HTTP status and the ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class JpushAnswerError(Exception):
    """A JPush error answer: the HTTP status and the JPush error code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message


# --- wire shapes -------------------------------------------------------------------------------------------


class ApnsErrorOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    reason: str
    timestamp: int | None = None


class DeviceIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    token: str | None = None
    """The device token (64 hex digits) or registration id; a fresh one when absent."""
    unregistered: bool = False
    """APNs only: the app was removed from the device (410 Unregistered from now on)."""


class DeviceOut(msgspec.Struct, rename="camel", kw_only=True):
    token: str
    unregistered: bool


class JpushAudience(msgspec.Struct, kw_only=True):
    registration_id: list[str] = msgspec.field(default_factory=list)


class JpushAndroid(msgspec.Struct, kw_only=True):
    alert: str | None = None
    title: str | None = None
    extras: dict[str, Any] = msgspec.field(default_factory=dict)


class JpushIos(msgspec.Struct, kw_only=True):
    alert: str | dict[str, Any] | None = None
    sound: str | None = None
    extras: dict[str, Any] = msgspec.field(default_factory=dict)


class JpushNotification(msgspec.Struct, kw_only=True):
    alert: str | None = None
    android: JpushAndroid | None = None
    ios: JpushIos | None = None


class JpushOptions(msgspec.Struct, kw_only=True):
    sendno: int | None = None
    time_to_live: int | None = None
    apns_production: bool | None = None
    apns_collapse_id: str | None = None


class JpushPushIn(msgspec.Struct, kw_only=True):
    platform: str | list[str]
    audience: JpushAudience
    notification: JpushNotification | None = None
    options: JpushOptions = msgspec.field(default_factory=JpushOptions)


class JpushPushOut(msgspec.Struct, kw_only=True):
    sendno: str
    msg_id: str


class JpushErrorBody(msgspec.Struct, kw_only=True):
    code: int
    message: str


class JpushErrorOut(msgspec.Struct, kw_only=True):
    error: JpushErrorBody


# --- APNs --------------------------------------------------------------------------------------------------


@dataclass
class _Device:
    unregistered_at: datetime | None = None


class ApnsSimulator(Simulator):
    """APNs for one team: its auth keys (``kid -> public key PEM``) and the topics (bundle ids) it may push."""

    name = "apns"

    def __init__(
        self,
        *,
        team_id: str,
        keys: Mapping[str, bytes],
        topics: Collection[str],
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.team_id = team_id
        self.keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for kid, pem in keys.items():
            key = load_pem_public_key(pem)
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ValueError(f"key {kid!r} is not an EC public key")
            self.keys[kid] = key
        self.topics = frozenset(topics)
        self._devices: dict[str, _Device] = {}
        self._provider_tokens: list[str] = []
        self._last_new_token_at: dict[str, datetime] = {}

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        return [apns_send, apns_device]

    def seed(self, seed: int) -> None:
        self._devices.clear()
        self._provider_tokens.clear()
        self._last_new_token_at.clear()

    @property
    def provider_tokens(self) -> list[str]:
        """The distinct provider tokens accepted, in the order first seen."""
        return list(self._provider_tokens)

    def _check_provider_token(self, authorization: str | None) -> None:
        """403 MissingProviderToken / InvalidProviderToken / ExpiredProviderToken, 429 TooManyProviderTokenUpdates."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApnsAnswerError(403, "MissingProviderToken")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise ApnsAnswerError(403, "InvalidProviderToken") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in self.keys:
            raise ApnsAnswerError(403, "InvalidProviderToken")
        key = self.keys[kid]
        if header.get("alg") != "ES256":
            raise ApnsAnswerError(403, "InvalidProviderToken")
        try:
            # The times are checked below against the shared clock, not the wall clock.
            claims = jwt.decode(
                token,
                key,
                algorithms=["ES256"],
                options={"verify_iat": False, "verify_exp": False, "verify_nbf": False, "require": ["iss", "iat"]},
            )
        except jwt.PyJWTError:
            raise ApnsAnswerError(403, "InvalidProviderToken") from None
        iat = claims.get("iat")
        if claims.get("iss") != self.team_id or not isinstance(iat, int):
            raise ApnsAnswerError(403, "InvalidProviderToken")
        now = self.ctx.clock.now()
        age = now.timestamp() - iat
        if age < 0:
            raise ApnsAnswerError(403, "InvalidProviderToken")
        if age > PROVIDER_TOKEN_LIFETIME.total_seconds():
            raise ApnsAnswerError(403, "ExpiredProviderToken")
        if token not in self._provider_tokens:
            previous = self._last_new_token_at.get(kid)
            if previous is not None and now - previous < PROVIDER_TOKEN_MIN_INTERVAL:
                raise ApnsAnswerError(429, "TooManyProviderTokenUpdates")
            self._last_new_token_at[kid] = now
            self._provider_tokens.append(token)

    def deliver(self, device_token: str, headers: Mapping[str, str], body: bytes) -> str:
        """Check one request as APNs does and record the notification; returns its ``apns-id``."""
        self._check_provider_token(headers.get("authorization"))
        topic = headers.get("apns-topic")
        if not topic:
            raise ApnsAnswerError(400, "MissingTopic")
        if topic not in self.topics:
            raise ApnsAnswerError(400, "TopicDisallowed")
        push_type = headers.get("apns-push-type", "alert")
        if push_type not in _PUSH_TYPES:
            raise ApnsAnswerError(400, "InvalidPushType")
        priority = headers.get("apns-priority", "10")
        if priority not in ("1", "5", "10"):
            raise ApnsAnswerError(400, "BadPriority")
        collapse_id = headers.get("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode("utf-8")) > APNS_MAX_COLLAPSE_ID:
            raise ApnsAnswerError(400, "BadCollapseId")
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            raise ApnsAnswerError(400, "BadExpirationDate")
        apns_id = headers.get("apns-id")
        if apns_id is not None:
            try:
                apns_id = str(uuid.UUID(apns_id)).upper()
            except ValueError:
                raise ApnsAnswerError(400, "BadMessageId") from None
        if not device_token:
            raise ApnsAnswerError(400, "MissingDeviceToken")
        device = self._devices.get(device_token.lower())
        if device is None:
            raise ApnsAnswerError(400, "BadDeviceToken")
        if device.unregistered_at is not None:
            raise ApnsAnswerError(410, "Unregistered")
        if not body:
            raise ApnsAnswerError(400, "PayloadEmpty")
        if len(body) > APNS_MAX_PAYLOAD:
            raise ApnsAnswerError(413, "PayloadTooLarge")
        try:
            payload = msgspec.json.decode(body)
        except msgspec.DecodeError:
            payload = None
        aps = payload.get("aps") if isinstance(payload, dict) else None
        if not isinstance(aps, dict):
            # A payload must be a JSON dictionary with an ``aps`` dictionary.
            raise ApnsAnswerError(400, "PayloadEmpty")
        alert = aps.get("alert")
        title, text = (alert.get("title"), alert.get("body")) if isinstance(alert, dict) else (None, alert)
        apns_id = apns_id or str(uuid.UUID(int=self.ctx.random.getrandbits(128), version=4)).upper()
        self.ctx.recorder.record_message(
            INBOX,
            {
                "token": device_token.lower(),
                "topic": topic,
                "apnsId": apns_id,
                "pushType": push_type,
                "priority": int(priority),
                "collapseId": collapse_id,
                "expiration": int(expiration) if expiration is not None else None,
                "title": title,
                "body": text,
                "sound": aps.get("sound"),
                "data": {key: value for key, value in payload.items() if key != "aps"},
            },
        )
        return apns_id

    def unregistered_at(self, device_token: str) -> datetime | None:
        device = self._devices.get(device_token.lower())
        return device.unregistered_at if device else None

    def register_device(self, body: DeviceIn) -> DeviceOut:
        token = (body.token or self.ctx.random.randbytes(32).hex()).lower()
        if not _DEVICE_TOKEN.match(token):
            raise ApnsAnswerError(400, "BadDeviceToken")
        device = self._devices.setdefault(token, _Device())
        device.unregistered_at = self.ctx.clock.now() if body.unregistered else None
        return DeviceOut(token=token, unregistered=body.unregistered)


def _apns_error(refusal: ApnsAnswerError, simulator: ApnsSimulator, token: str) -> Response[bytes]:
    timestamp = None
    if refusal.status == 410:
        gone = simulator.unregistered_at(token)
        timestamp = int(gone.timestamp() * 1000) if gone else None
    body = msgspec.json.encode(ApnsErrorOut(reason=refusal.reason, timestamp=timestamp))
    return Response(body, status_code=refusal.status, media_type="application/json")


@post("/3/device/{token:str}", status_code=200)
async def apns_send(
    token: FromPath[str], request: Request[Any, Any, Any], simulator: NamedDependency[ApnsSimulator]
) -> Response[bytes]:
    """One notification to one device."""
    headers = {key.lower(): value for key, value in request.headers.items()}
    try:
        apns_id = simulator.deliver(token, headers, await request.body())
    except ApnsAnswerError as refusal:
        return _apns_error(refusal, simulator, token)
    return Response(b"", status_code=200, headers={"apns-id": apns_id})


@post("/test/device", status_code=200)
async def apns_device(data: JSONBody[DeviceIn], simulator: NamedDependency[ApnsSimulator]) -> Response[bytes]:
    """What the iOS app gets from ``registerForRemoteNotifications`` (or, with ``unregistered``, the app being
    removed from the device)."""
    try:
        answer = simulator.register_device(data)
    except ApnsAnswerError as refusal:
        return _apns_error(refusal, simulator, data.token or "")
    return Response(msgspec.json.encode(answer), media_type="application/json")


# --- JPush -------------------------------------------------------------------------------------------------


class JpushSimulator(Simulator):
    """JPush for the configured apps (``appKey -> masterSecret``)."""

    name = "jpush"

    def __init__(self, *, apps: Mapping[str, str], name: str | None = None) -> None:
        super().__init__(name=name)
        self.apps = dict(apps)
        self._registrations: dict[str, str] = {}

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        return [jpush_push, jpush_device]

    def seed(self, seed: int) -> None:
        self._registrations.clear()

    def app_key(self, authorization: str | None) -> str:
        """401 / 1004 unless the Basic credentials are a configured app key and its master secret."""
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        app_key, _, secret = decoded.partition(":")
        if scheme.lower() != "basic" or not app_key or self.apps.get(app_key) != secret:
            raise JpushAnswerError(401, 1004, "Authen failed")
        return app_key

    def push(self, app_key: str, body: bytes) -> JpushPushOut:
        """400 / 1003 for a malformed body, 400 / 1011 when no registration id belongs to the app."""
        try:
            request = msgspec.json.decode(body, type=JpushPushIn)
        except msgspec.DecodeError as exc:
            raise JpushAnswerError(400, 1003, f"Parameter value is invalid: {exc}") from None
        if request.notification is None:
            raise JpushAnswerError(400, 1003, "Missing notification or message")
        targets = [rid for rid in request.audience.registration_id if self._registrations.get(rid) == app_key]
        if not targets:
            raise JpushAnswerError(
                400, 1011, "cannot find user by this audience or has been inactive for more than 255 days"
            )
        sendno = request.options.sendno if request.options.sendno is not None else 0
        msg_id = str(self.ctx.random.randrange(10**17, 10**18))
        notification = request.notification
        android = notification.android or JpushAndroid()
        ios = notification.ios or JpushIos()
        for rid in targets:
            self.ctx.recorder.record_message(
                INBOX,
                {
                    "appKey": app_key,
                    "token": rid,
                    "msgId": msg_id,
                    "title": android.title,
                    "body": android.alert or notification.alert,
                    "data": android.extras or ios.extras,
                    "ios": msgspec.to_builtins(ios),
                    "timeToLive": request.options.time_to_live,
                    "apnsProduction": request.options.apns_production,
                },
            )
        return JpushPushOut(sendno=str(sendno), msg_id=msg_id)

    def register(self, app_key: str | None, body: DeviceIn) -> DeviceOut:
        key = app_key or next(iter(self.apps), "")
        if key not in self.apps:
            raise JpushAnswerError(400, 1008, "app_key is invalid")
        token = body.token or self.ctx.random.randbytes(9).hex()[:18]
        self._registrations[token] = key
        return DeviceOut(token=token, unregistered=False)


def _jpush_error(refusal: JpushAnswerError) -> Response[bytes]:
    body = msgspec.json.encode(JpushErrorOut(error=JpushErrorBody(code=refusal.code, message=refusal.message)))
    return Response(body, status_code=refusal.status, media_type="application/json")


@post("/v3/push", status_code=200)
async def jpush_push(request: Request[Any, Any, Any], simulator: NamedDependency[JpushSimulator]) -> Response[bytes]:
    try:
        app_key = simulator.app_key(request.headers.get("authorization"))
        answer = simulator.push(app_key, await request.body())
    except JpushAnswerError as refusal:
        return _jpush_error(refusal)
    return Response(msgspec.json.encode(answer), media_type="application/json")


@post("/test/device", status_code=200)
async def jpush_device(
    data: JSONBody[DeviceIn], request: Request[Any, Any, Any], simulator: NamedDependency[JpushSimulator]
) -> Response[bytes]:
    """What the JPush SDK gives the Android app (``JPushInterface.getRegistrationID``); the app key is the
    ``appKey`` query parameter, the first configured app when absent."""
    try:
        answer = simulator.register(request.query_params.get("appKey"), data)
    except JpushAnswerError as refusal:
        return _jpush_error(refusal)
    return Response(msgspec.json.encode(answer), media_type="application/json")
