"""The SMS senders against the vendor simulators, over real HTTP on loopback, and failover between them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from domain.account.ports import ProviderUnavailableError, SmsRejectedError
from domain.kernel.errors import DomainError
from integrations.sms import AliyunSmsSender, FailoverSmsSender, TencentSmsSender, signature_v1, tc3_authorization
from integrations.sms.aliyun import percent_encode
from sandbox.framework import SandboxContext, build_sandbox_app, run_standalone
from sandbox.sms import AliyunSmsSimulator, TencentSmsSimulator
from tests.support.clock import ManualClock

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

ALIYUN_KEY_ID = "LTAI5tSandboxKeyId"
ALIYUN_SECRET = "sandbox-aliyun-secret"
TENCENT_SECRET_ID = "AKIDsandboxsecretid"
TENCENT_SECRET_KEY = "sandbox-tencent-secret-key"
SDK_APP_ID = "1400000001"
SIGN_NAME = "健康服务"
ALIYUN_TEMPLATE = "SMS_460000001"
TENCENT_TEMPLATE = "1800001"

PHONE = "13800138000"
OTHER_PHONE = "13912345678"
ILLEGAL_PHONE = "12345678901"
BLACKLISTED_PHONE = "13700000000"
CODE = "482913"
PARAMS = {"code": CODE, "minutes": "5"}


@dataclass
class SmsSandbox:
    url: str
    admin: httpx.AsyncClient
    http: httpx.AsyncClient
    shared_clock: ManualClock
    client_clock: ManualClock
    aliyun_sim: AliyunSmsSimulator
    tencent_sim: TencentSmsSimulator

    def aliyun(self, **overrides: Any) -> AliyunSmsSender:
        config: dict[str, Any] = {
            "access_key_id": ALIYUN_KEY_ID,
            "access_key_secret": ALIYUN_SECRET,
            "sign_name": SIGN_NAME,
            "templates": {"login_code": ALIYUN_TEMPLATE},
            "endpoint": f"{self.url}/sandbox/aliyun-sms",
            "http": self.http,
            "clock": self.client_clock,
            "timeout_seconds": 2.0,
            **overrides,
        }
        return AliyunSmsSender(**config)

    def tencent(self, **overrides: Any) -> TencentSmsSender:
        config: dict[str, Any] = {
            "secret_id": TENCENT_SECRET_ID,
            "secret_key": TENCENT_SECRET_KEY,
            "sdk_app_id": SDK_APP_ID,
            "sign_name": SIGN_NAME,
            "templates": {"login_code": TENCENT_TEMPLATE},
            "endpoint": f"{self.url}/sandbox/tencent-sms",
            "http": self.http,
            "clock": self.client_clock,
            "timeout_seconds": 2.0,
            **overrides,
        }
        return TencentSmsSender(**config)

    async def set_faults(self, simulator: str, plan: dict[str, Any]) -> None:
        response = await self.admin.put(f"/sandbox/admin/{simulator}/faults", json=plan)
        assert response.status_code == 200, response.text

    async def advance_shared(self, seconds: float) -> None:
        response = await self.admin.post("/sandbox/admin/clock", json={"advanceSeconds": seconds})
        assert response.status_code == 200, response.text

    async def advance_both(self, seconds: float) -> None:
        await self.advance_shared(seconds)
        await self.client_clock.advance(seconds)

    async def inbox(self, simulator: str, phone: str, limit: int | None = None) -> list[dict[str, Any]]:
        params: dict[str, str | int] = {"phone": phone}
        if limit is not None:
            params["limit"] = limit
        response = await self.admin.get(f"/sandbox/{simulator}/test/inbox", params=params)
        assert response.status_code == 200, response.text
        messages: list[dict[str, Any]] = response.json()["messages"]
        return messages

    async def settled(self, simulator: str) -> None:
        """Wait until every request reaching ``simulator`` was answered (a held one ends with the client)."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            response = await self.admin.get(f"/sandbox/admin/{simulator}/requests")
            if all(entry["elapsedMs"] is not None for entry in response.json()["entries"]):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{simulator} still holds a request")

    async def requests(self, simulator: str) -> list[dict[str, Any]]:
        response = await self.admin.get(f"/sandbox/admin/{simulator}/requests")
        assert response.status_code == 200, response.text
        entries = [e for e in response.json()["entries"] if not e["path"].startswith("/test/")]
        return entries


@dataclass
class SmsServer:
    url: str
    admin: httpx.AsyncClient
    http: httpx.AsyncClient
    shared_clock: ManualClock
    aliyun_sim: AliyunSmsSimulator
    tencent_sim: TencentSmsSimulator


@pytest.fixture(scope="module")
async def sms_server() -> AsyncIterator[SmsServer]:
    """One sandbox serving both simulators for the module; ``sms`` resets it before each test."""
    shared = ManualClock(START)
    ctx = SandboxContext(shared)
    aliyun_sim = AliyunSmsSimulator(
        access_key_id=ALIYUN_KEY_ID,
        access_key_secret=ALIYUN_SECRET,
        sign_names=[SIGN_NAME],
        templates={ALIYUN_TEMPLATE: "您的验证码为${code}，${minutes}分钟内有效，请勿泄露。"},
        per_minute=5,
    )
    tencent_sim = TencentSmsSimulator(
        secret_id=TENCENT_SECRET_ID,
        secret_key=TENCENT_SECRET_KEY,
        sdk_app_id=SDK_APP_ID,
        sign_names=[SIGN_NAME],
        templates={TENCENT_TEMPLATE: "您的验证码为{1}，{2}分钟内有效，请勿泄露。"},
        per_hour=None,
        per_day=3,
        blacklist=[BLACKLISTED_PHONE],
    )
    app = build_sandbox_app([aliyun_sim, tencent_sim], ctx, pump_interval=None)
    async with (
        run_standalone(app) as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0) as admin,
        httpx.AsyncClient(trust_env=False) as http,
    ):
        yield SmsServer(url, admin, http, shared, aliyun_sim, tencent_sim)


@pytest.fixture
async def sms(sms_server: SmsServer) -> SmsSandbox:
    server = sms_server
    server.shared_clock.reset()
    for name in ("aliyun-sms", "tencent-sms"):
        for method, path, body in (
            ("DELETE", f"/sandbox/admin/{name}/faults", None),
            ("DELETE", f"/sandbox/admin/{name}/requests", None),
            ("POST", f"/sandbox/admin/{name}/seed", {"seed": 0}),
        ):
            response = await server.admin.request(method, path, json=body)
            assert response.is_success, response.text
    return SmsSandbox(
        url=server.url,
        admin=server.admin,
        http=server.http,
        shared_clock=server.shared_clock,
        client_clock=ManualClock(START),
        aliyun_sim=server.aliyun_sim,
        tencent_sim=server.tencent_sim,
    )


def assert_no_personal_data(exc: DomainError) -> None:
    for text in (str(exc), exc.detail, exc.message, repr(exc)):
        assert PHONE not in text
        assert ILLEGAL_PHONE not in text
        assert CODE not in text


# --- Aliyun ------------------------------------------------------------------------------------------------


async def test_aliyun_delivers_to_the_inbox(sms: SmsSandbox) -> None:
    receipt = await sms.aliyun().send(PHONE, "login_code", PARAMS)
    assert receipt.provider == "aliyun"
    assert receipt.message_id.endswith("^0")

    (entry,) = await sms.inbox("aliyun-sms", PHONE)
    message = entry["message"]
    assert message["provider"] == "aliyun"
    assert message["phone"] == PHONE
    assert message["signName"] == SIGN_NAME
    assert message["template"] == ALIYUN_TEMPLATE
    assert message["params"] == PARAMS
    assert message["text"] == f"【{SIGN_NAME}】您的验证码为{CODE}，5分钟内有效，请勿泄露。"
    assert message["messageId"] == receipt.message_id

    (request,) = await sms.requests("aliyun-sms")
    assert request["method"] == "POST"
    assert request["query"] == "", "the number and the code travel in the body, never in the URL"
    assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert request["status"] == 200


async def test_aliyun_wrong_secret_is_a_signature_mismatch(sms: SmsSandbox) -> None:
    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.aliyun(access_key_secret="not-the-secret").send(PHONE, "login_code", PARAMS)
    assert "SignatureDoesNotMatch" in caught.value.detail
    assert_no_personal_data(caught.value)
    assert await sms.inbox("aliyun-sms", PHONE) == []
    (request,) = await sms.requests("aliyun-sms")
    assert request["status"] == 400


async def test_aliyun_unknown_access_key(sms: SmsSandbox) -> None:
    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.aliyun(access_key_id="LTAIunknown").send(PHONE, "login_code", PARAMS)
    assert "InvalidAccessKeyId.NotFound" in caught.value.detail


async def test_aliyun_clock_skew_beyond_fifteen_minutes(sms: SmsSandbox) -> None:
    sender = sms.aliyun()
    await sms.advance_shared(14 * 60)
    await sender.send(PHONE, "login_code", PARAMS)
    await sms.advance_shared(6 * 60)
    with pytest.raises(ProviderUnavailableError) as caught:
        await sender.send(PHONE, "login_code", PARAMS)
    assert "InvalidTimeStamp.Expired" in caught.value.detail
    assert_no_personal_data(caught.value)


async def test_aliyun_reused_nonce(sms: SmsSandbox) -> None:
    sender = sms.aliyun(nonce=lambda: "always-the-same-nonce")
    await sender.send(PHONE, "login_code", PARAMS)
    with pytest.raises(ProviderUnavailableError) as caught:
        await sender.send(PHONE, "login_code", PARAMS)
    assert "SignatureNonceUsed" in caught.value.detail
    assert len(await sms.inbox("aliyun-sms", PHONE)) == 1


async def test_aliyun_illegal_number_is_rejected(sms: SmsSandbox) -> None:
    with pytest.raises(SmsRejectedError) as caught:
        await sms.aliyun().send(ILLEGAL_PHONE, "login_code", PARAMS)
    assert caught.value.code == "sms.rejected"
    assert "isv.MOBILE_NUMBER_ILLEGAL" in caught.value.detail
    assert_no_personal_data(caught.value)


async def test_aliyun_per_number_flow_control(sms: SmsSandbox) -> None:
    sender = sms.aliyun()
    for _ in range(5):
        await sender.send(PHONE, "login_code", PARAMS)
    with pytest.raises(SmsRejectedError) as caught:
        await sender.send(PHONE, "login_code", PARAMS)
    assert caught.value.code == "sms.number_rate_limited"
    assert "isv.BUSINESS_LIMIT_CONTROL" in caught.value.detail
    assert_no_personal_data(caught.value)

    await sender.send(OTHER_PHONE, "login_code", PARAMS)  # the limit is per number
    await sms.advance_both(60)
    await sender.send(PHONE, "login_code", PARAMS)
    assert len(await sms.inbox("aliyun-sms", PHONE, limit=100)) == 6


async def test_aliyun_business_errors_are_provider_side(sms: SmsSandbox) -> None:
    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.aliyun(sign_name="别人的签名").send(PHONE, "login_code", PARAMS)
    assert "isv.SMS_SIGNATURE_ILLEGAL" in caught.value.detail

    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.aliyun(templates={"login_code": "SMS_0"}).send(PHONE, "login_code", PARAMS)
    assert "isv.SMS_TEMPLATE_ILLEGAL" in caught.value.detail

    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.aliyun().send(PHONE, "login_code", {"code": CODE})
    assert "isv.TEMPLATE_MISSING_PARAMETERS" in caught.value.detail

    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.aliyun().send(PHONE, "not_configured", PARAMS)
    assert "not configured" in caught.value.detail

    sms.aliyun_sim.balance = 0
    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.aliyun().send(PHONE, "login_code", PARAMS)
    assert "isv.AMOUNT_NOT_ENOUGH" in caught.value.detail
    assert await sms.inbox("aliyun-sms", PHONE) == []


async def test_aliyun_http_errors_and_timeouts_are_unavailable(sms: SmsSandbox) -> None:
    await sms.set_faults("aliyun-sms", {"inbound": {"errorRate": 1.0, "errorStatus": 500}})
    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.aliyun().send(PHONE, "login_code", PARAMS)
    assert "HTTP 500" in caught.value.detail

    await sms.set_faults("aliyun-sms", {"inbound": {"timeoutRate": 1.0, "timeoutSeconds": 10}})
    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.aliyun(timeout_seconds=0.3).send(PHONE, "login_code", PARAMS)
    assert "timed out" in caught.value.detail
    await sms.settled("aliyun-sms")


async def test_aliyun_simulator_speaks_the_get_form_and_xml(sms: SmsSandbox) -> None:
    params = {
        "AccessKeyId": ALIYUN_KEY_ID,
        "Action": "SendSms",
        "RegionId": "cn-hangzhou",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "get-nonce-1",
        "SignatureVersion": "1.0",
        "Timestamp": START.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Version": "2017-05-25",
        "PhoneNumbers": PHONE,
        "SignName": SIGN_NAME,
        "TemplateCode": ALIYUN_TEMPLATE,
        "TemplateParam": '{"code":"111111","minutes":"5"}',
    }
    params["Signature"] = signature_v1(params, access_key_secret=ALIYUN_SECRET, method="GET")

    def url(query: dict[str, str]) -> str:
        return "/sandbox/aliyun-sms/?" + "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in query.items())

    answer = await sms.admin.get(url({**params, "Format": "JSON"}))
    assert answer.status_code == 400, "Format is signed too: adding it after signing breaks the signature"
    assert answer.json()["Code"] == "SignatureDoesNotMatch"

    answer = await sms.admin.get(url(params))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    assert "<SendSmsResponse>" in answer.text
    assert "<Code>OK</Code>" in answer.text

    # The same request signed for GET does not verify as a POST.
    posted = await sms.admin.post(
        "/sandbox/aliyun-sms/",
        content="&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in params.items()),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 400
    assert "<Code>SignatureDoesNotMatch</Code>" in posted.text

    (entry,) = await sms.inbox("aliyun-sms", PHONE)
    assert entry["message"]["params"] == {"code": "111111", "minutes": "5"}


# --- Tencent Cloud -----------------------------------------------------------------------------------------


async def test_tencent_delivers_to_the_inbox(sms: SmsSandbox) -> None:
    receipt = await sms.tencent().send(PHONE, "login_code", PARAMS)
    assert receipt.provider == "tencent"
    assert ":" in receipt.message_id

    (entry,) = await sms.inbox("tencent-sms", f"+86{PHONE}")
    message = entry["message"]
    assert message["provider"] == "tencent"
    assert message["phone"] == PHONE
    assert message["signName"] == SIGN_NAME
    assert message["template"] == TENCENT_TEMPLATE
    assert message["params"] == {"1": CODE, "2": "5"}
    assert CODE in message["text"]
    assert message["messageId"] == receipt.message_id

    (request,) = await sms.requests("tencent-sms")
    assert request["headers"]["host"] == urlsplit(sms.url).netloc
    assert request["headers"]["x-tc-action"] == "SendSms"
    assert request["headers"]["x-tc-version"] == "2021-01-11"
    assert request["headers"]["x-tc-timestamp"] == str(int(START.timestamp()))
    assert request["headers"]["authorization"].startswith(
        f"TC3-HMAC-SHA256 Credential={TENCENT_SECRET_ID}/2025-03-01/sms/tc3_request, SignedHeaders=content-type;host,"
    )


async def test_tencent_wrong_secret_is_a_signature_failure(sms: SmsSandbox) -> None:
    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.tencent(secret_key="not-the-key").send(PHONE, "login_code", PARAMS)
    assert "AuthFailure.SignatureFailure" in caught.value.detail
    assert_no_personal_data(caught.value)
    assert await sms.inbox("tencent-sms", PHONE) == []

    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.tencent(secret_id="AKIDunknown").send(PHONE, "login_code", PARAMS)
    assert "AuthFailure.SecretIdNotFound" in caught.value.detail


async def test_tencent_signs_the_host_it_sends(sms: SmsSandbox) -> None:
    payload = (
        '{"PhoneNumberSet":["+8613800138000"],"SmsSdkAppId":"1400000001","SignName":"健康服务",'
        '"TemplateId":"1800001","TemplateParamSet":["1","2"]}'
    ).encode()
    timestamp = int(START.timestamp())

    async def post(signed_host: str) -> dict[str, Any]:
        authorization = tc3_authorization(
            secret_id=TENCENT_SECRET_ID,
            secret_key=TENCENT_SECRET_KEY,
            service="sms",
            host=signed_host,
            timestamp=timestamp,
            payload=payload,
        )
        answer = await sms.admin.post(
            "/sandbox/tencent-sms/",
            content=payload,
            headers={
                "Authorization": authorization,
                "Content-Type": "application/json; charset=utf-8",
                "X-TC-Action": "SendSms",
                "X-TC-Version": "2021-01-11",
                "X-TC-Timestamp": str(timestamp),
                "X-TC-Region": "ap-guangzhou",
            },
        )
        assert answer.status_code == 200, "API 3.0 answers errors with HTTP 200"
        body: dict[str, Any] = answer.json()["Response"]
        assert body["RequestId"]
        return body

    assert (await post("sms.tencentcloudapi.com"))["Error"]["Code"] == "AuthFailure.SignatureFailure"
    (status,) = (await post(urlsplit(sms.url).netloc))["SendStatusSet"]
    assert status["Code"] == "Ok"
    assert status["PhoneNumber"] == "+8613800138000"


async def test_tencent_clock_skew_beyond_five_minutes(sms: SmsSandbox) -> None:
    sender = sms.tencent()
    await sms.advance_shared(4 * 60)
    await sender.send(PHONE, "login_code", PARAMS)
    await sms.advance_shared(16 * 60)
    with pytest.raises(ProviderUnavailableError) as caught:
        await sender.send(PHONE, "login_code", PARAMS)
    assert "AuthFailure.SignatureExpire" in caught.value.detail
    assert_no_personal_data(caught.value)


async def test_tencent_per_number_failures_are_rejections(sms: SmsSandbox) -> None:
    sender = sms.tencent()
    with pytest.raises(SmsRejectedError) as caught:
        await sender.send(ILLEGAL_PHONE, "login_code", PARAMS)
    assert "InvalidParameterValue.IncorrectPhoneNumber" in caught.value.detail
    assert caught.value.code == "sms.rejected"
    assert_no_personal_data(caught.value)

    with pytest.raises(SmsRejectedError) as caught:
        await sender.send(BLACKLISTED_PHONE, "login_code", PARAMS)
    assert "FailedOperation.PhoneNumberInBlacklist" in caught.value.detail


async def test_tencent_daily_limit_per_number(sms: SmsSandbox) -> None:
    sender = sms.tencent()
    for _ in range(3):
        await sender.send(PHONE, "login_code", PARAMS)
    with pytest.raises(SmsRejectedError) as caught:
        await sender.send(PHONE, "login_code", PARAMS)
    assert caught.value.code == "sms.number_rate_limited"
    assert "LimitExceeded.PhoneNumberDailyLimit" in caught.value.detail

    await sms.advance_both(86400)
    await sender.send(PHONE, "login_code", PARAMS)


async def test_tencent_request_level_errors_are_provider_side(sms: SmsSandbox) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"sdk_app_id": "1400999999"}, "InvalidParameterValue.SdkAppIdNotExist"),
        ({"sign_name": "别人的签名"}, "FailedOperation.SignatureIncorrectOrUnapproved"),
        ({"templates": {"login_code": "999"}}, "FailedOperation.TemplateIncorrectOrUnapproved"),
        ({"region": "eu-frankfurt"}, "UnsupportedRegion"),
    ]
    for overrides, code in cases:
        with pytest.raises(ProviderUnavailableError) as caught:
            await sms.tencent(**overrides).send(PHONE, "login_code", PARAMS)
        assert code in caught.value.detail

    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.tencent().send(PHONE, "login_code", {"code": CODE})
    assert "FailedOperation.TemplateParamSetNotMatchApprovedTemplate" in caught.value.detail

    sms.tencent_sim.balance = 0
    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.tencent().send(PHONE, "login_code", PARAMS)
    assert "FailedOperation.InsufficientBalanceInSmsPackage" in caught.value.detail

    assert await sms.inbox("tencent-sms", PHONE) == []

    await sms.set_faults("tencent-sms", {"inbound": {"errorRate": 1.0, "errorStatus": 502}})
    with pytest.raises(ProviderUnavailableError) as caught:
        await sms.tencent().send(PHONE, "login_code", PARAMS)
    assert "HTTP 502" in caught.value.detail


# --- the inbox and seeding ---------------------------------------------------------------------------------


async def test_inbox_is_per_phone_newest_first(sms: SmsSandbox) -> None:
    sender = sms.aliyun()
    for code in ("100001", "100002", "100003"):
        await sender.send(PHONE, "login_code", {"code": code, "minutes": "5"})
    await sender.send(OTHER_PHONE, "login_code", {"code": "999999", "minutes": "5"})

    newest = await sms.inbox("aliyun-sms", PHONE)
    assert [m["message"]["params"]["code"] for m in newest] == ["100003", "100002", "100001"]
    assert [m["message"]["params"]["code"] for m in await sms.inbox("aliyun-sms", PHONE, limit=1)] == ["100003"]
    assert [m["message"]["params"]["code"] for m in await sms.inbox("aliyun-sms", OTHER_PHONE)] == ["999999"]

    recorded = (await sms.admin.get("/sandbox/admin/aliyun-sms/requests", params={"stream": "inbox"})).json()
    assert len(recorded["entries"]) == 4

    bad = await sms.admin.get("/sandbox/aliyun-sms/test/inbox")
    assert bad.status_code == 400


async def test_seeding_resets_flow_control_and_balance(sms: SmsSandbox) -> None:
    sender = sms.aliyun()
    for _ in range(5):
        await sender.send(PHONE, "login_code", PARAMS)
    with pytest.raises(SmsRejectedError):
        await sender.send(PHONE, "login_code", PARAMS)
    response = await sms.admin.post("/sandbox/admin/aliyun-sms/seed", json={"seed": 1})
    assert response.status_code == 200
    await sender.send(PHONE, "login_code", PARAMS)


# --- failover ----------------------------------------------------------------------------------------------


async def test_failover_delivers_through_tencent_when_aliyun_answers_500(sms: SmsSandbox) -> None:
    await sms.set_faults("aliyun-sms", {"inbound": {"errorRate": 1.0, "errorStatus": 500}})
    sender = FailoverSmsSender([sms.aliyun(), sms.tencent()])
    receipt = await sender.send(PHONE, "login_code", PARAMS)
    assert receipt.provider == "tencent"
    (entry,) = await sms.inbox("tencent-sms", PHONE)
    assert entry["message"]["messageId"] == receipt.message_id
    (attempt,) = await sms.requests("aliyun-sms")
    assert attempt["faults"] == ["error"]


async def test_failover_on_aliyun_timeout(sms: SmsSandbox) -> None:
    await sms.set_faults("aliyun-sms", {"inbound": {"timeoutRate": 1.0, "timeoutSeconds": 10}})
    sender = FailoverSmsSender([sms.aliyun(timeout_seconds=0.3), sms.tencent()])
    receipt = await sender.send(PHONE, "login_code", PARAMS)
    assert receipt.provider == "tencent"
    assert len(await sms.inbox("tencent-sms", PHONE)) == 1
    # The held request is processed once the client gives up: the vendor may still deliver, which is why a
    # timeout can mean two messages (documented in the failover policy).
    await sms.settled("aliyun-sms")


async def test_failover_on_aliyun_business_unavailability(sms: SmsSandbox) -> None:
    sms.aliyun_sim.balance = 0
    receipt = await FailoverSmsSender([sms.aliyun(), sms.tencent()]).send(PHONE, "login_code", PARAMS)
    assert receipt.provider == "tencent"


async def test_failover_prefers_the_first_provider(sms: SmsSandbox) -> None:
    sender = FailoverSmsSender([sms.aliyun(), sms.tencent()])
    assert sender.provider == "failover:aliyun,tencent"
    assert (await sender.send(PHONE, "login_code", PARAMS)).provider == "aliyun"
    assert await sms.requests("tencent-sms") == []


async def test_failover_with_both_down(sms: SmsSandbox, caplog: pytest.LogCaptureFixture) -> None:
    await sms.set_faults("aliyun-sms", {"inbound": {"errorRate": 1.0, "errorStatus": 500}})
    await sms.set_faults("tencent-sms", {"inbound": {"errorRate": 1.0, "errorStatus": 503}})
    sender = FailoverSmsSender([sms.aliyun(), sms.tencent()])
    with (
        caplog.at_level(logging.WARNING, logger="integrations.sms.failover"),
        pytest.raises(ProviderUnavailableError) as caught,
    ):
        await sender.send(PHONE, "login_code", PARAMS)
    assert "aliyun SendSms: HTTP 500" in caught.value.detail
    assert "tencent SendSms: HTTP 503" in caught.value.detail
    assert_no_personal_data(caught.value)
    warnings = [r.getMessage() for r in caplog.records if r.name == "integrations.sms.failover"]
    assert warnings == [
        "sms provider unavailable: aliyun SendSms: HTTP 500",
        "sms provider unavailable: tencent SendSms: HTTP 503",
    ]
    assert PHONE not in caplog.text
    assert CODE not in caplog.text


async def test_rejected_number_is_not_retried_on_the_next_provider(sms: SmsSandbox) -> None:
    sender = FailoverSmsSender([sms.aliyun(), sms.tencent()])
    with pytest.raises(SmsRejectedError):
        await sender.send(ILLEGAL_PHONE, "login_code", PARAMS)
    assert len(await sms.requests("aliyun-sms")) == 1
    assert await sms.requests("tencent-sms") == []


async def test_per_number_flow_control_is_not_routed_around(sms: SmsSandbox) -> None:
    sender = FailoverSmsSender([sms.aliyun(), sms.tencent()])
    for _ in range(5):
        assert (await sender.send(PHONE, "login_code", PARAMS)).provider == "aliyun"
    with pytest.raises(SmsRejectedError) as caught:
        await sender.send(PHONE, "login_code", PARAMS)
    assert caught.value.code == "sms.number_rate_limited"
    assert await sms.requests("tencent-sms") == []


def test_failover_needs_a_sender() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FailoverSmsSender([])


# --- answers no simulator gives ----------------------------------------------------------------------------


def _answering(status: int, content: bytes) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(status, content=content)))


@pytest.mark.parametrize(
    ("status", "content", "expected"),
    [
        (200, b"<html>maintenance</html>", "not a JSON object"),
        (404, b"not found", "HTTP 404, not a JSON object"),
        (200, b'{"Code": "OK", "RequestId": "R1"}', "OK without a BizId (RequestId R1)"),
        (200, b'{"Code": "isv.SOMETHING_NEW", "Message": "13800138000"}', "isv.SOMETHING_NEW"),
        (400, b'{"Code": "free text with 13800138000 in it"}', "unexpected-answer"),
    ],
)
async def test_aliyun_malformed_or_unknown_answers_are_unavailable(status: int, content: bytes, expected: str) -> None:
    async with _answering(status, content) as http:
        sender = AliyunSmsSender(
            access_key_id="id",
            access_key_secret="secret",
            sign_name="s",
            templates={"t": "T"},
            http=http,
            clock=ManualClock(START),
        )
        with pytest.raises(ProviderUnavailableError) as caught:
            await sender.send(PHONE, "t", PARAMS)
    assert expected in caught.value.detail
    assert_no_personal_data(caught.value)


@pytest.mark.parametrize(
    ("content", "outcome", "expected"),
    [
        (b'{"Response": {"RequestId": "R1"}}', ProviderUnavailableError, "no SendStatus for the number"),
        (b'{"Error": {"Code": "InternalError"}}', ProviderUnavailableError, "not a JSON Response object"),
        (
            b'{"Response": {"Error": {"Code": "LimitExceeded.PhoneNumberDailyLimit"}, "RequestId": "R1"}}',
            SmsRejectedError,
            "LimitExceeded.PhoneNumberDailyLimit",
        ),
        (
            b'{"Response": {"SendStatusSet": [{"PhoneNumber": "+8613800138000", "Code": "Ok"}], "RequestId": "R1"}}',
            ProviderUnavailableError,
            "Ok without a SerialNo",
        ),
        (
            b'{"Response": {"SendStatusSet": [{"PhoneNumber": "13800138000", "Code": "FailedOperation.NewThing"}]}}',
            ProviderUnavailableError,
            "FailedOperation.NewThing",
        ),
    ],
)
async def test_tencent_malformed_or_unknown_answers(content: bytes, outcome: type[DomainError], expected: str) -> None:
    async with _answering(200, content) as http:
        sender = TencentSmsSender(
            secret_id="id",
            secret_key="key",
            sdk_app_id="1",
            sign_name="s",
            templates={"t": "1"},
            http=http,
            clock=ManualClock(START),
        )
        with pytest.raises(outcome) as caught:
            await sender.send(PHONE, "t", PARAMS)
    assert expected in caught.value.detail
    assert_no_personal_data(caught.value)
