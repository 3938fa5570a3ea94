"""Our WeChat mini-program client against the WeChat simulator, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
from wechatpy.crypto import WeChatWxaCrypto

from domain.account.ports import (
    LoginCodeError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
    WechatMiniProgram,
)
from domain.kernel.ephemeral import EphemeralStoreUnavailableError
from integrations.wechat import (
    SubscribeRefusedError,
    SubscribeRejectedError,
    TemplateDataError,
    UserDataError,
    WechatMiniProgramClient,
    decrypt_user_data,
)
from persistence.ephemeral.memory_store import InMemoryEphemeralStore
from sandbox.framework import NO_FAULTS, RequestRecord, SandboxContext, build_sandbox_app, run_standalone
from sandbox.wechat import DEMO_APPID, DEMO_SECRET, SUBSCRIBE_STREAM, WechatAnswerError, WechatSimulator
from tests.support.clock import ManualClock

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
TEMPLATE = "tmpl-visit-reminder"


@dataclass
class WechatSandbox:
    url: str
    admin: httpx.AsyncClient
    http: httpx.AsyncClient
    ctx: SandboxContext
    clock: ManualClock
    simulator: WechatSimulator
    store: InMemoryEphemeralStore

    @property
    def base_url(self) -> str:
        return f"{self.url}/sandbox/wechat"

    def client(
        self,
        *,
        secret: str = DEMO_SECRET,
        clock: ManualClock | None = None,
        store: InMemoryEphemeralStore | None = None,
        timeout_seconds: float = 2.0,
    ) -> WechatMiniProgramClient:
        return WechatMiniProgramClient(
            appid=DEMO_APPID,
            secret=secret,
            base_url=self.base_url,
            store=store or self.store,
            http=self.http,
            clock=clock or self.clock,
            timeout_seconds=timeout_seconds,
        )

    async def _helper(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.admin.post(f"/sandbox/wechat/test/{path}", json=body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def login_code(self, **body: Any) -> dict[str, Any]:
        return await self._helper("login-code", body)

    async def phone_code(self, **body: Any) -> str:
        code: str = (await self._helper("phone-code", body))["code"]
        return code

    async def grant(self, openid: str, template_id: str = TEMPLATE, count: int = 1) -> int:
        body = {"openid": openid, "templateId": template_id, "count": count}
        remaining: int = (await self._helper("subscribe-grant", body))["remaining"]
        return remaining

    async def set_faults(self, plan: dict[str, Any]) -> None:
        answer = await self.admin.put("/sandbox/admin/wechat/faults", json=plan)
        assert answer.status_code == 200, answer.text

    async def advance(self, seconds: float) -> None:
        answer = await self.admin.post("/sandbox/admin/clock", json={"advanceSeconds": seconds})
        assert answer.status_code == 200, answer.text

    def requests(self, path: str) -> list[RequestRecord]:
        entries = self.ctx.context("wechat").recorder.entries("requests")
        return [e for e in entries if isinstance(e, RequestRecord) and e.path == path]


@dataclass
class Server:
    url: str
    admin: httpx.AsyncClient
    http: httpx.AsyncClient
    ctx: SandboxContext
    clock: ManualClock
    simulator: WechatSimulator


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[Server]:
    """One simulator server for the module; ``sandbox`` resets it before each test."""
    clock = ManualClock(START)
    ctx = SandboxContext(clock)
    simulator = WechatSimulator()
    app = build_sandbox_app([simulator], ctx, pump_interval=None)
    async with (
        run_standalone(app) as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0) as admin,
        httpx.AsyncClient(trust_env=False) as http,
    ):
        yield Server(url=url, admin=admin, http=http, ctx=ctx, clock=clock, simulator=simulator)


@pytest.fixture
async def sandbox(server: Server) -> WechatSandbox:
    server.clock.reset()
    server.ctx.seed("wechat", 0)
    context = server.ctx.context("wechat")
    context.faults = NO_FAULTS
    context.recorder.clear()
    return WechatSandbox(
        url=server.url,
        admin=server.admin,
        http=server.http,
        ctx=server.ctx,
        clock=server.clock,
        simulator=server.simulator,
        store=InMemoryEphemeralStore(),
    )


# --- code2Session ------------------------------------------------------------------------------------------


async def test_login_without_unionid(sandbox: WechatSandbox) -> None:
    port: WechatMiniProgram = sandbox.client()  # mypy checks that the client is the port
    assert port.appid == DEMO_APPID
    issued = await sandbox.login_code()
    session = await port.code_to_session(issued["code"])
    assert session.openid == issued["openid"]
    assert len(session.openid) == 28
    assert session.unionid is None
    assert len(session.session_key) == 24
    assert session.session_key not in repr(session)

    (request,) = sandbox.requests("/sns/jscode2session")
    assert "grant_type=authorization_code" in request.query
    assert f"appid={DEMO_APPID}" in request.query
    assert "access_token" not in request.query, "code2Session needs no access token"
    assert sandbox.requests("/cgi-bin/stable_token") == []


async def test_login_with_unionid(sandbox: WechatSandbox) -> None:
    issued = await sandbox.login_code(unionid="oUnion000000000000000000001")
    session = await sandbox.client().code_to_session(issued["code"])
    assert session.unionid == "oUnion000000000000000000001"

    again = await sandbox.login_code(openid=session.openid)
    assert again["openid"] == session.openid
    assert (await sandbox.client().code_to_session(again["code"])).unionid == session.unionid


async def test_reused_code_is_refused(sandbox: WechatSandbox) -> None:
    client = sandbox.client()
    code = (await sandbox.login_code())["code"]
    await client.code_to_session(code)
    with pytest.raises(LoginCodeError) as raised:
        await client.code_to_session(code)
    assert raised.value.extra["errcode"] == 40163


async def test_expired_code_is_refused(sandbox: WechatSandbox) -> None:
    code = (await sandbox.login_code())["code"]
    await sandbox.advance(5 * 60)
    with pytest.raises(LoginCodeError) as raised:
        await sandbox.client().code_to_session(code)
    assert raised.value.extra["errcode"] == 40029


async def test_unknown_code_is_refused(sandbox: WechatSandbox) -> None:
    with pytest.raises(LoginCodeError) as raised:
        await sandbox.client().code_to_session("not-a-code")
    assert raised.value.extra["errcode"] == 40029
    with pytest.raises(LoginCodeError):
        await sandbox.client().code_to_session("")


async def test_login_rate_limit_per_user(sandbox: WechatSandbox) -> None:
    client = sandbox.client()
    openid = (await sandbox.login_code())["openid"]
    codes = [(await sandbox.login_code(openid=openid))["code"] for _ in range(101)]
    for code in codes[:100]:
        await client.code_to_session(code)
    with pytest.raises(ProviderRateLimitedError) as raised:
        await client.code_to_session(codes[100])
    assert raised.value.extra["errcode"] == 45011
    assert raised.value.retry_after == 60

    other = await sandbox.login_code()
    assert (await client.code_to_session(other["code"])).openid == other["openid"], "the limit is per user"

    await sandbox.advance(60)
    fresh = (await sandbox.login_code(openid=openid))["code"]
    assert (await client.code_to_session(fresh)).openid == openid


async def test_injected_server_error_is_unavailable(sandbox: WechatSandbox) -> None:
    code = (await sandbox.login_code())["code"]
    await sandbox.set_faults({"inbound": {"pathPrefix": "/sns", "errorRate": 1.0, "errorStatus": 500}})
    with pytest.raises(ProviderUnavailableError) as raised:
        await sandbox.client().code_to_session(code)
    assert "HTTP 500" in raised.value.detail


async def test_timeout_is_unavailable(sandbox: WechatSandbox) -> None:
    code = (await sandbox.login_code())["code"]
    await sandbox.set_faults({"inbound": {"pathPrefix": "/sns", "timeoutRate": 1.0, "timeoutSeconds": 30}})
    started = time.perf_counter()
    with pytest.raises(ProviderUnavailableError) as raised:
        await sandbox.client(timeout_seconds=0.3).code_to_session(code)
    assert time.perf_counter() - started < 2.0
    assert "timed out" in raised.value.detail


async def test_wrong_secret_is_unavailable_and_never_shown(sandbox: WechatSandbox) -> None:
    code = (await sandbox.login_code())["code"]
    wrong = "wrong0secret0that0must0not0leak"
    with pytest.raises(ProviderUnavailableError) as raised:
        await sandbox.client(secret=wrong).code_to_session(code)
    assert raised.value.extra["errcode"] == 40125
    shown = f"{raised.value!s} {raised.value!r} {raised.value.detail} {raised.value.extra}"
    assert wrong not in shown
    assert raised.value.__cause__ is None


async def test_secrets_stay_out_of_logs_and_errors(sandbox: WechatSandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = sandbox.client()
    issued = await sandbox.login_code()
    session = await client.code_to_session(issued["code"])
    token = await client.access_token()
    await sandbox.set_faults({"inbound": {"pathPrefix": "/sns", "errorRate": 1.0, "errorStatus": 502}})
    with pytest.raises(ProviderUnavailableError) as raised:
        await client.code_to_session(issued["code"])

    logged = caplog.text
    assert "HTTP Request: GET" in logged
    assert "secret=REDACTED" in logged
    for secret in (DEMO_SECRET, session.session_key, issued["code"], token):
        assert secret not in logged
        assert secret not in str(raised.value)
    assert DEMO_SECRET not in repr(client)


# --- the access token --------------------------------------------------------------------------------------


async def test_access_token_is_cached(sandbox: WechatSandbox) -> None:
    client = sandbox.client()
    for n in range(5):
        code = await sandbox.phone_code(phone=f"1380000000{n}")
        assert await client.phone_number(code) == f"1380000000{n}"
    assert len(sandbox.requests("/cgi-bin/stable_token")) == 1
    assert len(sandbox.requests("/wxa/business/getuserphonenumber")) == 5

    (stable,) = sandbox.requests("/cgi-bin/stable_token")
    body = msgspec.json.decode(stable.body)
    assert body == {
        "grant_type": "client_credential",
        "appid": DEMO_APPID,
        "secret": DEMO_SECRET,
        "force_refresh": False,
    }
    assert await sandbox.client().access_token() == await client.access_token(), "shared through the store"


async def test_concurrent_callers_on_a_cold_cache_refresh_once(sandbox: WechatSandbox) -> None:
    first, second = sandbox.client(), sandbox.client()  # two processes sharing one store
    tokens = await asyncio.gather(*(c.access_token() for c in (first, second, first, second)))
    assert len(set(tokens)) == 1
    assert len(sandbox.requests("/cgi-bin/stable_token")) == 1


async def test_expired_token_is_refreshed_and_the_call_retried(sandbox: WechatSandbox) -> None:
    lagging = ManualClock(START)  # a process that has not yet reloaded the shared clock's offset
    client = sandbox.client(clock=lagging)
    old = await client.access_token()
    await sandbox.advance(2 * 3600)
    code = await sandbox.phone_code(phone="13800000000")

    with pytest.raises(WechatAnswerError) as refused:
        sandbox.simulator.token_app(old)
    assert refused.value.errcode == 42001

    assert await client.phone_number(code) == "13800000000"

    calls = sandbox.requests("/wxa/business/getuserphonenumber")
    assert [f"access_token={old}" in c.query for c in calls] == [True, False]
    refreshes = sandbox.requests("/cgi-bin/stable_token")
    assert [msgspec.json.decode(r.body)["force_refresh"] for r in refreshes] == [False, True]
    assert await client.access_token() != old


async def test_revoked_token_is_refreshed_and_the_call_retried(sandbox: WechatSandbox) -> None:
    client = sandbox.client()
    old = await client.access_token()
    leaked = await sandbox.admin.post(
        "/sandbox/wechat/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_SECRET, "force_refresh": True},
    )
    outside = leaked.json()["access_token"]
    assert outside != old

    with pytest.raises(WechatAnswerError) as refused:
        sandbox.simulator.token_app(old)
    assert refused.value.errcode == 40001

    code = await sandbox.phone_code(phone="13800000001")
    assert await client.phone_number(code) == "13800000001"
    assert len(sandbox.requests("/wxa/business/getuserphonenumber")) == 2
    assert await client.access_token() not in (old, outside), "a forced refresh revokes the previous token"


async def test_moving_the_shared_clock_refreshes_before_wechat_refuses(sandbox: WechatSandbox) -> None:
    client = sandbox.client()
    old = await client.access_token()
    await sandbox.advance(7200 - 300)
    code = await sandbox.phone_code(phone="13800000002")
    assert await client.phone_number(code) == "13800000002"
    assert len(sandbox.requests("/wxa/business/getuserphonenumber")) == 1
    refreshes = sandbox.requests("/cgi-bin/stable_token")
    assert [msgspec.json.decode(r.body)["force_refresh"] for r in refreshes] == [False, False]
    assert await client.access_token() != old


class UnreachableStore(InMemoryEphemeralStore):
    async def get(self, key: str) -> bytes | None:
        raise EphemeralStoreUnavailableError("down")

    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None) -> None:
        raise EphemeralStoreUnavailableError("down")

    async def acquire_lock(self, name: str, *, token: str, ttl_seconds: float) -> bool:
        raise EphemeralStoreUnavailableError("down")


async def test_an_unreachable_cache_does_not_stop_the_client(sandbox: WechatSandbox) -> None:
    client = sandbox.client(store=UnreachableStore())
    code = await sandbox.phone_code(phone="13800000003")
    assert await client.phone_number(code) == "13800000003"


# --- getuserphonenumber ------------------------------------------------------------------------------------


@pytest.mark.parametrize("country_code", ["86", 86])
async def test_phone_number_accepts_the_country_code_as_string_or_number(
    sandbox: WechatSandbox, country_code: str | int
) -> None:
    code = await sandbox.phone_code(phone="13800000000", countryCode=country_code)
    info = await sandbox.client().phone_info(code)
    assert (info.pure_phone_number, info.phone_number, info.country_code) == ("13800000000", "13800000000", "86")
    (call,) = sandbox.requests("/wxa/business/getuserphonenumber")
    assert msgspec.json.decode(call.body) == {"code": code}


async def test_phone_code_is_single_use_and_bound_to_its_user(sandbox: WechatSandbox) -> None:
    client = sandbox.client()
    openid = (await sandbox.login_code())["openid"]
    code = await sandbox.phone_code(phone="13800000000", openid=openid)
    with pytest.raises(LoginCodeError):
        await client.phone_number(code, openid="oSomebodyElse000000000000000")
    fresh = await sandbox.phone_code(phone="13800000000", openid=openid)
    assert await client.phone_number(fresh, openid=openid) == "13800000000"
    with pytest.raises(LoginCodeError) as raised:
        await client.phone_number(fresh, openid=openid)
    assert raised.value.extra["errcode"] == 40029


async def test_invalid_phone_code_is_refused(sandbox: WechatSandbox) -> None:
    with pytest.raises(LoginCodeError) as raised:
        await sandbox.client().phone_number("bogus")
    assert raised.value.extra["errcode"] == 40029


# --- subscribeMessage.send ---------------------------------------------------------------------------------


async def test_subscribe_message_reaches_the_inbox_once_per_grant(sandbox: WechatSandbox) -> None:
    client = sandbox.client()
    openid = (await sandbox.login_code())["openid"]
    assert await sandbox.grant(openid) == 1
    data = {"thing1": "市第一人民医院 心内科", "time2": "2025-03-02 09:30"}

    msgid = await client.send_subscribe_message(openid, TEMPLATE, data, page="pages/booking/detail?id=1")

    inbox = (await sandbox.admin.get("/sandbox/admin/wechat/requests", params={"stream": SUBSCRIBE_STREAM})).json()
    (message,) = inbox["entries"]
    assert message["data"] == {
        "appid": DEMO_APPID,
        "touser": openid,
        "templateId": TEMPLATE,
        "page": "pages/booking/detail?id=1",
        "miniprogramState": "formal",
        "lang": "zh_CN",
        "data": data,
        "msgid": msgid,
    }
    (call,) = sandbox.requests("/cgi-bin/message/subscribe/send")
    assert msgspec.json.decode(call.body)["data"] == {k: {"value": v} for k, v in data.items()}

    with pytest.raises(SubscribeRefusedError) as raised:
        await client.send_subscribe_message(openid, TEMPLATE, data)
    assert raised.value.extra["errcode"] == 43101
    assert len(sandbox.requests("/cgi-bin/message/subscribe/send")) == 2, "43101 is final: not retried"


async def test_subscribe_without_grant_is_refused(sandbox: WechatSandbox) -> None:
    openid = (await sandbox.login_code())["openid"]
    with pytest.raises(SubscribeRefusedError):
        await sandbox.client().send_subscribe_message(openid, TEMPLATE, {"thing1": "复诊提醒"})


async def test_subscribe_thing_value_is_at_most_20_characters(sandbox: WechatSandbox) -> None:
    client = sandbox.client()
    openid = (await sandbox.login_code())["openid"]
    await sandbox.grant(openid, count=2)
    with pytest.raises(TemplateDataError) as raised:
        await client.send_subscribe_message(openid, TEMPLATE, {"thing1": "复" * 21}, state="trial", lang="en_US")
    assert raised.value.extra["errcode"] == 47003
    assert sandbox.simulator.remaining_grants(openid, TEMPLATE) == 2, "a refused message spends nothing"
    await client.send_subscribe_message(openid, TEMPLATE, {"thing1": "复" * 20}, state="trial", lang="en_US")
    assert sandbox.simulator.remaining_grants(openid, TEMPLATE) == 1


async def test_subscribe_to_an_unknown_user_is_rejected(sandbox: WechatSandbox) -> None:
    with pytest.raises(SubscribeRejectedError) as raised:
        await sandbox.client().send_subscribe_message("oNobody", TEMPLATE, {"thing1": "x"})
    assert raised.value.extra["errcode"] == 40003


# --- the simulator itself ----------------------------------------------------------------------------------


async def test_simulator_errors_have_wechat_shape(sandbox: WechatSandbox) -> None:
    answer = await sandbox.admin.get(
        "/sandbox/wechat/sns/jscode2session",
        params={"appid": "wx-unknown", "secret": "x", "js_code": "c", "grant_type": "authorization_code"},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["errcode"] == 40013
    assert body["errmsg"].startswith("invalid appid rid: ")

    answer = await sandbox.admin.post("/sandbox/wechat/wxa/business/getuserphonenumber", json={"code": "c"})
    assert (answer.status_code, answer.json()["errcode"]) == (200, 41001)
    answer = await sandbox.admin.post(
        "/sandbox/wechat/cgi-bin/stable_token", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert (answer.status_code, answer.json()["errcode"]) == (200, 47001)


async def test_stable_token_rotates_like_wechat(sandbox: WechatSandbox) -> None:
    body = {"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_SECRET}

    async def fetch(**extra: Any) -> dict[str, Any]:
        answer = await sandbox.admin.post("/sandbox/wechat/cgi-bin/stable_token", json={**body, **extra})
        result: dict[str, Any] = answer.json()
        return result

    first = await fetch()
    assert first["expires_in"] == 7200
    await sandbox.advance(3600)
    assert await fetch() == {"access_token": first["access_token"], "expires_in": 3600}
    await sandbox.advance(3400)
    second = await fetch()
    assert second["access_token"] != first["access_token"]
    assert sandbox.simulator.token_app(first["access_token"]) == DEMO_APPID, "old token valid until it expires"
    assert (await fetch(secret="wrong"))["errcode"] == 40125


async def test_seeding_makes_the_simulator_reproducible(sandbox: WechatSandbox) -> None:
    async def run() -> list[dict[str, Any]]:
        answer = await sandbox.admin.post("/sandbox/admin/wechat/seed", json={"seed": 7})
        assert answer.status_code == 200
        return [await sandbox.login_code() for _ in range(3)]

    first = await run()
    second = await run()
    assert first == second
    with pytest.raises(LoginCodeError):
        await sandbox.client().code_to_session(first[0]["code"] + "x")


# --- legacy encryptedData, with wechatpy as the oracle ----------------------------------------------------

# The official mini-program demo data (appid wx4f4bc4dec97d474b), as reproduced in wechatpy's
# tests/test_crypto.py (test_wxa_decrypt_message).
VECTOR_APPID = "wx4f4bc4dec97d474b"
VECTOR_SESSION_KEY = "tiihtNczf5v6AKRyjwEUhQ=="
VECTOR_IV = "r7BXXKkLb8qrSNn05n0qiA=="
VECTOR_ENCRYPTED_DATA = (
    "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC"
    "+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2"
    "/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz"
    "/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E"
    "/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns"
    "/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG"
    "20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew=="
)


def test_legacy_decrypt_matches_wechatpy_on_the_official_vector() -> None:
    ours = decrypt_user_data(VECTOR_SESSION_KEY, VECTOR_ENCRYPTED_DATA, VECTOR_IV, VECTOR_APPID)
    oracle = WeChatWxaCrypto(VECTOR_SESSION_KEY, VECTOR_IV, VECTOR_APPID).decrypt_message(VECTOR_ENCRYPTED_DATA)
    assert ours == oracle
    assert ours["watermark"] == {"timestamp": 1477314187, "appid": VECTOR_APPID}
    assert ours["openId"] == "oGZUI0egBJY1zhBYw2KhdUfwVJJE"


def test_legacy_decrypt_refuses_another_app_or_a_wrong_key() -> None:
    with pytest.raises(UserDataError):
        decrypt_user_data(VECTOR_SESSION_KEY, VECTOR_ENCRYPTED_DATA, VECTOR_IV, DEMO_APPID)
    with pytest.raises(UserDataError):
        decrypt_user_data("AAAAAAAAAAAAAAAAAAAAAA==", VECTOR_ENCRYPTED_DATA, VECTOR_IV, VECTOR_APPID)
    with pytest.raises(UserDataError):
        decrypt_user_data(VECTOR_SESSION_KEY, "not base64!", VECTOR_IV, VECTOR_APPID)
