"""The Alipay client against the Alipay simulator over real HTTP on loopback (protocols §3.1-§3.3, §7)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar import Litestar, Request, Response, post

from domain.account.ports import AlipayMiniProgram, LoginCodeError, ProviderUnavailableError
from integrations.alipay import (
    AlipayBadResponseError,
    AlipayBadSignatureError,
    AlipayBusinessError,
    AlipayClient,
    AlipayMiniProgramLogin,
    AlipayMisconfiguredError,
    AlipayUnavailableError,
    extract_response_content,
    format_timestamp,
    rsa2_verify,
    sign_params,
    verify_notify,
)
from sandbox.alipay import METHODS, AlipaySimulator, GatewayCall, GatewayFailure, MethodHandler, business_failed, ok
from sandbox.framework import SandboxContext, build_sandbox_app, run_standalone
from tests.support.clock import ManualClock

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
APP_ID = "2021000000000001"
OTHER_APP_ID = "2021000000000002"


@cache
def _key(label: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(label: str) -> bytes:
    return _key(label).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(label: str) -> bytes:
    return (
        _key(label)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@dataclass
class AlipaySandbox:
    url: str
    admin: httpx.AsyncClient
    http: httpx.AsyncClient
    clock: ManualClock
    simulator: AlipaySimulator

    @property
    def gateway_url(self) -> str:
        return f"{self.url}/sandbox/alipay/gateway.do"

    def client(
        self,
        *,
        app_id: str = APP_ID,
        app_key: str = "app",
        alipay_public_key_pem: bytes | None = None,
        gateway_url: str | None = None,
        clock: Any = None,
        timeout_seconds: float = 5.0,
    ) -> AlipayClient:
        return AlipayClient(
            app_id=app_id,
            app_private_key_pem=private_pem(app_key),
            alipay_public_key_pem=alipay_public_key_pem or self.simulator.public_key_pem,
            gateway_url=gateway_url or self.gateway_url,
            http=self.http,
            clock=clock or self.clock,
            timeout_seconds=timeout_seconds,
        )

    def login(self, **kwargs: Any) -> AlipayMiniProgramLogin:
        return AlipayMiniProgramLogin(self.client(**kwargs))

    async def auth_code(self, **body: str) -> dict[str, str]:
        response = await self.admin.post("/sandbox/alipay/test/auth-code", json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, str] = response.json()
        return answer

    async def configure_app(self, app_id: str, **body: Any) -> dict[str, Any]:
        response = await self.admin.put(f"/sandbox/alipay/test/apps/{app_id}", json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def advance(self, seconds: float) -> None:
        response = await self.admin.post("/sandbox/admin/clock", json={"advanceSeconds": seconds})
        assert response.status_code == 200, response.text

    async def set_faults(self, plan: dict[str, Any]) -> None:
        response = await self.admin.put("/sandbox/admin/alipay/faults", json=plan)
        assert response.status_code == 200, response.text

    async def requests(self) -> list[dict[str, Any]]:
        response = await self.admin.get("/sandbox/admin/alipay/requests")
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["entries"]
        return entries

    async def reset(self) -> None:
        """Back to a fresh simulator: one app in user_id mode, seed 0, no faults, no records, clock at START."""
        self.clock.reset()
        self.simulator.apps.clear()
        self.simulator.register_app(APP_ID, public_pem("app"))
        self.simulator.methods = dict(METHODS)
        assert (await self.admin.post("/sandbox/admin/alipay/seed", json={"seed": 0})).status_code == 200
        assert (await self.admin.delete("/sandbox/admin/alipay/faults")).status_code == 204
        assert (await self.admin.delete("/sandbox/admin/alipay/requests")).status_code == 204


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[AlipaySandbox]:
    """One simulator served for the module (starting a server per test would dominate the run time)."""
    clock = ManualClock(START)
    ctx = SandboxContext(clock)
    simulator = AlipaySimulator(apps={APP_ID: public_pem("app")}, alipay_private_key_pem=private_pem("alipay"))
    app = build_sandbox_app([simulator], ctx, pump_interval=None)
    async with (
        run_standalone(app) as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0) as admin,
        httpx.AsyncClient(trust_env=False) as http,
    ):
        yield AlipaySandbox(url=url, admin=admin, http=http, clock=clock, simulator=simulator)


@pytest.fixture
async def sandbox(served: AlipaySandbox) -> AlipaySandbox:
    await served.reset()
    return served


# -- login ---------------------------------------------------------------------------------------------------------


async def test_login_in_user_id_mode(sandbox: AlipaySandbox) -> None:
    login: AlipayMiniProgram = sandbox.login()
    issued = await sandbox.auth_code()
    assert set(issued) == {"authCode", "userId"}

    identity = await login.exchange_auth_code(issued["authCode"])

    assert identity.user_id == issued["userId"]
    assert identity.user_id is not None
    assert len(identity.user_id) == 16
    assert identity.user_id.startswith("2088")
    assert identity.open_id is None
    assert identity.union_id is None
    assert identity.subject == issued["userId"]
    assert login.app_id == APP_ID

    (request,) = [entry for entry in await sandbox.requests() if entry["path"] == "/gateway.do"]
    assert "method=alipay.system.oauth.token" in request["query"]
    assert "sign=" in request["query"]
    assert "timestamp=2025-03-01+16%3A00%3A00" in request["query"], "Beijing time from the shared clock"
    body = request["body"]
    assert "grant_type=authorization_code" in body
    assert f"code={issued['authCode']}" in body
    assert "biz_content" not in body + request["query"], "grant_type and code are top-level parameters"


async def test_same_user_logs_in_again_as_the_same_identity(sandbox: AlipaySandbox) -> None:
    login = sandbox.login()
    first = await sandbox.auth_code(userId="2088000000000042")
    second = await sandbox.auth_code(userId="2088000000000042")
    assert first["authCode"] != second["authCode"]
    assert (await login.exchange_auth_code(first["authCode"])).user_id == "2088000000000042"
    assert (await login.exchange_auth_code(second["authCode"])).user_id == "2088000000000042"


async def test_login_in_open_id_mode_with_union_id(sandbox: AlipaySandbox) -> None:
    configured = await sandbox.configure_app(APP_ID, mode="open_id", unionId=True)
    assert configured == {"appId": APP_ID, "mode": "open_id", "unionId": True}
    login = sandbox.login()

    issued = await sandbox.auth_code(appId=APP_ID)
    assert set(issued) == {"authCode", "openId", "unionId"}
    identity = await login.exchange_auth_code(issued["authCode"])
    assert identity.open_id == issued["openId"]
    assert identity.user_id is None
    assert identity.union_id == issued["unionId"]
    assert identity.subject == issued["openId"]

    chosen = await sandbox.auth_code(openId="074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5")
    again = await login.exchange_auth_code(chosen["authCode"])
    assert again.open_id == "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"
    assert again.union_id not in (None, identity.union_id), "another person"


async def test_open_ids_differ_per_app_union_ids_do_not(sandbox: AlipaySandbox) -> None:
    await sandbox.configure_app(APP_ID, mode="open_id", unionId=True)
    await sandbox.configure_app(OTHER_APP_ID, publicKeyPem=public_pem("app2").decode(), mode="open_id", unionId=True)
    person = "2088000000000007"
    first = await sandbox.login().exchange_auth_code((await sandbox.auth_code(userId=person))["authCode"])
    issued = await sandbox.auth_code(appId=OTHER_APP_ID, userId=person)
    second = await sandbox.login(app_id=OTHER_APP_ID, app_key="app2").exchange_auth_code(issued["authCode"])
    assert first.open_id != second.open_id
    assert first.union_id == second.union_id is not None


async def test_a_used_auth_code_is_refused(sandbox: AlipaySandbox) -> None:
    login = sandbox.login()
    issued = await sandbox.auth_code()
    await login.exchange_auth_code(issued["authCode"])
    with pytest.raises(LoginCodeError):
        await login.exchange_auth_code(issued["authCode"])


async def test_an_expired_auth_code_is_refused(sandbox: AlipaySandbox) -> None:
    login = sandbox.login()
    fresh = await sandbox.auth_code()
    stale = await sandbox.auth_code()
    await sandbox.advance(299)
    assert (await login.exchange_auth_code(fresh["authCode"])).user_id == fresh["userId"]
    await sandbox.advance(2)
    with pytest.raises(LoginCodeError) as caught:
        await login.exchange_auth_code(stale["authCode"])
    assert caught.value.code == "auth.login_code_invalid"


async def test_unknown_and_empty_auth_codes_are_refused(sandbox: AlipaySandbox) -> None:
    login = sandbox.login()
    with pytest.raises(LoginCodeError):
        await login.exchange_auth_code("4b203fe6c11548bcabd8da5bb087a83b")
    with pytest.raises(LoginCodeError):
        await login.exchange_auth_code("  ")


async def test_an_auth_code_belongs_to_its_app(sandbox: AlipaySandbox) -> None:
    await sandbox.configure_app(OTHER_APP_ID, publicKeyPem=public_pem("app2").decode())
    issued = await sandbox.auth_code(appId=OTHER_APP_ID)
    with pytest.raises(LoginCodeError):
        await sandbox.login().exchange_auth_code(issued["authCode"])


async def test_seeding_forgets_auth_codes(sandbox: AlipaySandbox) -> None:
    issued = await sandbox.auth_code()
    response = await sandbox.admin.post("/sandbox/admin/alipay/seed", json={"seed": 7})
    assert response.status_code == 200
    with pytest.raises(LoginCodeError):
        await sandbox.login().exchange_auth_code(issued["authCode"])


async def test_same_seed_same_users(sandbox: AlipaySandbox) -> None:
    async def users_after_seed() -> list[str]:
        await sandbox.admin.post("/sandbox/admin/alipay/seed", json={"seed": 3})
        return [(await sandbox.auth_code())["userId"] for _ in range(3)]

    assert await users_after_seed() == await users_after_seed()


# -- signatures --------------------------------------------------------------------------------------------------------


async def test_an_answer_under_another_alipay_key_is_not_trusted(sandbox: AlipaySandbox) -> None:
    login = sandbox.login(alipay_public_key_pem=public_pem("impostor"))
    issued = await sandbox.auth_code()
    with pytest.raises(ProviderUnavailableError) as caught:
        await login.exchange_auth_code(issued["authCode"])
    assert isinstance(caught.value, AlipayBadSignatureError)
    assert caught.value.code == "alipay.bad_signature"


Tamper = Callable[[str], str]


@dataclass
class TamperingProxy:
    """Forwards gateway calls to the simulator and rewrites the answer on the way back."""

    target: str = ""
    url: str = ""
    tamper: Tamper = str

    def app(self) -> Litestar:
        @post("/gateway.do", status_code=200)
        async def forward(request: Request[Any, Any, Any]) -> Response[str]:
            async with httpx.AsyncClient(trust_env=False) as client:
                upstream = await client.post(
                    self.target,
                    params=request.query_params.dict(),
                    content=await request.body(),
                    headers={"content-type": request.headers["content-type"]},
                )
            return Response(self.tamper(upstream.text), media_type="text/html;charset=utf-8")

        return Litestar([forward])


@pytest.fixture(scope="module")
async def tampering_proxy(served: AlipaySandbox) -> AsyncIterator[TamperingProxy]:
    proxy = TamperingProxy(target=served.gateway_url)
    async with run_standalone(proxy.app()) as url:
        proxy.url = url
        yield proxy


@pytest.fixture
def proxy(tampering_proxy: TamperingProxy) -> TamperingProxy:
    tampering_proxy.tamper = str
    return tampering_proxy


def _swap_user_id(body: str) -> str:
    content, _ = extract_response_content(body, "alipay.system.oauth.token")
    payload = json.loads(content)
    return body.replace(payload["user_id"], "2088999999999999")


def _drop_sign(body: str) -> str:
    content, _ = extract_response_content(body, "alipay.system.oauth.token")
    return f'{{"alipay_system_oauth_token_response":{content}}}'


def _reformat(body: str) -> str:
    content, sign = extract_response_content(body, "alipay.system.oauth.token")
    pretty = json.dumps(json.loads(content), indent=2)
    return f'{{"alipay_system_oauth_token_response":{pretty},"sign":"{sign}"}}'


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_swap_user_id, id="swapped-user"),
        pytest.param(_drop_sign, id="unsigned-success"),
        pytest.param(_reformat, id="re-serialised"),
    ],
)
async def test_a_tampered_answer_is_not_trusted(sandbox: AlipaySandbox, proxy: TamperingProxy, tamper: Tamper) -> None:
    proxy.tamper = tamper
    login = sandbox.login(gateway_url=f"{proxy.url}/gateway.do")
    issued = await sandbox.auth_code()
    with pytest.raises(AlipayBadSignatureError) as caught:
        await login.exchange_auth_code(issued["authCode"])
    assert isinstance(caught.value, ProviderUnavailableError)
    assert caught.value.code == "alipay.bad_signature"


async def test_the_proxy_itself_is_transparent(sandbox: AlipaySandbox, proxy: TamperingProxy) -> None:
    login = sandbox.login(gateway_url=f"{proxy.url}/gateway.do")
    issued = await sandbox.auth_code()
    assert (await login.exchange_auth_code(issued["authCode"])).user_id == issued["userId"]


async def test_a_request_signed_with_the_wrong_app_key_is_refused(sandbox: AlipaySandbox) -> None:
    login = sandbox.login(app_key="not-the-registered-one")
    issued = await sandbox.auth_code()
    with pytest.raises(ProviderUnavailableError) as caught:
        await login.exchange_auth_code(issued["authCode"])
    assert isinstance(caught.value, AlipayMisconfiguredError)
    assert caught.value.code == "alipay.misconfigured"
    assert caught.value.sub_code == "isv.invalid-signature"
    assert sandbox.simulator.auth_codes[issued["authCode"]].used is False, "refused before the method ran"


async def test_an_unknown_app_gets_an_unsigned_error(sandbox: AlipaySandbox) -> None:
    params = sign_params(
        {
            "app_id": "2021999999999999",
            "method": "alipay.system.oauth.token",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": format_timestamp(sandbox.clock.now()),
            "version": "1.0",
        },
        private_pem("app"),
    )
    raw = await sandbox.http.post(sandbox.gateway_url, data=params)
    content, sign = extract_response_content(raw.text, "alipay.system.oauth.token")
    assert sign is None
    assert json.loads(content)["sub_code"] == "isv.invalid-app-id"

    with pytest.raises(AlipayMisconfiguredError) as caught:
        await sandbox.login(app_id="2021999999999999").exchange_auth_code("whatever")
    assert caught.value.sub_code == "isv.invalid-app-id"


async def test_a_stale_timestamp_is_refused(sandbox: AlipaySandbox) -> None:
    behind = ManualClock(START - timedelta(minutes=20))
    issued = await sandbox.auth_code()
    with pytest.raises(AlipayMisconfiguredError) as caught:
        await sandbox.login(clock=behind).exchange_auth_code(issued["authCode"])
    assert caught.value.sub_code == "isv.invalid-timestamp"


async def test_both_transports_and_a_signed_answer(sandbox: AlipaySandbox) -> None:
    """Everything in the query string (python-alipay-sdk's GET), answered and signed over the raw text."""
    issued = await sandbox.auth_code()
    params = sign_params(
        {
            "app_id": APP_ID,
            "method": "alipay.system.oauth.token",
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": format_timestamp(sandbox.clock.now()),
            "version": "1.0",
            "grant_type": "authorization_code",
            "code": issued["authCode"],
        },
        private_pem("app"),
    )
    raw = await sandbox.http.get(sandbox.gateway_url, params=params)
    assert raw.status_code == 200
    content, sign = extract_response_content(raw.text, "alipay.system.oauth.token")
    assert sign is not None
    assert rsa2_verify(content, sign, sandbox.simulator.public_key_pem)
    payload = json.loads(content)
    assert payload["user_id"] == issued["userId"]
    assert "code" not in payload, "the oauth token success carries no code, as the real gateway's"
    assert payload["auth_start"] == "2025-03-01 16:00:00"


async def test_conflicting_duplicate_params_are_refused(sandbox: AlipaySandbox) -> None:
    raw = await sandbox.http.post(
        sandbox.gateway_url, params={"method": "alipay.system.oauth.token"}, data={"method": "alipay.trade.query"}
    )
    content, _ = extract_response_content(raw.text, "alipay.system.oauth.token")
    assert json.loads(content)["sub_code"] == "isv.invalid-parameter"


# -- failures of the transport ----------------------------------------------------------------------------------------


async def test_a_server_error_means_unavailable(sandbox: AlipaySandbox) -> None:
    await sandbox.set_faults(
        {"inbound": {"errorRate": 1.0, "errorStatus": 500, "errorBody": "oops", "pathPrefix": "/gateway"}}
    )
    issued = await sandbox.auth_code()
    with pytest.raises(ProviderUnavailableError) as caught:
        await sandbox.login().exchange_auth_code(issued["authCode"])
    assert isinstance(caught.value, AlipayUnavailableError)
    assert caught.value.code == "alipay.unavailable"


async def test_a_garbled_200_is_a_bad_response(sandbox: AlipaySandbox) -> None:
    await sandbox.set_faults(
        {
            "inbound": {
                "errorRate": 1.0,
                "errorStatus": 200,
                "errorBody": "<html>维护中</html>",
                "pathPrefix": "/gateway",
            }
        }
    )
    issued = await sandbox.auth_code()
    with pytest.raises(AlipayBadResponseError):
        await sandbox.login().exchange_auth_code(issued["authCode"])


async def test_a_timeout_means_unavailable(sandbox: AlipaySandbox) -> None:
    await sandbox.set_faults({"inbound": {"timeoutRate": 1.0, "timeoutSeconds": 3.0, "pathPrefix": "/gateway"}})
    issued = await sandbox.auth_code()
    with pytest.raises(AlipayUnavailableError):
        await sandbox.login(timeout_seconds=0.3).exchange_auth_code(issued["authCode"])


async def test_an_unreachable_gateway_means_unavailable(sandbox: AlipaySandbox) -> None:
    login = sandbox.login(gateway_url="http://127.0.0.1:9/gateway.do")
    with pytest.raises(AlipayUnavailableError):
        await login.exchange_auth_code("4b203fe6c11548bcabd8da5bb087a83b")


# -- extending the simulator (what the payment methods will do) -------------------------------------------------------


async def test_new_methods_plug_into_the_dispatch(sandbox: AlipaySandbox) -> None:
    async def trade_query(simulator: AlipaySimulator, call: GatewayCall) -> dict[str, object]:
        biz = call.biz_content()
        if biz.get("out_trade_no") != "B1":
            raise business_failed("ACQ.TRADE_NOT_EXIST", "交易不存在")
        return ok(out_trade_no="B1", trade_status="TRADE_SUCCESS", total_amount="25.00")

    async def unavailable(simulator: AlipaySimulator, call: GatewayCall) -> dict[str, object]:
        raise business_failed("ACQ.SYSTEM_ERROR", "系统繁忙")

    sandbox.simulator.methods["alipay.trade.query"] = trade_query
    client = sandbox.client()

    payload = await client.call("alipay.trade.query", biz_content={"out_trade_no": "B1"})
    assert payload["trade_status"] == "TRADE_SUCCESS"
    assert payload["code"] == "10000"

    with pytest.raises(AlipayBusinessError) as caught:
        await client.call("alipay.trade.query", biz_content={"out_trade_no": "B2"})
    assert (caught.value.alipay_code, caught.value.sub_code) == ("40004", "ACQ.TRADE_NOT_EXIST")
    assert caught.value.sub_msg == "交易不存在"

    with pytest.raises(AlipayMisconfiguredError) as refused:
        await client.call("alipay.trade.close", biz_content={"out_trade_no": "B1"})
    assert refused.value.sub_code == "isv.invalid-method"

    sandbox.simulator.methods["alipay.system.oauth.token"] = unavailable
    with pytest.raises(ProviderUnavailableError):
        await sandbox.login().exchange_auth_code("4b203fe6c11548bcabd8da5bb087a83b")


async def test_simulated_notifications_verify_with_the_alipay_key(sandbox: AlipaySandbox) -> None:
    params = sandbox.simulator.sign_notification(
        {
            "notify_type": "trade_status_sync",
            "app_id": APP_ID,
            "out_trade_no": "B1",
            "trade_status": "TRADE_SUCCESS",
            "total_amount": "25.00",
            "subject": "挂号费",
            "passback_params": "",
        }
    )
    assert params["sign_type"] == "RSA2"
    assert verify_notify(params, alipay_public_key_pem=sandbox.simulator.public_key_pem)
    assert not verify_notify({**params, "total_amount": "0.01"}, alipay_public_key_pem=sandbox.simulator.public_key_pem)


async def test_the_public_key_helper(sandbox: AlipaySandbox) -> None:
    response = await sandbox.admin.get("/sandbox/alipay/test/public-key")
    assert response.status_code == 200
    assert response.content == sandbox.simulator.public_key_pem


def _answering(result: dict[str, object] | GatewayFailure) -> MethodHandler:
    async def handler(simulator: AlipaySimulator, call: GatewayCall) -> dict[str, object]:
        if isinstance(result, GatewayFailure):
            raise result
        return result

    return handler


@pytest.mark.parametrize(
    ("answer", "expected", "code"),
    [
        pytest.param(
            GatewayFailure("20000", "Service Currently Unavailable", "isp.unknow-error", "服务暂不可用"),
            AlipayUnavailableError,
            "alipay.unavailable",
            id="20000",
        ),
        pytest.param(
            GatewayFailure("40006", "Insufficient Permissions", "isv.insufficient-isv-permissions", "ISV权限不足"),
            AlipayMisconfiguredError,
            "alipay.misconfigured",
            id="40006-isv",
        ),
        pytest.param(
            GatewayFailure("40004", "Business Failed", "ACQ.SYSTEM_ERROR", "系统错误"),
            AlipayUnavailableError,
            "alipay.unavailable",
            id="40004",
        ),
        pytest.param({"access_token": "authusrB0"}, AlipayBadResponseError, "alipay.bad_response", id="no-identity"),
        pytest.param(
            {"user_id": "2088000000000001", "sub_code": "isv.unknown"},
            AlipayBadResponseError,
            "alipay.bad_response",
            id="sub-code-without-code",
        ),
    ],
)
async def test_login_failures_map_to_the_port_errors(
    sandbox: AlipaySandbox, answer: dict[str, object] | GatewayFailure, expected: type[Exception], code: str
) -> None:
    sandbox.simulator.methods["alipay.system.oauth.token"] = _answering(answer)
    with pytest.raises(ProviderUnavailableError) as caught:
        await sandbox.login().exchange_auth_code("4b203fe6c11548bcabd8da5bb087a83b")
    assert type(caught.value) is expected
    assert caught.value.code == code


async def test_a_signed_failure_must_verify_too(sandbox: AlipaySandbox) -> None:
    login = sandbox.login(alipay_public_key_pem=public_pem("impostor"))
    with pytest.raises(AlipayBadSignatureError):
        await login.exchange_auth_code("4b203fe6c11548bcabd8da5bb087a83b")
