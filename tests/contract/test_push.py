"""Our push senders against the push simulators over real HTTP: APNs over HTTP/2 and TLS (hypercorn, a
trustme CA), JPush over plain HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypercorn.asyncio import serve
from hypercorn.config import Config
from litestar.types import ASGIApp

from domain.notification.push import (
    PushMessage,
    PushSender,
    PushTokenInvalidError,
    PushUnavailableError,
)
from integrations.push import ApnsSender, JpushSender
from sandbox.framework import NO_FAULTS, RequestRecord, SandboxContext, build_sandbox_app, run_standalone
from sandbox.push import INBOX, ApnsSimulator, JpushSimulator
from tests.support.clock import ManualClock

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
TEAM_ID = "TEAM000001"
KEY_ID = "KEY0000001"
TOPIC = "cn.example.patient"
APP_KEY = "0123456789abcdef01234567"
MASTER_SECRET = "fedcba9876543210fedcba98"
MESSAGE = PushMessage(
    title="复诊提醒",
    body="您预约的心内科门诊将于明天 09:30 开始",
    data={"route": "booking/1"},
    collapse_id="booking-1",
    urgent=True,
)

_KEY = ec.generate_private_key(ec.SECP256R1())
PRIVATE_PEM = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
PUBLIC_PEM = _KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@contextlib.asynccontextmanager
async def serve_h2(app: ASGIApp, ca: trustme.CA) -> AsyncIterator[str]:
    """Serve ``app`` with hypercorn, HTTP/2 only over TLS, on a free loopback port; yields the base URL."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue until hypercorn accepts them
    port = sock.getsockname()[1]
    with cert.private_key_and_cert_chain_pem.tempfile() as pem:
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.certfile = pem
        config.keyfile = pem
        config.alpn_protocols = ["h2"]
        config.graceful_timeout = 1.0
        stop = asyncio.Event()
        task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        try:
            yield f"https://127.0.0.1:{port}"
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=5.0)


@dataclass
class ApnsServer:
    url: str
    http: httpx.AsyncClient
    ctx: SandboxContext
    clock: ManualClock
    simulator: ApnsSimulator
    versions: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
async def apns_server() -> AsyncIterator[ApnsServer]:
    clock = ManualClock(START)
    ctx = SandboxContext(clock)
    simulator = ApnsSimulator(team_id=TEAM_ID, keys={KEY_ID: PUBLIC_PEM}, topics=[TOPIC])
    app = build_sandbox_app([simulator], ctx, pump_interval=None)
    ca = trustme.CA()
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    versions: list[str] = []

    async def note_version(response: httpx.Response) -> None:
        versions.append(response.http_version)

    async with (
        serve_h2(app, ca) as url,
        httpx.AsyncClient(
            http2=True, verify=trust, trust_env=False, timeout=5.0, event_hooks={"response": [note_version]}
        ) as http,
    ):
        yield ApnsServer(url=url, http=http, ctx=ctx, clock=clock, simulator=simulator, versions=versions)


@dataclass
class Apns:
    server: ApnsServer
    sender_clock: ManualClock

    def sender(self) -> ApnsSender:
        return ApnsSender(
            team_id=TEAM_ID,
            key_id=KEY_ID,
            private_key_pem=PRIVATE_PEM,
            topic=TOPIC,
            base_url=f"{self.server.url}/sandbox/apns",
            http=self.server.http,
            clock=self.sender_clock,
        )

    async def device(self, **body: Any) -> str:
        answer = await self.server.http.post(f"{self.server.url}/sandbox/apns/test/device", json=body)
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["token"]
        return token

    async def inbox(self) -> list[dict[str, Any]]:
        answer = await self.server.http.get(f"{self.server.url}/sandbox/admin/apns/requests", params={"stream": INBOX})
        assert answer.status_code == 200, answer.text
        return [entry["data"] for entry in answer.json()["entries"]]

    def sends(self) -> list[RequestRecord]:
        entries = self.server.ctx.context("apns").recorder.entries("requests")
        return [e for e in entries if isinstance(e, RequestRecord) and e.path.startswith("/3/device/")]

    async def advance(self, *, simulator: float, sender: float) -> None:
        await self.server.clock.advance(simulator)
        await self.sender_clock.advance(sender)


@pytest.fixture
async def apns(apns_server: ApnsServer) -> Apns:
    apns_server.clock.reset()
    apns_server.ctx.seed("apns", 0)
    context = apns_server.ctx.context("apns")
    context.faults = NO_FAULTS
    context.recorder.clear()
    apns_server.versions.clear()
    return Apns(server=apns_server, sender_clock=ManualClock(START))


# --- APNs --------------------------------------------------------------------------------------------------


async def test_apns_delivers_over_http2_to_the_inbox(apns: Apns) -> None:
    sender: PushSender = apns.sender()  # mypy checks that the adapter is the port
    token = await apns.device()

    receipt = await sender.send(token, MESSAGE)

    assert receipt.provider == "apns"
    (message,) = await apns.inbox()
    assert message["apnsId"] == receipt.message_id
    assert message["token"] == token
    assert (message["title"], message["body"], message["data"]) == (MESSAGE.title, MESSAGE.body, dict(MESSAGE.data))
    assert (message["topic"], message["pushType"], message["priority"]) == (TOPIC, "alert", 10)
    assert message["collapseId"] == "booking-1"
    assert message["expiration"] == int(START.timestamp()) + 86400
    assert apns.server.versions
    assert set(apns.server.versions) == {"HTTP/2"}

    await sender.send(token, PushMessage(title="t", body="b"))
    assert (await apns.inbox())[-1]["priority"] == 5


async def test_apns_provider_token_is_reused_then_renewed_after_50_minutes(apns: Apns) -> None:
    sender = apns.sender()
    token = await apns.device()
    await sender.send(token, MESSAGE)
    await sender.send(token, MESSAGE)
    await apns.advance(simulator=49 * 60, sender=49 * 60)
    await sender.send(token, MESSAGE)
    assert len(apns.server.simulator.provider_tokens) == 1

    await apns.advance(simulator=60, sender=60)
    await sender.send(token, MESSAGE)
    await sender.send(token, MESSAGE)
    assert len(apns.server.simulator.provider_tokens) == 2
    assert len(await apns.inbox()) == 5


async def test_apns_expired_provider_token_is_renewed_once_and_retried(apns: Apns) -> None:
    sender = apns.sender()
    token = await apns.device()
    await sender.send(token, MESSAGE)
    # APNs' clock is 61 minutes past the token's iat while ours says 30: the cached token is refused.
    await apns.advance(simulator=61 * 60, sender=30 * 60)

    await sender.send(token, MESSAGE)

    assert [r.status for r in apns.sends()] == [200, 403, 200]
    assert len(apns.server.simulator.provider_tokens) == 2
    assert len(await apns.inbox()) == 2


async def test_apns_expired_provider_token_is_retried_only_once(apns: Apns) -> None:
    sender = apns.sender()
    token = await apns.device()
    await apns.advance(simulator=61 * 60, sender=0)  # our clock is an hour behind APNs'
    with pytest.raises(PushUnavailableError) as raised:
        await sender.send(token, MESSAGE)
    assert raised.value.code == "push.misconfigured"
    assert [r.status for r in apns.sends()] == [403, 403]


async def test_apns_unregistered_and_unknown_tokens_are_invalid(apns: Apns) -> None:
    sender = apns.sender()
    token = await apns.device()
    await apns.device(token=token, unregistered=True)
    with pytest.raises(PushTokenInvalidError) as gone:
        await sender.send(token, MESSAGE)
    assert (gone.value.code, gone.value.extra["status"], gone.value.extra["reason"]) == (
        "push.token_invalid",
        410,
        "Unregistered",
    )
    with pytest.raises(PushTokenInvalidError) as bad:
        await sender.send("ab" * 32, MESSAGE)
    assert (bad.value.extra["status"], bad.value.extra["reason"]) == (400, "BadDeviceToken")
    assert await apns.inbox() == []


async def test_apns_throttling_is_transient(apns: Apns) -> None:
    token = await apns.device()
    plan = {"inbound": {"errorRate": 1.0, "errorStatus": 429, "errorBody": '{"reason":"TooManyRequests"}'}}
    answer = await apns.server.http.put(f"{apns.server.url}/sandbox/admin/apns/faults", json=plan)
    assert answer.status_code == 200, answer.text
    with pytest.raises(PushUnavailableError) as raised:
        await apns.sender().send(token, MESSAGE)
    assert (raised.value.code, raised.value.extra["reason"]) == ("push.unavailable", "TooManyRequests")
    assert await apns.inbox() == []


async def test_apns_simulator_refuses_a_wrong_team_or_topic(apns: Apns) -> None:
    token = await apns.device()
    wrong_topic = ApnsSender(
        team_id=TEAM_ID,
        key_id=KEY_ID,
        private_key_pem=PRIVATE_PEM,
        topic="cn.example.other",
        base_url=f"{apns.server.url}/sandbox/apns",
        http=apns.server.http,
        clock=apns.sender_clock,
    )
    with pytest.raises(PushUnavailableError) as raised:
        await wrong_topic.send(token, MESSAGE)
    assert (raised.value.extra["status"], raised.value.extra["reason"]) == (400, "TopicDisallowed")

    answer = await apns.server.http.post(
        f"{apns.server.url}/sandbox/apns/3/device/{token}",
        headers={"authorization": "bearer not-a-jwt", "apns-topic": TOPIC},
        content=b'{"aps":{"alert":"x"}}',
    )
    assert (answer.status_code, answer.json()) == (403, {"reason": "InvalidProviderToken"})
    assert answer.http_version == "HTTP/2"


# --- JPush -------------------------------------------------------------------------------------------------


@dataclass
class JpushServer:
    url: str
    http: httpx.AsyncClient
    ctx: SandboxContext
    simulator: JpushSimulator


@pytest.fixture(scope="module")
async def jpush_server() -> AsyncIterator[JpushServer]:
    ctx = SandboxContext(ManualClock(START))
    simulator = JpushSimulator(apps={APP_KEY: MASTER_SECRET})
    app = build_sandbox_app([simulator], ctx, pump_interval=None)
    async with run_standalone(app) as url, httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0) as http:
        yield JpushServer(url=url, http=http, ctx=ctx, simulator=simulator)


@pytest.fixture
async def jpush(jpush_server: JpushServer) -> JpushServer:
    jpush_server.ctx.seed("jpush", 0)
    context = jpush_server.ctx.context("jpush")
    context.faults = NO_FAULTS
    context.recorder.clear()
    return jpush_server


def jpush_sender(server: JpushServer, secret: str = MASTER_SECRET) -> JpushSender:
    return JpushSender(app_key=APP_KEY, master_secret=secret, base_url=f"{server.url}/sandbox/jpush", http=server.http)


async def registration_id(server: JpushServer) -> str:
    answer = await server.http.post("/sandbox/jpush/test/device", json={})
    assert answer.status_code == 200, answer.text
    rid: str = answer.json()["token"]
    return rid


async def jpush_inbox(server: JpushServer) -> list[dict[str, Any]]:
    answer = await server.http.get("/sandbox/admin/jpush/requests", params={"stream": INBOX})
    return [entry["data"] for entry in answer.json()["entries"]]


async def test_jpush_delivers_to_the_inbox(jpush: JpushServer) -> None:
    sender: PushSender = jpush_sender(jpush)
    rid = await registration_id(jpush)

    receipt = await sender.send(rid, MESSAGE)

    assert receipt.provider == "jpush"
    (message,) = await jpush_inbox(jpush)
    assert message["msgId"] == receipt.message_id
    assert (message["token"], message["title"], message["body"]) == (rid, MESSAGE.title, MESSAGE.body)
    assert message["data"] == dict(MESSAGE.data)
    assert (message["timeToLive"], message["apnsProduction"]) == (86400, False)


async def test_jpush_bad_secret_is_a_misconfiguration(jpush: JpushServer) -> None:
    rid = await registration_id(jpush)
    with pytest.raises(PushUnavailableError) as raised:
        await jpush_sender(jpush, secret="wrong").send(rid, MESSAGE)
    assert (raised.value.code, raised.value.extra["status"], raised.value.extra["jpush_code"]) == (
        "push.misconfigured",
        401,
        1004,
    )


async def test_jpush_unknown_registration_id_is_invalid(jpush: JpushServer) -> None:
    with pytest.raises(PushTokenInvalidError) as raised:
        await jpush_sender(jpush).send("1a0018970a0b3c4d5e6", MESSAGE)
    assert raised.value.extra["jpush_code"] == 1011
    assert await jpush_inbox(jpush) == []


async def test_jpush_rate_limit_is_transient(jpush: JpushServer) -> None:
    rid = await registration_id(jpush)
    body = '{"error":{"code":2002,"message":"Request times of the app_key exceed the limit"}}'
    plan = {"inbound": {"errorRate": 1.0, "errorStatus": 429, "errorBody": body}}
    assert (await jpush.http.put("/sandbox/admin/jpush/faults", json=plan)).status_code == 200
    with pytest.raises(PushUnavailableError) as raised:
        await jpush_sender(jpush).send(rid, MESSAGE)
    assert (raised.value.code, raised.value.extra["jpush_code"]) == ("push.unavailable", 2002)
