"""JPush (极光推送) REST API v3 (protocols §5): Android in mainland China, where FCM is unreachable.

``POST /v3/push`` with ``Authorization: Basic base64(appKey:masterSecret)`` and one registration id as the
audience; success is ``{"sendno", "msg_id"}``, a failure ``{"error": {"code", "message"}}`` with an HTTP
status (1011 no target: the registration id is gone; 1004 authentication failed; 2002 rate limited).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import timedelta

import httpx

from domain.notification.push import (
    PushMessage,
    PushReceipt,
    PushTokenInvalidError,
    PushUnavailableError,
)

DEFAULT_URL = "https://api.jpush.cn"
DEFAULT_TTL = timedelta(days=1)
"""``options.time_to_live``: JPush keeps an offline message one day by default (at most 10 days)."""

NO_TARGET = 1011
"""No device matches the audience: the registration id is gone."""
MISCONFIGURED = frozenset({1004, 1005, 1008, 2003})
"""Authentication failed (1004), message too large (1005), bad app key (1008), API not allowed (2003)."""
RATE_LIMITED = 2002


def basic_authorization(app_key: str, master_secret: str) -> str:
    """``Basic base64(appKey:masterSecret)``."""
    return "Basic " + base64.b64encode(f"{app_key}:{master_secret}".encode()).decode("ascii")


def jpush_body(registration_id: str, message: PushMessage, *, ttl: timedelta, production: bool) -> dict[str, object]:
    """The ``/v3/push`` body for one registration id."""
    extras = dict(message.data)
    ios: dict[str, object] = {
        "alert": {"title": message.title, "body": message.body},
        "sound": "default",
        "extras": extras,
    }
    options: dict[str, object] = {"time_to_live": int(ttl.total_seconds()), "apns_production": production}
    if message.collapse_id is not None:
        options["apns_collapse_id"] = message.collapse_id
    return {
        "platform": "all",
        "audience": {"registration_id": [registration_id]},
        "notification": {
            "alert": message.body,
            "android": {"alert": message.body, "title": message.title, "extras": extras},
            "ios": ios,
        },
        "options": options,
    }


def _error_code(response: httpx.Response) -> int | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, Mapping) else None
    code = error.get("code") if isinstance(error, Mapping) else None
    return code if isinstance(code, int) else None


def _retry_after(response: httpx.Response) -> int | None:
    """JPush tells the seconds until the quota resets in ``X-Rate-Limit-Reset``."""
    for header in ("retry-after", "x-rate-limit-reset"):
        value = response.headers.get(header, "").strip()
        if value.isdigit():
            return int(value)
    return None


class JpushSender:
    """``PushSender`` for devices registered with JPush (registration ids)."""

    provider = "jpush"

    def __init__(
        self,
        *,
        app_key: str,
        master_secret: str,
        base_url: str = DEFAULT_URL,
        http: httpx.AsyncClient,
        production: bool = False,
        ttl: timedelta = DEFAULT_TTL,
    ) -> None:
        self._authorization = basic_authorization(app_key, master_secret)
        self._url = f"{base_url.rstrip('/')}/v3/push"
        self._http = http
        self._production = production
        self._ttl = ttl

    async def send(self, device_token: str, message: PushMessage) -> PushReceipt:
        body = jpush_body(device_token, message, ttl=self._ttl, production=self._production)
        try:
            response = await self._http.post(self._url, json=body, headers={"authorization": self._authorization})
        except httpx.HTTPError as exc:
            raise PushUnavailableError(f"JPush unreachable: {type(exc).__name__}") from exc
        status = response.status_code
        if status == 200:
            try:
                answer = response.json()
                msg_id = answer["msg_id"]
            except (ValueError, KeyError, TypeError) as exc:
                raise PushUnavailableError("JPush answered 200 without a msg_id") from exc
            return PushReceipt(provider=self.provider, message_id=str(msg_id))
        code = _error_code(response)
        extra = {"status": status, "jpush_code": code}
        detail = f"JPush {status} error {code}"
        if code == NO_TARGET:
            raise PushTokenInvalidError(detail, extra=extra)
        if code == RATE_LIMITED or status == 429 or status >= 500:
            raise PushUnavailableError(detail, retry_after=_retry_after(response), extra=extra)
        # MISCONFIGURED and any other refusal: retrying the same request will not help.
        raise PushUnavailableError(detail, code="push.misconfigured", extra=extra)
