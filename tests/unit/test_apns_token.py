"""The APNs provider token (ES256 JWT) and the sender's request and error mapping, without a network."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from domain.notification.push import PushMessage, PushTokenInvalidError, PushUnavailableError
from integrations.push import ApnsSender, jpush_body, provider_token
from integrations.push.jpush import basic_authorization
from tests.support.clock import ManualClock

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
KEY = ec.generate_private_key(ec.SECP256R1())
PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def test_provider_token_is_es256_with_kid_iss_iat_and_verifies() -> None:
    token = provider_token(team_id="TEAM000001", key_id="KEY0000001", private_key=KEY, issued_at=START)

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == "KEY0000001"
    claims = jwt.decode(token, KEY.public_key(), algorithms=["ES256"])
    assert claims == {"iss": "TEAM000001", "iat": int(START.timestamp())}
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other, algorithms=["ES256"])


def _sender(handler: httpx.MockTransport, clock: ManualClock) -> ApnsSender:
    return ApnsSender(
        team_id="TEAM000001",
        key_id="KEY0000001",
        private_key_pem=PEM,
        topic="cn.example.patient",
        base_url="https://apns.test",
        http=httpx.AsyncClient(transport=handler),
        clock=clock,
    )


async def test_request_shape_and_token_cache() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"apns-id": "ID-1"})

    clock = ManualClock(START)
    sender = _sender(httpx.MockTransport(handle), clock)
    message = PushMessage(title="标题", body="正文", data={"k": "v"}, collapse_id="c1")
    receipt = await sender.send("ab" * 32, message)
    await clock.advance(49 * 60)
    await sender.send("ab" * 32, message)
    await clock.advance(60)
    await sender.send("ab" * 32, message)

    assert (receipt.provider, receipt.message_id) == ("apns", "ID-1")
    first = seen[0]
    assert first.url.path == f"/3/device/{'ab' * 32}"
    assert first.headers["apns-topic"] == "cn.example.patient"
    assert first.headers["apns-push-type"] == "alert"
    assert first.headers["apns-priority"] == "5"
    assert first.headers["apns-collapse-id"] == "c1"
    assert first.headers["apns-expiration"] == str(int(START.timestamp()) + 86400)
    assert json.loads(first.content) == {
        "aps": {"alert": {"title": "标题", "body": "正文"}, "sound": "default"},
        "k": "v",
    }
    tokens = [r.headers["authorization"] for r in seen]
    assert tokens[0] == tokens[1] != tokens[2]
    assert all(t.startswith("bearer ") for t in tokens)


@pytest.mark.parametrize(
    ("status", "reason", "error", "code"),
    [
        (400, "BadDeviceToken", PushTokenInvalidError, "push.token_invalid"),
        (410, "Unregistered", PushTokenInvalidError, "push.token_invalid"),
        (400, "BadTopic", PushUnavailableError, "push.misconfigured"),
        (403, "InvalidProviderToken", PushUnavailableError, "push.misconfigured"),
        (429, "TooManyRequests", PushUnavailableError, "push.unavailable"),
        (503, "ServiceUnavailable", PushUnavailableError, "push.unavailable"),
    ],
)
async def test_error_mapping(status: int, reason: str, error: type[Exception], code: str) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"reason": reason}, headers={"retry-after": "30"})

    with pytest.raises(error) as raised:
        await _sender(httpx.MockTransport(handle), ManualClock(START)).send("ab" * 32, PushMessage("t", "b"))
    assert getattr(raised.value, "code", None) == code
    if isinstance(raised.value, PushUnavailableError) and code == "push.unavailable":
        assert raised.value.retry_after == 30


def test_apns_key_must_be_p256() -> None:
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="P-256"):
        ApnsSender(
            team_id="T",
            key_id="K",
            private_key_pem=rsa_pem,
            topic="t",
            http=httpx.AsyncClient(),
            clock=ManualClock(START),
        )


def test_jpush_body_and_authorization() -> None:
    body = jpush_body("rid-1", PushMessage("标题", "正文", {"k": "v"}), ttl=timedelta(hours=1), production=True)
    assert body["audience"] == {"registration_id": ["rid-1"]}
    assert body["options"] == {"time_to_live": 3600, "apns_production": True}
    assert body["notification"] == {
        "alert": "正文",
        "android": {"alert": "正文", "title": "标题", "extras": {"k": "v"}},
        "ios": {"alert": {"title": "标题", "body": "正文"}, "sound": "default", "extras": {"k": "v"}},
    }
    assert basic_authorization("key", "secret") == "Basic a2V5OnNlY3JldA=="
