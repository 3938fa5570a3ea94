"""Apple Push Notification service over HTTP/2 with token (JWT) authentication (protocols §5).

One request per notification: ``POST /3/device/<token>`` with ``authorization: bearer <provider token>``,
the ``apns-*`` headers and a JSON payload of at most 4 KB. The provider token is an ES256 JWT
``{iss: team_id, iat}`` with ``kid`` = the key id; APNs refuses one older than 60 minutes
(403 ExpiredProviderToken) and throttles providers that mint a new one more often than every 20 minutes
(429 TooManyProviderTokenUpdates), so the token is reused until it is 50 minutes old by the clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from domain.kernel.clock import Clock
from domain.notification.push import (
    PushMessage,
    PushReceipt,
    PushTokenInvalidError,
    PushUnavailableError,
)

PRODUCTION_URL = "https://api.push.apple.com"
DEVELOPMENT_URL = "https://api.sandbox.push.apple.com"

TOKEN_REUSE = timedelta(minutes=50)
"""Renew the provider token at 50 minutes: APNs refuses it after 60 and throttles renewals under 20."""
DEFAULT_TTL = timedelta(days=1)
"""How long APNs keeps trying an offline device (``apns-expiration``)."""

_TOKEN_GONE = frozenset({"BadDeviceToken", "Unregistered"})
"""Reasons meaning the device token will never work again (400 BadDeviceToken, 410 Unregistered)."""


def provider_token(*, team_id: str, key_id: str, private_key: ec.EllipticCurvePrivateKey, issued_at: datetime) -> str:
    """The APNs provider token: an ES256 JWT with header ``kid`` and claims ``iss`` (team id) and ``iat``."""
    return jwt.encode(
        {"iss": team_id, "iat": int(issued_at.timestamp())},
        private_key,
        algorithm="ES256",
        headers={"kid": key_id},
    )


def apns_payload(message: PushMessage) -> bytes:
    """``{"aps": {"alert": {"title", "body"}, "sound": "default"}, **data}`` as compact UTF-8 JSON."""
    if "aps" in message.data:
        raise ValueError("the key 'aps' is reserved by APNs")
    payload: dict[str, object] = {
        "aps": {"alert": {"title": message.title, "body": message.body}, "sound": "default"},
        **message.data,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    reason = body.get("reason") if isinstance(body, Mapping) else None
    return reason if isinstance(reason, str) else ""


def _retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after", "").strip()
    return int(value) if value.isdigit() else None


class ApnsSender:
    """``PushSender`` for iOS devices through APNs.

    ``http`` must be created with ``http2=True``: APNs speaks HTTP/2 only.
    """

    provider = "apns"

    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        private_key_pem: bytes,
        topic: str,
        base_url: str = PRODUCTION_URL,
        http: httpx.AsyncClient,
        clock: Clock,
        ttl: timedelta = DEFAULT_TTL,
    ) -> None:
        key = load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("an APNs auth key is an EC P-256 private key (.p8)")
        self._team_id = team_id
        self._key_id = key_id
        self._key = key
        self._topic = topic
        self._base_url = base_url.rstrip("/")
        self._http = http
        self._clock = clock
        self._ttl = ttl
        self._token: str | None = None
        self._token_issued_at: datetime | None = None

    def provider_token(self, *, refresh: bool = False) -> str:
        """The cached provider token, minted anew when absent, 50 minutes old, or ``refresh`` is asked."""
        now = self._clock.now()
        if (
            refresh
            or self._token is None
            or self._token_issued_at is None
            or now - self._token_issued_at >= TOKEN_REUSE
        ):
            self._token = provider_token(
                team_id=self._team_id, key_id=self._key_id, private_key=self._key, issued_at=now
            )
            self._token_issued_at = now
        return self._token

    def _headers(self, message: PushMessage, token: str) -> dict[str, str]:
        expiration = self._clock.now() + self._ttl
        headers = {
            "authorization": f"bearer {token}",
            "apns-topic": self._topic,
            "apns-push-type": "alert",
            "apns-priority": "10" if message.urgent else "5",
            "apns-expiration": str(int(expiration.timestamp())),
        }
        if message.collapse_id is not None:
            headers["apns-collapse-id"] = message.collapse_id
        return headers

    async def _post(self, url: str, payload: bytes, message: PushMessage, token: str) -> httpx.Response:
        try:
            return await self._http.post(url, content=payload, headers=self._headers(message, token))
        except httpx.HTTPError as exc:
            raise PushUnavailableError(f"APNs unreachable: {type(exc).__name__}") from exc

    async def send(self, device_token: str, message: PushMessage) -> PushReceipt:
        """Deliver one alert; a 403 ExpiredProviderToken renews the provider token and retries once."""
        url = f"{self._base_url}/3/device/{quote(device_token, safe='')}"
        payload = apns_payload(message)
        token = self.provider_token()
        response = await self._post(url, payload, message, token)
        if response.status_code == 403 and _reason(response) == "ExpiredProviderToken":
            # Another send may already have renewed it; renew only the token that was refused.
            token = self.provider_token(refresh=token == self._token)
            response = await self._post(url, payload, message, token)
        return self._receipt(response)

    def _receipt(self, response: httpx.Response) -> PushReceipt:
        status = response.status_code
        if status == 200:
            return PushReceipt(provider=self.provider, message_id=response.headers.get("apns-id", ""))
        reason = _reason(response)
        extra = {"status": status, "reason": reason}
        if reason in _TOKEN_GONE and status in (400, 410):
            raise PushTokenInvalidError(f"APNs {status} {reason}", extra=extra)
        if status == 429 or status >= 500:
            raise PushUnavailableError(f"APNs {status} {reason}", retry_after=_retry_after(response), extra=extra)
        raise PushUnavailableError(f"APNs {status} {reason}", code="push.misconfigured", extra=extra)
