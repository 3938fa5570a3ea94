"""Our e-health-card client against the e-health-card simulator, over real HTTP on loopback (protocols §6)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from domain.kernel.errors import ConflictError, UpstreamError
from integrations.healthcard import (
    APP_TOKEN_PATH,
    CODE_TYPE_STATIC,
    DEFAULT_RESULT_CODES,
    ISV_PATH,
    HealthCard,
    HealthCardBadResponseError,
    HealthCardBadSignatureError,
    HealthCardClient,
    HealthCardCodeUsedError,
    HealthCardQrExpiredError,
    HealthCardRejectedError,
    HealthCardUnavailableError,
    sign_request,
    sign_response,
)
from persistence.ephemeral.memory_store import InMemoryEphemeralStore
from sandbox.framework import NO_FAULTS, MessageRecord, RequestRecord, SandboxContext, build_sandbox_app, run_standalone
from sandbox.healthcard import (
    BINDINGS,
    CARD_NOT_FOUND,
    DEMO_APP_ID,
    DEMO_APP_SECRET,
    DEMO_HOSPITAL_ID,
    DEMO_ORG_CODE,
    HEALTH_CODE_INVALID,
    PARAM_ERROR,
    QR_EXPIRED,
    REPORTS,
    SIGN_ERROR,
    TIMESTAMP_INVALID,
    TOKEN_INVALID,
    TOKEN_PATH,
    HealthCardSimulator,
    healthcard_simulator,
)
from tests.support.clock import ManualClock

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
RELATE_APP_ID = "wx0000000000demo1"
OPEN_ID = "oSandboxOpenId000000000000001"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def resident_id(first17: str) -> str:
    """A resident ID number with a valid GB 11643 check character."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _ID_WEIGHTS, strict=True))
    return first17 + "10X98765432"[total % 11]


ZHANG_ID = resident_id("11010519900307281")
LI_ID = resident_id("44030019851123004")


@dataclass
class Server:
    url: str
    admin: httpx.AsyncClient
    http: httpx.AsyncClient
    ctx: SandboxContext
    clock: ManualClock
    simulator: HealthCardSimulator


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[Server]:
    """One simulator server for the module; ``sandbox`` resets it before each test."""
    clock = ManualClock(START)
    ctx = SandboxContext(clock)
    simulator = healthcard_simulator()
    app = build_sandbox_app([simulator], ctx, pump_interval=None)
    async with (
        run_standalone(app) as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0) as admin,
        httpx.AsyncClient(trust_env=False) as http,
    ):
        yield Server(url=url, admin=admin, http=http, ctx=ctx, clock=clock, simulator=simulator)


@dataclass
class HealthCardSandbox:
    server: Server

    @property
    def clock(self) -> ManualClock:
        return self.server.clock

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/sandbox/healthcard"

    def client(self, **overrides: Any) -> HealthCardClient:
        config: dict[str, Any] = {
            "app_id": DEMO_APP_ID,
            "app_secret": DEMO_APP_SECRET,
            "hospital_id": DEMO_HOSPITAL_ID,
            "http": self.server.http,
            "clock": self.clock,
            "base_url": self.base_url,
            "relate_app_id": RELATE_APP_ID,
            "timeout_seconds": 2.0,
            **overrides,
        }
        return HealthCardClient(**config)

    async def register(self, client: HealthCardClient, **overrides: Any) -> HealthCard:
        person: dict[str, Any] = {
            "wechat_code": "wechat-code-0001",
            "name": "张三",
            "gender": "女",
            "nation": "汉族",
            "birthday": "1990-03-07",
            "id_number": ZHANG_ID,
            "phone": "13800138000",
            **overrides,
        }
        return await client.register_health_card(**person)

    async def health_code(self, health_card_id: str) -> str:
        answer = await self.server.admin.post(
            "/sandbox/healthcard/test/health-code", json={"healthCardId": health_card_id}
        )
        assert answer.status_code == 200, answer.text
        code: str = answer.json()["healthCode"]
        return code

    async def tamper(self, enabled: bool) -> None:
        answer = await self.server.admin.post("/sandbox/healthcard/test/tamper-signatures", json={"enabled": enabled})
        assert answer.status_code == 200, answer.text

    async def advance(self, seconds: float) -> None:
        answer = await self.server.admin.post("/sandbox/admin/clock", json={"advanceSeconds": seconds})
        assert answer.status_code == 200, answer.text

    async def set_faults(self, plan: dict[str, Any]) -> None:
        answer = await self.server.admin.put("/sandbox/admin/healthcard/faults", json=plan)
        assert answer.status_code == 200, answer.text

    def requests(self, path: str) -> list[RequestRecord]:
        entries = self.server.ctx.context("healthcard").recorder.entries("requests")
        return [entry for entry in entries if isinstance(entry, RequestRecord) and entry.path == path]

    def token_fetches(self) -> int:
        return len(self.requests(TOKEN_PATH))

    def messages(self, stream: str) -> list[dict[str, Any]]:
        entries = self.server.ctx.context("healthcard").recorder.entries(stream)
        return [entry.data for entry in entries if isinstance(entry, MessageRecord)]

    def answers(self, path: str) -> list[dict[str, Any]]:
        """The bodies of the requests that reached ``path``, decoded."""
        return [json.loads(entry.body) for entry in self.requests(path)]


@pytest.fixture
async def sandbox(server: Server) -> HealthCardSandbox:
    server.clock.reset()
    server.ctx.seed("healthcard", 0)
    context = server.ctx.context("healthcard")
    context.faults = NO_FAULTS
    context.recorder.clear()
    return HealthCardSandbox(server)


def test_paths_and_result_codes_agree_with_the_sandbox() -> None:
    assert APP_TOKEN_PATH == TOKEN_PATH
    assert DEFAULT_RESULT_CODES.bad_signature == {SIGN_ERROR}
    assert DEFAULT_RESULT_CODES.token_invalid == {TOKEN_INVALID}
    assert DEFAULT_RESULT_CODES.code_used == {HEALTH_CODE_INVALID}
    assert DEFAULT_RESULT_CODES.qr_expired == {QR_EXPIRED}


# --- the appToken ------------------------------------------------------------------------------------------


async def test_concurrent_callers_share_one_token_fetch(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    tokens = await asyncio.gather(*(client.get_app_token() for _ in range(10)))
    assert len(set(tokens)) == 1
    assert sandbox.token_fetches() == 1
    card = await sandbox.register(client)
    await asyncio.gather(*(client.get_by_qr_code(card.qr_code_text) for _ in range(10)))
    assert sandbox.token_fetches() == 1


async def test_token_request_envelope(sandbox: HealthCardSandbox) -> None:
    await sandbox.client().get_app_token()
    (body,) = sandbox.answers(TOKEN_PATH)
    common_in, req = body["commonIn"], body["req"]
    assert req == {"appId": DEMO_APP_ID}
    assert common_in["appToken"] == ""
    assert re.fullmatch(r"[0-9A-F]{32}", common_in["requestId"])
    assert common_in["hospitalId"] == DEMO_HOSPITAL_ID
    assert common_in["timestamp"] == str(int(START.timestamp()))
    assert common_in["channelNum"] == 0
    assert "relateAppId" not in common_in
    assert common_in["sign"] == sign_request(common_in, req, app_secret=DEMO_APP_SECRET)


async def test_token_is_kept_until_its_expiry_minus_the_margin(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    first = await client.get_app_token()
    await sandbox.advance(7200 - 60 - 1)
    assert await client.get_app_token() == first
    await sandbox.advance(1)
    assert await client.get_app_token() != first
    assert sandbox.token_fetches() == 2


async def test_token_invalidated_by_another_fetch_is_fetched_again_once(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    card = await sandbox.register(client)
    stale = await client.get_app_token()

    other_replica = sandbox.client()  # no shared cache: its fetch invalidates ours, as on the platform
    await other_replica.get_app_token()
    assert sandbox.token_fetches() == 2

    found = await client.get_by_qr_code(card.qr_code_text)
    assert found.health_card_id == card.health_card_id
    assert sandbox.token_fetches() == 3
    assert await client.get_app_token() != stale
    first_try, retry = sandbox.answers(ISV_PATH + "getHealthCardByQRCode")
    assert first_try["commonIn"]["appToken"] == stale
    assert retry["commonIn"]["appToken"] != stale
    assert retry["commonIn"]["requestId"] != first_try["commonIn"]["requestId"]


async def test_token_revoked_by_the_platform_is_replaced(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    card = await sandbox.register(client)
    answer = await sandbox.server.admin.post("/sandbox/healthcard/test/invalidate-tokens", json={})
    assert answer.json() == {"revoked": 1}
    assert (await client.bind_card_relation("P0001", card.qr_code_text)) is True
    assert sandbox.token_fetches() == 2


async def test_replicas_sharing_a_token_cache_fetch_once(sandbox: HealthCardSandbox) -> None:
    store = InMemoryEphemeralStore()
    replicas = [sandbox.client(token_cache=store) for _ in range(3)]
    tokens = await asyncio.gather(*(replica.get_app_token() for replica in replicas for _ in range(4)))
    assert len(set(tokens)) == 1
    assert sandbox.token_fetches() == 1


# --- cards -------------------------------------------------------------------------------------------------


async def test_register_then_get_by_qr_code(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    card = await sandbox.register(client, patid="HIS-0001")
    assert re.fullmatch(r"[0-9A-F]{64}", card.health_card_id)
    assert card.qr_code_text == f"{card.health_card_id}:1"
    assert card.phid
    for personal in ("张三", ZHANG_ID, "13800138000", card.qr_code_text):
        assert personal not in repr(card)

    found = await client.get_by_qr_code(card.qr_code_text)
    assert found.health_card_id == card.health_card_id
    assert (found.name, found.gender, found.nation, found.birthday) == ("张三", "女", "汉族", "1990-03-07")
    assert (found.id_type, found.id_number, found.phone, found.patid) == ("01", ZHANG_ID, "13800138000", "HIS-0001")
    assert found.phid == card.phid

    (body,) = sandbox.answers(ISV_PATH + "registerHealthCard")
    assert body["req"]["phone1"] == "13800138000"
    assert "relateAppId" not in body["commonIn"]


async def test_one_person_has_one_card(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    first = await sandbox.register(client)
    again = await sandbox.register(client, wechat_code="wechat-code-0002", phone="13900139000")
    assert again.health_card_id == first.health_card_id
    assert again.qr_code_text == first.qr_code_text
    other = await sandbox.register(client, name="李四", gender="男", birthday="1985-11-23", id_number=LI_ID)
    assert other.health_card_id != first.health_card_id


async def test_invalid_id_number_is_rejected_without_personal_data(sandbox: HealthCardSandbox) -> None:
    bad_id = ZHANG_ID[:-1] + ("0" if ZHANG_ID[-1] != "0" else "1")
    with pytest.raises(HealthCardRejectedError) as raised:
        await sandbox.register(sandbox.client(), id_number=bad_id)
    error = raised.value
    assert isinstance(error, ConflictError)
    assert (error.code, error.result_code) == ("healthcard.rejected", PARAM_ERROR)
    assert error.message == "电子健康卡平台未受理本次请求，请核对信息后重试"
    text = f"{error} {error.detail} {error.extra}"
    assert bad_id not in text
    assert "张三" not in text
    assert "13800138000" not in text


async def test_health_code_is_single_use(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    card = await sandbox.register(client)
    code = await sandbox.health_code(card.health_card_id)
    found = await client.get_by_health_code(code, relate_app_id=RELATE_APP_ID, relate_open_id=OPEN_ID)
    assert found.health_card_id == card.health_card_id
    assert found.id_number == ZHANG_ID

    (body,) = sandbox.answers(ISV_PATH + "getHealthCardByHealthCode")
    assert (body["commonIn"]["relateAppId"], body["commonIn"]["relateOpenId"]) == (RELATE_APP_ID, OPEN_ID)

    with pytest.raises(HealthCardCodeUsedError) as raised:
        await client.get_by_health_code(code, relate_app_id=RELATE_APP_ID, relate_open_id=OPEN_ID)
    assert raised.value.code == "healthcard.code_used"
    assert raised.value.result_code == HEALTH_CODE_INVALID
    assert raised.value.message == "健康卡授权码已使用或已失效，请重新授权"
    assert code not in str(raised.value)


async def test_health_code_expires(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    card = await sandbox.register(client)
    code = await sandbox.health_code(card.health_card_id)
    await sandbox.advance(5 * 60)
    with pytest.raises(HealthCardCodeUsedError):
        await client.get_by_health_code(code, relate_app_id=RELATE_APP_ID, relate_open_id=OPEN_ID)


async def test_dynamic_qr_code_expires_when_the_clock_moves(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    card = await sandbox.register(client)
    dynamic = await client.get_dynamic_qr_code(card.health_card_id, "01", ZHANG_ID, relate_open_id=OPEN_ID)
    assert re.fullmatch(rf"[0-9A-F]{{64}}:0:[0-9A-F]{{32}}::{DEMO_ORG_CODE}", dynamic.qr_code_text)
    assert dynamic.image.startswith(PNG_SIGNATURE)
    assert dynamic.expires_at == START + timedelta(minutes=5)
    assert dynamic.health_card_id == card.health_card_id

    assert (await client.get_by_qr_code(dynamic.qr_code_text)).health_card_id == card.health_card_id
    verified = await client.verify_qr_code(dynamic.qr_code_text, terminal_id="T01", hospital_code="H001")
    assert verified.result is True
    assert verified.card.health_card_id == card.health_card_id

    await sandbox.advance(5 * 60)
    with pytest.raises(HealthCardQrExpiredError) as raised:
        await client.get_by_qr_code(dynamic.qr_code_text)
    assert (raised.value.code, raised.value.result_code) == ("healthcard.qr_expired", QR_EXPIRED)
    with pytest.raises(HealthCardQrExpiredError):
        await client.verify_qr_code(dynamic.qr_code_text)
    assert (await client.get_by_qr_code(card.qr_code_text)).health_card_id == card.health_card_id


async def test_static_code_type_does_not_expire(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    card = await sandbox.register(client)
    static = await client.get_dynamic_qr_code(
        card.health_card_id, "01", ZHANG_ID, CODE_TYPE_STATIC, relate_open_id=OPEN_ID
    )
    assert static.qr_code_text == card.qr_code_text
    assert static.expires_at is None
    assert static.image.startswith(PNG_SIGNATURE)


async def test_dynamic_qr_code_of_another_person_is_refused(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    card = await sandbox.register(client)
    with pytest.raises(HealthCardRejectedError) as raised:
        await client.get_dynamic_qr_code(card.health_card_id, "01", LI_ID, relate_open_id=OPEN_ID)
    assert raised.value.result_code == CARD_NOT_FOUND
    assert LI_ID not in f"{raised.value} {raised.value.extra}"


async def test_bind_and_usage_report_are_recorded(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    card = await sandbox.register(client)
    assert await client.bind_card_relation("HIS-0042", card.qr_code_text) is True
    assert sandbox.messages(BINDINGS) == [
        {
            "appId": DEMO_APP_ID,
            "patid": "HIS-0042",
            "healthCardId": card.health_card_id,
            "qrCodeText": card.qr_code_text,
        }
    ]
    assert (await client.get_by_qr_code(card.qr_code_text)).patid == "HIS-0042"

    await client.report_his_data(
        qr_code_text=card.qr_code_text,
        used_at=START + timedelta(minutes=30),
        hospital_code="H001",
        scene="010101",
        department="0301",
        card_type="01",
        card_channel="0401",
        card_cost_types="0100",
        relate_open_id=OPEN_ID,
    )
    (report,) = sandbox.messages(REPORTS)
    assert report["time"] == "2025-03-01 16:30:00"  # Beijing time
    assert report["healthCardId"] == card.health_card_id
    assert report["qrCodeText"] == card.qr_code_text
    assert (report["hospitalCode"], report["scene"], report["department"]) == ("H001", "010101", "0301")
    assert (report["cardType"], report["cardChannel"], report["cardCostTypes"]) == ("01", "0401", "0100")
    assert (report["relateAppId"], report["relateOpenId"]) == (RELATE_APP_ID, OPEN_ID)
    assert report["hospitalId"] == DEMO_HOSPITAL_ID


# --- signatures and failures -------------------------------------------------------------------------------


async def test_tampered_response_signature_is_rejected(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client()
    card = await sandbox.register(client)
    await sandbox.tamper(True)
    with pytest.raises(HealthCardBadResponseError) as raised:
        await client.get_by_qr_code(card.qr_code_text)
    assert isinstance(raised.value, UpstreamError)
    assert raised.value.code == "healthcard.bad_response"

    fresh = sandbox.client()
    with pytest.raises(HealthCardBadResponseError):
        await fresh.get_app_token()
    fetches = sandbox.token_fetches()
    await sandbox.tamper(False)
    await fresh.get_app_token()
    assert sandbox.token_fetches() == fetches + 1, "the token of a tampered answer was not kept"


async def test_wrong_app_secret_is_rejected_as_bad_signature(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client(app_secret="not-the-secret")
    with pytest.raises(HealthCardBadSignatureError) as raised:
        await sandbox.register(client)
    error = raised.value
    assert isinstance(error, HealthCardRejectedError)
    assert (error.code, error.result_code, error.api) == ("healthcard.bad_signature", SIGN_ERROR, "getAppToken")
    assert error.message == "电子健康卡服务配置有误，请联系工作人员"
    assert "not-the-secret" not in f"{error} {error.extra}"


async def test_request_outside_the_timestamp_window_is_rejected(sandbox: HealthCardSandbox) -> None:
    skewed = ManualClock(START + timedelta(minutes=10))
    with pytest.raises(HealthCardRejectedError) as raised:
        await sandbox.client(clock=skewed).get_app_token()
    assert raised.value.result_code == TIMESTAMP_INVALID


async def test_callable_clock_is_accepted(sandbox: HealthCardSandbox) -> None:
    clock: Callable[[], datetime] = sandbox.clock.now
    card = await sandbox.register(sandbox.client(clock=clock))
    assert card.health_card_id


async def test_http_errors_and_timeouts_are_unavailable(sandbox: HealthCardSandbox) -> None:
    client = sandbox.client(timeout_seconds=0.3)
    await client.get_app_token()
    await sandbox.set_faults({"inbound": {"pathPrefix": ISV_PATH, "errorRate": 1.0, "errorStatus": 503}})
    with pytest.raises(HealthCardUnavailableError) as raised:
        await client.get_by_qr_code("0" * 64 + ":1")
    assert raised.value.code == "healthcard.unavailable"
    assert raised.value.message == "电子健康卡服务暂时不可用，请稍后再试"

    await sandbox.set_faults({"inbound": {"pathPrefix": ISV_PATH, "timeoutRate": 1.0, "timeoutSeconds": 5.0}})
    with pytest.raises(HealthCardUnavailableError, match="timed out"):
        await client.get_by_qr_code("0" * 64 + ":1")


# --- answers the sandbox does not give (a mock transport) --------------------------------------------------


def _mock_client(handler: Callable[[dict[str, Any]], dict[str, Any]], **overrides: Any) -> HealthCardClient:
    """A client whose platform answers ``handler(request body)``; the token fetch succeeds, signed."""

    def respond(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        request_id = body["commonIn"]["requestId"]
        if request.url.path.endswith("getAppToken"):
            common_out: dict[str, Any] = {"requestId": request_id, "resultCode": 0, "errMsg": ""}
            rsp: dict[str, Any] = {"appToken": "T" * 32, "expiresIn": 7200}
            common_out["sign"] = sign_response(common_out, rsp, app_secret=DEMO_APP_SECRET)
            return httpx.Response(200, json={"commonOut": common_out, "rsp": rsp})
        return httpx.Response(200, json=handler(body))

    config: dict[str, Any] = {
        "app_id": DEMO_APP_ID,
        "app_secret": DEMO_APP_SECRET,
        "hospital_id": DEMO_HOSPITAL_ID,
        "http": httpx.AsyncClient(transport=httpx.MockTransport(respond)),
        "clock": ManualClock(START),
        "base_url": "http://platform.invalid",
        **overrides,
    }
    return HealthCardClient(**config)


def _card_answer(body: dict[str, Any], *, request_id: str | None = None, signed: bool = True) -> dict[str, Any]:
    common_out: dict[str, Any] = {
        "requestId": request_id or body["commonIn"]["requestId"],
        "resultCode": 0,
        "errMsg": "",
    }
    rsp = {"card": {"healthCardId": "A" * 64, "qrCodeText": "A" * 64 + ":1", "name": "张三"}}
    if signed:
        common_out["sign"] = sign_response(common_out, rsp, app_secret=DEMO_APP_SECRET)
    return {"commonOut": common_out, "rsp": rsp}


async def test_unsigned_success_is_refused_unless_signatures_are_optional() -> None:
    with pytest.raises(HealthCardBadResponseError, match="without a signature"):
        await _mock_client(lambda body: _card_answer(body, signed=False)).get_by_qr_code("A" * 64 + ":1")
    lenient = _mock_client(lambda body: _card_answer(body, signed=False), require_response_signature=False)
    assert (await lenient.get_by_qr_code("A" * 64 + ":1")).name == "张三"


async def test_signed_answer_to_another_request_is_refused() -> None:
    replayed = _mock_client(lambda body: _card_answer(body, request_id="0" * 32))
    with pytest.raises(HealthCardBadResponseError, match="another request"):
        await replayed.get_by_qr_code("A" * 64 + ":1")


async def test_platform_error_message_is_kept_without_personal_data() -> None:
    def refuse(body: dict[str, Any]) -> dict[str, Any]:
        req = body["req"]
        message = f"idNumber {req['idNumber']} of {req['name']} (phone {req['phone1']}) is not allowed"
        return {"commonOut": {"requestId": body["commonIn"]["requestId"], "resultCode": -20001, "errMsg": message}}

    client = _mock_client(refuse)
    with pytest.raises(HealthCardRejectedError) as raised:
        await client.register_health_card(
            wechat_code="w",
            name="王小明",
            gender="男",
            nation="汉族",
            birthday="1990-03-07",
            id_number=ZHANG_ID,
            phone="13800138000",
        )
    error = raised.value
    assert error.result_code == -20001
    assert error.extra["errMsg"] == "idNumber *** of *** (phone ***) is not allowed"
    text = f"{error} {error.detail} {error.extra} {error.message}"
    for personal in (ZHANG_ID, "王小明", "13800138000"):
        assert personal not in text


async def test_answer_that_is_not_the_platform_shape_is_a_bad_response() -> None:
    client = _mock_client(lambda body: {"unexpected": True})
    with pytest.raises(HealthCardBadResponseError, match="without commonOut"):
        await client.get_by_qr_code("A" * 64 + ":1")
