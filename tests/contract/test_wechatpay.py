"""The WeChat Pay v3 client against the WeChat Pay simulator over real HTTP on loopback (protocols §2, §7).

A small receiver app plays our notification endpoint: it verifies each notification with the client
(``parse_notification``) and answers 204, or 401 when it refuses one, or what its script says first. The
wechatpayv3 SDK (dev dependency) talks to the same simulator as an independent oracle of both sides.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from types import SimpleNamespace
from typing import Any, Literal

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from litestar import Litestar, Request, Response, post
from litestar.params import FromPath
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3 import utils as oracle_utils

from domain.kernel.errors import ConflictError, ValidationError
from integrations.resilience import is_transient
from integrations.wechat.pay import (
    PlatformKeyStore,
    WechatPayBadResponseError,
    WechatPayClient,
    WechatPayMisconfiguredError,
    WechatPayNotificationError,
    WechatPayParamError,
    WechatPayRejectedError,
    WechatPayUnavailableError,
    parse_refund,
    parse_transaction,
)
from sandbox.framework import SandboxContext, build_sandbox_app, run_standalone
from sandbox.wechatpay import NOTIFY_RETRY_SCHEDULE, SimulatedMerchant, WechatPaySimulator
from tests.support.clock import ManualClock

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
"""16:00 Beijing time."""
MCHID = "1900000109"
MINI_APPID = "wx0000000000demo1"
APP_APPID = "wx8888888888888888"
API_V3_KEY = b"sandbox0wechatpay0apiv3key000001"
MERCHANT_SERIAL = "3775B6A45ACD588826D15E583A95F5DD2C5A1D1C"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
FAIL_BODY = '{"code":"FAIL","message":"失败"}'.encode()


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


def default_merchant(mode: Literal["certificate", "public_key"] = "certificate") -> SimulatedMerchant:
    return SimulatedMerchant(
        mchid=MCHID,
        public_key_pem=public_pem("merchant"),
        serial_no=MERCHANT_SERIAL,
        api_v3_key=API_V3_KEY,
        mode=mode,
        appids=frozenset({MINI_APPID, APP_APPID}),
    )


# --- the receiver (our notification endpoint) ------------------------------------------------------------------


@dataclass
class Receiver:
    url: str = ""
    verifier: WechatPayClient | None = None
    script: list[int] = field(default_factory=list)
    """Statuses to answer first, before verifying anything."""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    @property
    def notify_url(self) -> str:
        return f"{self.url}/wxpay/notify"

    @property
    def refund_url(self) -> str:
        return f"{self.url}/wxpay/refund"

    def reset(self) -> None:
        self.verifier = None
        self.script.clear()
        self.received.clear()
        self.events.clear()
        self.refusals.clear()


def receiver_app(receiver: Receiver) -> Litestar:
    @post("/wxpay/{kind:str}", status_code=200)
    async def notify(kind: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        body = await request.body()
        headers = dict(request.headers)
        receiver.received.append((headers, body))
        if receiver.script:
            return Response(FAIL_BODY, status_code=receiver.script.pop(0))
        assert receiver.verifier is not None, "the test sets the verifying client"
        try:
            event = await receiver.verifier.parse_notification(headers, body)
        except WechatPayNotificationError as exc:
            receiver.refusals.append(exc.code)
            return Response(FAIL_BODY, status_code=401)
        receiver.events.append(event)
        return Response(b"", status_code=204)

    return Litestar([notify])


# --- the sandbox -------------------------------------------------------------------------------------------------


@dataclass
class PaySandbox:
    url: str
    admin: httpx.AsyncClient
    http: httpx.AsyncClient
    clock: ManualClock
    ctx: SandboxContext
    simulator: WechatPaySimulator
    receiver: Receiver

    @property
    def base_url(self) -> str:
        return f"{self.url}/sandbox/wechatpay"

    def client(
        self,
        *,
        mode: Literal["certificate", "public_key"] = "certificate",
        key: str = "merchant",
        serial: str = MERCHANT_SERIAL,
        clock: Any = None,
        window_seconds: int = 300,
        base_url: str | None = None,
        timeout_seconds: float = 5.0,
    ) -> WechatPayClient:
        platform = (
            PlatformKeyStore.public_key(self.simulator.public_key_id, self.simulator.public_key_mode_pem)
            if mode == "public_key"
            else PlatformKeyStore.certificates()
        )
        return WechatPayClient(
            mchid=MCHID,
            merchant_private_key_pem=private_pem(key),
            merchant_serial_no=serial,
            api_v3_key=API_V3_KEY,
            platform=platform,
            http=self.http,
            clock=clock or self.clock,
            base_url=base_url or self.base_url,
            window_seconds=window_seconds,
            timeout_seconds=timeout_seconds,
        )

    def listening(self, client: WechatPayClient) -> WechatPayClient:
        """The receiver verifies notifications with ``client``."""
        self.receiver.verifier = client
        return client

    async def prepay(self, client: WechatPayClient, out_trade_no: str, total_fen: int = 2500, **extra: Any) -> str:
        return await client.jsapi_prepay(
            app_id=MINI_APPID,
            description="挂号费",
            out_trade_no=out_trade_no,
            total_fen=total_fen,
            payer_openid=OPENID,
            notify_url=self.receiver.notify_url,
            **extra,
        )

    async def pay(self, prepay_id: str, *, expect: int = 200, **body: Any) -> dict[str, Any]:
        response = await self.admin.post("/sandbox/wechatpay/test/pay", json={"prepayId": prepay_id, **body})
        assert response.status_code == expect, response.text
        answer: dict[str, Any] = response.json()
        await self.ctx.wait_idle()
        return answer

    async def paid_order(self, client: WechatPayClient, out_trade_no: str, total_fen: int = 2500) -> dict[str, Any]:
        return await self.pay(await self.prepay(client, out_trade_no, total_fen))

    async def advance(self, seconds: float) -> int:
        _, attempts = await self.ctx.advance(seconds)
        await self.ctx.wait_idle()
        return attempts

    async def vendor_faults(self, **plan: Any) -> None:
        response = await self.admin.put("/sandbox/wechatpay/test/faults", json=plan)
        assert response.status_code == 200, response.text

    async def order_faults(self, out_trade_no: str, **plan: Any) -> None:
        response = await self.admin.put(f"/sandbox/wechatpay/test/orders/{out_trade_no}/faults", json=plan)
        assert response.status_code == 200, response.text

    async def framework_faults(self, plan: dict[str, Any]) -> None:
        response = await self.admin.put("/sandbox/admin/wechatpay/faults", json=plan)
        assert response.status_code == 200, response.text

    async def notifications(self) -> list[dict[str, Any]]:
        response = await self.admin.get("/sandbox/wechatpay/test/notifications")
        assert response.status_code == 200, response.text
        answer: list[dict[str, Any]] = response.json()
        return answer

    async def requests(self, stream: str = "requests") -> list[dict[str, Any]]:
        response = await self.admin.get("/sandbox/admin/wechatpay/requests", params={"stream": stream})
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["entries"]
        return entries

    async def vendor_requests(self, prefix: str = "/v3/") -> list[dict[str, Any]]:
        return [entry for entry in await self.requests() if entry["path"].startswith(prefix)]

    async def reset(self) -> None:
        self.clock.reset()
        self.simulator.merchants = {MCHID: default_merchant()}
        self.simulator.refund_processing = timedelta(seconds=60)
        assert (await self.admin.post("/sandbox/admin/wechatpay/seed", json={"seed": 0})).status_code == 200
        assert (await self.admin.delete("/sandbox/admin/wechatpay/faults")).status_code == 204
        assert (await self.admin.delete("/sandbox/wechatpay/test/faults")).status_code == 204
        assert (await self.admin.delete("/sandbox/admin/wechatpay/requests")).status_code == 204
        self.receiver.reset()


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[PaySandbox]:
    """One simulator and one receiver served for the module (a server per test would dominate the run time)."""
    clock = ManualClock(START)
    ctx = SandboxContext(clock)
    simulator = WechatPaySimulator(merchants=[default_merchant()])
    receiver = Receiver()
    app = build_sandbox_app([simulator], ctx, pump_interval=None)
    async with (
        run_standalone(app) as url,
        run_standalone(receiver_app(receiver)) as receiver_url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=10.0) as admin,
        httpx.AsyncClient(trust_env=False) as http,
    ):
        receiver.url = receiver_url
        yield PaySandbox(url=url, admin=admin, http=http, clock=clock, ctx=ctx, simulator=simulator, receiver=receiver)


@pytest.fixture
async def sandbox(served: PaySandbox) -> PaySandbox:
    await served.reset()
    return served


# --- prepay and client parameters --------------------------------------------------------------------------------


async def test_jsapi_prepay_and_the_mini_program_parameters(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    prepay_id = await sandbox.prepay(client, "REG20250301000001")
    assert prepay_id.startswith("wx20250301160000")

    params = client.client_params_jsapi(MINI_APPID, prepay_id)
    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["package"] == f"prepay_id={prepay_id}"
    assert params["signType"] == "RSA"
    assert params["timeStamp"] == str(int(START.timestamp()))
    message = f"{MINI_APPID}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n".encode()
    _key("merchant").public_key().verify(
        base64.b64decode(params["paySign"]), message, padding.PKCS1v15(), hashes.SHA256()
    )

    (request,) = await sandbox.vendor_requests("/v3/pay/")
    assert request["headers"]["authorization"].startswith(f'WECHATPAY2-SHA256-RSA2048 mchid="{MCHID}",')
    assert request["headers"]["user-agent"]
    assert '"payer":{"openid":"' in request["body"]
    certificate_downloads = await sandbox.vendor_requests("/v3/certificates")
    assert len(certificate_downloads) == 1, "certificate mode downloads once, then caches"


async def test_app_prepay_and_the_app_parameters(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    prepay_id = await client.app_prepay(
        app_id=APP_APPID,
        description="在线问诊",
        out_trade_no="APP20250301000001",
        total_fen=3000,
        notify_url=sandbox.receiver.notify_url,
    )
    params = client.client_params_app(APP_APPID, prepay_id)
    assert params["partnerid"] == MCHID
    assert params["package"] == "Sign=WXPay"
    assert params["prepayid"] == prepay_id
    message = f"{APP_APPID}\n{params['timestamp']}\n{params['noncestr']}\n{prepay_id}\n".encode()
    _key("merchant").public_key().verify(base64.b64decode(params["sign"]), message, padding.PKCS1v15(), hashes.SHA256())

    sandbox.listening(client)
    paid = await sandbox.pay(prepay_id)
    (event,) = sandbox.receiver.events
    transaction = parse_transaction(event["resource"])
    assert (transaction.trade_type, transaction.appid, transaction.total_fen) == ("APP", APP_APPID, 3000)
    assert transaction.transaction_id == paid["transactionId"]
    assert transaction.payer_openid


async def test_a_reused_out_trade_no_with_other_parameters_is_rejected_without_the_openid(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    first = await sandbox.prepay(client, "REG20250301000002")
    again = await sandbox.prepay(client, "REG20250301000002")
    assert again != first, "the same order may be prepaid again (a new prepay_id)"
    with pytest.raises(WechatPayRejectedError) as caught:
        await client.jsapi_prepay(
            app_id=MINI_APPID,
            description="挂号费",
            out_trade_no="REG20250301000002",
            total_fen=2500,
            payer_openid="oAnotherPayer0000000000000000",
            notify_url=sandbox.receiver.notify_url,
        )
    assert caught.value.vendor_code == "OUT_TRADE_NO_USED"
    assert isinstance(caught.value, ConflictError)
    assert "oAnotherPayer" not in str(caught.value)


async def test_malformed_parameters_are_a_param_error(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    with pytest.raises(WechatPayParamError) as caught:
        await client.jsapi_prepay(
            app_id=MINI_APPID,
            description="挂号费",
            out_trade_no="REG20250301000003",
            total_fen=100,
            payer_openid=OPENID,
            notify_url=f"{sandbox.receiver.notify_url}?order=REG20250301000003",
        )
    assert isinstance(caught.value, ValidationError)
    assert (caught.value.code, caught.value.vendor_code, caught.value.http_status) == (
        "wechatpay.rejected",
        "PARAM_ERROR",
        400,
    )


# --- paying and notifications ------------------------------------------------------------------------------------


async def test_paying_sends_a_verified_notification_and_the_query_agrees(sandbox: PaySandbox) -> None:
    client = sandbox.listening(sandbox.client())
    prepay_id = await sandbox.prepay(client, "REG20250301000010", attach="booking:42")
    paid = await sandbox.pay(prepay_id, bankType="CMB_CREDIT")

    (event,) = sandbox.receiver.events
    assert event["event_type"] == "TRANSACTION.SUCCESS"
    assert event["resource_type"] == "encrypt-resource"
    notified = parse_transaction(event["resource"])
    assert notified.out_trade_no == "REG20250301000010"
    assert notified.trade_state == "SUCCESS"
    assert (notified.total_fen, notified.payer_total_fen, notified.attach) == (2500, 2500, "booking:42")
    assert notified.payer_openid == OPENID

    queried = await client.query_by_out_trade_no("REG20250301000010")
    assert queried == notified
    assert queried.transaction_id == paid["transactionId"]
    assert queried.success_time == START
    assert queried.bank_type == "CMB_CREDIT"
    assert await client.query_by_transaction_id(paid["transactionId"]) == queried

    (summary,) = await sandbox.notifications()
    assert summary["delivered"] is True
    assert summary["dispatcherOutcome"] == "delivered"
    assert [attempt["status"] for attempt in summary["attempts"]] == [204]


async def test_an_unpaid_order_queries_as_notpay(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    await sandbox.prepay(client, "REG20250301000011")
    transaction = await client.query_by_out_trade_no("REG20250301000011")
    assert (transaction.trade_state, transaction.transaction_id, transaction.paid) == ("NOTPAY", None, False)


async def test_notifications_follow_the_retry_schedule_signed_afresh_each_time(sandbox: PaySandbox) -> None:
    client = sandbox.listening(sandbox.client())
    sandbox.receiver.script = [500, 500, 503, 404, 500]
    await sandbox.paid_order(client, "REG20250301000012")
    assert len(sandbox.receiver.received) == 1

    for attempt, interval in enumerate(NOTIFY_RETRY_SCHEDULE[:4], start=2):
        await sandbox.advance(interval - 1)
        assert len(sandbox.receiver.received) == attempt - 1, "not before the interval is over"
        await sandbox.advance(1)
        assert len(sandbox.receiver.received) == attempt
    assert sandbox.receiver.events == []

    await sandbox.advance(NOTIFY_RETRY_SCHEDULE[4])  # 10 min later: 14 min after the first attempt
    (event,) = sandbox.receiver.events
    assert event["resource"]["out_trade_no"] == "REG20250301000012"
    timestamps = [int(headers["wechatpay-timestamp"]) for headers, _ in sandbox.receiver.received]
    assert [b - a for a, b in itertools.pairwise(timestamps)] == [15, 15, 30, 180, 600]
    bodies = {body for _, body in sandbox.receiver.received}
    assert len(bodies) == 1, "the same notification each time"

    await sandbox.advance(86400)
    assert len(sandbox.receiver.received) == 6, "nothing after the receiver acknowledged"


async def test_a_signtest_probe_is_refused_and_the_genuine_notification_follows(sandbox: PaySandbox) -> None:
    client = sandbox.listening(sandbox.client())
    await sandbox.order_faults("REG20250301000013", signtestProbe=True)
    await sandbox.paid_order(client, "REG20250301000013")
    assert sandbox.receiver.refusals == ["wechatpay.signature_probe"]
    assert sandbox.receiver.events == []
    probe_headers, _ = sandbox.receiver.received[0]
    assert probe_headers["wechatpay-signature"].startswith("WECHATPAY/SIGNTEST/")

    await sandbox.advance(15)
    (event,) = sandbox.receiver.events
    assert event["resource"]["out_trade_no"] == "REG20250301000013"
    (summary,) = await sandbox.notifications()
    assert [a["probe"] for a in summary["attempts"]] == [True, False]
    probes = [m for m in await sandbox.requests("notifications") if m["data"]["kind"] == "probe"]
    assert probes[0]["data"]["outcome"] == "probe-refused"


async def test_per_order_duplicate_drop_and_delay(sandbox: PaySandbox) -> None:
    client = sandbox.listening(sandbox.client())
    await sandbox.order_faults("REG20250301000014", duplicateNotifications=True)
    await sandbox.order_faults("REG20250301000015", dropNotifications=True)
    await sandbox.order_faults("REG20250301000016", delayNotificationsSeconds=120)
    await sandbox.paid_order(client, "REG20250301000014")
    await sandbox.paid_order(client, "REG20250301000015")
    await sandbox.paid_order(client, "REG20250301000016")
    await sandbox.paid_order(client, "REG20250301000017")

    numbers = [event["resource"]["out_trade_no"] for event in sandbox.receiver.events]
    assert sorted(numbers) == ["REG20250301000014", "REG20250301000014", "REG20250301000017"]
    duplicated = [e["id"] for e in sandbox.receiver.events if e["resource"]["out_trade_no"] == "REG20250301000014"]
    assert duplicated[0] == duplicated[1], "a duplicate carries the same event id"

    await sandbox.advance(120)
    assert [e["resource"]["out_trade_no"] for e in sandbox.receiver.events][-1] == "REG20250301000016"
    summaries = {s["outTradeNo"]: s for s in await sandbox.notifications()}
    assert summaries["REG20250301000015"]["dispatcherOutcome"] == "dropped"
    assert summaries["REG20250301000015"]["attempts"] == []
    assert summaries["REG20250301000016"]["delivered"] is True


async def test_global_notification_faults_come_from_the_framework_plan(sandbox: PaySandbox) -> None:
    client = sandbox.listening(sandbox.client())
    await sandbox.framework_faults({"callbacks": {"dropRate": 1.0}})
    await sandbox.paid_order(client, "REG20250301000018")
    assert sandbox.receiver.received == []
    (summary,) = await sandbox.notifications()
    assert summary["dispatcherOutcome"] == "dropped"


async def test_paying_twice_or_a_closed_order_is_refused(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    prepay_id = await sandbox.prepay(client, "REG20250301000019")
    await sandbox.pay(prepay_id)
    assert (await sandbox.pay(prepay_id, expect=409))["code"] == "ORDERPAID"
    other = await sandbox.prepay(client, "REG20250301000020")
    await client.close("REG20250301000020")
    assert (await sandbox.pay(other, expect=409))["code"] == "ORDER_CLOSED"


# --- query and close -----------------------------------------------------------------------------------------------


async def test_an_unknown_order_is_rejected_as_order_not_exist(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    with pytest.raises(WechatPayRejectedError) as caught:
        await client.query_by_out_trade_no("NOSUCHORDER0001")
    assert (caught.value.vendor_code, caught.value.http_status) == ("ORDER_NOT_EXIST", 404)
    assert caught.value.code == "wechatpay.rejected"
    assert caught.value.message == "订单不存在"


async def test_close_answers_204_and_a_paid_order_cannot_be_closed(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    await sandbox.prepay(client, "REG20250301000021")
    await client.close("REG20250301000021")
    assert (await client.query_by_out_trade_no("REG20250301000021")).trade_state == "CLOSED"
    await client.close("REG20250301000021")  # closing again is fine
    with pytest.raises(WechatPayRejectedError) as reopened:
        await sandbox.prepay(client, "REG20250301000021")
    assert reopened.value.vendor_code == "ORDER_CLOSED"

    (close_request, *_) = await sandbox.vendor_requests("/v3/pay/transactions/out-trade-no/REG20250301000021/close")
    assert close_request["status"] == 204

    await sandbox.paid_order(client, "REG20250301000022")
    with pytest.raises(WechatPayRejectedError) as caught:
        await client.close("REG20250301000022")
    assert caught.value.vendor_code == "ORDERPAID"


# --- refunds -------------------------------------------------------------------------------------------------------


async def test_refunds_process_then_succeed_are_idempotent_and_never_exceed_the_payment(sandbox: PaySandbox) -> None:
    client = sandbox.listening(sandbox.client())
    await sandbox.paid_order(client, "REG20250301000030", total_fen=10000)
    sandbox.receiver.events.clear()

    first = await client.refund(
        "REG20250301000030", "RF20250301000030A", 3000, 10000, "医生停诊", notify_url=sandbox.receiver.refund_url
    )
    assert (first.status, first.refund_fen, first.total_fen) == ("PROCESSING", 3000, 10000)
    assert first.success_time is None
    again = await client.refund("REG20250301000030", "RF20250301000030A", 3000, 10000, "医生停诊")
    assert again.refund_id == first.refund_id, "the same out_refund_no refunds once"
    assert (await client.query_refund("RF20250301000030A")).status == "PROCESSING"
    assert (await client.query_by_out_trade_no("REG20250301000030")).trade_state == "REFUND"

    await sandbox.advance(60)
    settled = await client.query_refund("RF20250301000030A")
    assert settled.status == "SUCCESS"
    assert settled.success_time == START + timedelta(seconds=60)
    (event,) = sandbox.receiver.events
    assert event["event_type"] == "REFUND.SUCCESS"
    notified = parse_refund(event["resource"])
    assert (notified.out_refund_no, notified.status, notified.refund_fen) == ("RF20250301000030A", "SUCCESS", 3000)

    second = await client.refund("REG20250301000030", "RF20250301000030B", 7000, 10000)
    assert second.refund_id != first.refund_id
    with pytest.raises(WechatPayRejectedError) as caught:
        await client.refund("REG20250301000030", "RF20250301000030C", 1, 10000)
    assert (caught.value.vendor_code, caught.value.http_status) == ("INVALID_REQUEST", 400)
    with pytest.raises(WechatPayRejectedError) as unknown:
        await client.query_refund("RF20250301009999")
    assert unknown.value.vendor_code == "RESOURCE_NOT_EXISTS"


async def test_refunds_can_settle_at_once(sandbox: PaySandbox) -> None:
    sandbox.simulator.refund_processing = timedelta(0)
    client = sandbox.client()
    await sandbox.paid_order(client, "REG20250301000031")
    refund = await client.refund("REG20250301000031", "RF20250301000031", 2500, 2500)
    assert refund.status == "SUCCESS"


async def test_a_refund_of_an_unpaid_order_is_rejected(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    await sandbox.prepay(client, "REG20250301000032")
    with pytest.raises(WechatPayRejectedError) as caught:
        await client.refund("REG20250301000032", "RF20250301000032", 100, 2500)
    assert caught.value.vendor_code == "INVALID_REQUEST"


async def test_failing_refunds_turn_abnormal_and_notify_so(sandbox: PaySandbox) -> None:
    client = sandbox.listening(sandbox.client())
    await sandbox.vendor_faults(refundAbnormal=True)
    await sandbox.paid_order(client, "REG20250301000033")
    sandbox.receiver.events.clear()
    await client.refund("REG20250301000033", "RF20250301000033", 2500, 2500, notify_url=sandbox.receiver.refund_url)
    await sandbox.advance(60)
    assert (await client.query_refund("RF20250301000033")).status == "ABNORMAL"
    (event,) = sandbox.receiver.events
    assert event["event_type"] == "REFUND.ABNORMAL"
    assert event["resource"]["refund_status"] == "ABNORMAL"


async def test_a_server_error_is_unavailable_and_retryable_and_a_business_error_is_rejected(
    sandbox: PaySandbox,
) -> None:
    client = sandbox.client()
    await sandbox.paid_order(client, "REG20250301000034")
    await sandbox.vendor_faults(
        fail=[{"method": "POST", "pathPrefix": "/v3/refund/", "status": 500, "code": "SYSTEM_ERROR", "times": 1}]
    )
    with pytest.raises(WechatPayUnavailableError) as caught:
        await client.refund("REG20250301000034", "RF20250301000034", 100, 2500)
    assert (caught.value.code, caught.value.vendor_code, caught.value.http_status) == (
        "wechatpay.unavailable",
        "SYSTEM_ERROR",
        500,
    )
    assert caught.value.retryable
    assert is_transient(caught.value)
    assert (await client.refund("REG20250301000034", "RF20250301000034", 100, 2500)).refund_fen == 100

    await sandbox.vendor_faults(
        fail=[{"pathPrefix": "/v3/refund/", "status": 403, "code": "NOT_ENOUGH", "message": "余额不足"}]
    )
    with pytest.raises(WechatPayRejectedError) as refused:
        await client.refund("REG20250301000034", "RF20250301000035", 100, 2500)
    assert refused.value.vendor_code == "NOT_ENOUGH"
    assert refused.value.vendor_message == "余额不足"


async def test_throttling_is_unavailable_with_a_retry_after(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    await sandbox.vendor_faults(fail=[{"status": 429, "code": "FREQUENCY_LIMITED", "message": "频率超限"}])
    with pytest.raises(WechatPayUnavailableError) as caught:
        await client.query_by_out_trade_no("REG20250301000036")
    assert caught.value.vendor_code == "FREQUENCY_LIMITED"
    assert caught.value.retry_after == 1
    assert caught.value.extra["failure"] == "throttled"


async def test_an_unsigned_503_from_the_framework_is_unavailable(sandbox: PaySandbox) -> None:
    sandbox.simulator.merchants[MCHID] = default_merchant("public_key")
    client = sandbox.client(mode="public_key")
    await sandbox.framework_faults({"inbound": {"errorRate": 1.0, "errorStatus": 503, "pathPrefix": "/v3/pay/"}})
    with pytest.raises(WechatPayUnavailableError) as caught:
        await client.query_by_out_trade_no("REG20250301000037")
    assert caught.value.http_status == 503


async def test_an_unreachable_gateway_is_unavailable(sandbox: PaySandbox) -> None:
    client = sandbox.client(mode="public_key", base_url="http://127.0.0.1:9/sandbox/wechatpay", timeout_seconds=1.0)
    with pytest.raises(WechatPayUnavailableError) as caught:
        await client.query_by_out_trade_no("REG20250301000038")
    assert caught.value.extra["failure"] in ("transport", "timeout")


# --- bills -----------------------------------------------------------------------------------------------------------


async def test_trade_bill_downloads_with_its_sha1_plain_and_gzipped(sandbox: PaySandbox) -> None:
    sandbox.simulator.refund_processing = timedelta(0)
    client = sandbox.client()
    await sandbox.paid_order(client, "REG20250301000040", total_fen=2500)
    await sandbox.paid_order(client, "REG20250301000041", total_fen=1)
    await client.refund("REG20250301000041", "RF20250301000041", 1, 1)

    with pytest.raises(WechatPayRejectedError) as early:
        await client.trade_bill(date(2025, 3, 1))
    assert early.value.vendor_code == "NO_STATEMENT_EXIST"

    await sandbox.advance(18 * 3600)  # 2025-03-02 10:00 Beijing time
    url, sha1 = await client.trade_bill(date(2025, 3, 1))
    assert url.startswith(f"{sandbox.base_url}/v3/billdownload/file?token=")
    csv = await client.download_bill(url, sha1)
    assert hashlib.sha1(csv, usedforsecurity=False).hexdigest() == sha1
    text = csv.decode("utf-8")
    assert text.startswith("交易时间,公众账号ID,商户号")
    assert "`REG20250301000040" in text
    assert "`25.00" in text
    assert "`RF20250301000041" in text
    assert text.splitlines()[-2].startswith("总交易单数")

    gz_url, gz_sha1 = await client.trade_bill(date(2025, 3, 1), gzipped=True)
    assert gz_sha1 == sha1, "the hash is over the gunzipped CSV"
    assert await client.download_bill(gz_url, gz_sha1) == csv
    raw = await sandbox.http.get(gz_url)
    assert raw.status_code == 401, "the download needs a signed request"

    success_url, success_sha1 = await client.trade_bill(date(2025, 3, 1), bill_type="SUCCESS")
    assert "RF20250301000041" not in (await client.download_bill(success_url, success_sha1)).decode()


async def test_a_tampered_bill_is_rejected(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    await sandbox.paid_order(client, "REG20250301000042")
    await sandbox.advance(18 * 3600)
    await sandbox.vendor_faults(tamperBill=True)
    for gzipped in (False, True):
        url, sha1 = await client.trade_bill(date(2025, 3, 1), gzipped=gzipped)
        with pytest.raises(WechatPayBadResponseError) as caught:
            await client.download_bill(url, sha1)
        assert caught.value.reason == "hash_mismatch"


async def test_a_bill_url_on_another_host_is_refused(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    with pytest.raises(WechatPayBadResponseError):
        await client.download_bill("https://example.com/v3/billdownload/file?token=x", "0" * 40)


async def test_the_bill_download_link_expires(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    await sandbox.paid_order(client, "REG20250301000043")
    await sandbox.advance(18 * 3600)
    url, sha1 = await client.trade_bill(date(2025, 3, 1))
    await sandbox.advance(301)
    with pytest.raises(WechatPayRejectedError):
        await client.download_bill(url, sha1)


# --- key modes and answer verification -------------------------------------------------------------------------------


async def test_certificate_mode_downloads_caches_and_follows_a_rotation(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    await sandbox.prepay(client, "REG20250301000050")
    (certificate,) = client.platform.platform_certificates
    assert certificate.serial_no == sandbox.simulator.certificate.serial_no
    await client.query_by_out_trade_no("REG20250301000050")
    assert len(await sandbox.vendor_requests("/v3/certificates")) == 1

    rotated = await sandbox.admin.post("/sandbox/wechatpay/test/rotate-certificate")
    new_serial = rotated.json()["certificateSerial"]
    assert new_serial != certificate.serial_no
    with pytest.raises(WechatPayBadResponseError) as too_soon:
        await client.query_by_out_trade_no("REG20250301000050")
    assert too_soon.value.reason == "wechatpay.unknown_serial", "no refresh within a minute of the last one"
    assert len(await sandbox.vendor_requests("/v3/certificates")) == 1
    await sandbox.advance(61)
    transaction = await client.query_by_out_trade_no("REG20250301000050")
    assert transaction.trade_state == "NOTPAY"
    assert len(await sandbox.vendor_requests("/v3/certificates")) == 2, "an unknown serial triggers a refresh"
    assert {c.serial_no for c in client.platform.platform_certificates} == {certificate.serial_no, new_serial}

    sandbox.listening(client)
    await sandbox.paid_order(client, "REG20250301000051")
    (headers, _), *_ = sandbox.receiver.received
    assert headers["wechatpay-serial"] == new_serial
    assert len(sandbox.receiver.events) == 1


async def test_public_key_mode_uses_the_pub_key_id_and_downloads_nothing(sandbox: PaySandbox) -> None:
    sandbox.simulator.merchants[MCHID] = default_merchant("public_key")
    client = sandbox.listening(sandbox.client(mode="public_key"))
    await sandbox.paid_order(client, "REG20250301000052")
    (event,) = sandbox.receiver.events
    assert event["resource"]["out_trade_no"] == "REG20250301000052"
    (headers, _), *_ = sandbox.receiver.received
    assert headers["wechatpay-serial"] == sandbox.simulator.public_key_id
    assert headers["wechatpay-serial"].startswith("PUB_KEY_ID_")
    assert await sandbox.vendor_requests("/v3/certificates") == []

    certificate_client = sandbox.client(mode="certificate")
    with pytest.raises(WechatPayBadResponseError) as caught:
        await certificate_client.query_by_out_trade_no("REG20250301000052")
    assert caught.value.reason == "wechatpay.unknown_serial"


async def test_an_answer_with_a_bad_signature_is_rejected(sandbox: PaySandbox) -> None:
    client = sandbox.client()
    await client.platform_keys()  # the certificates download while answers are still signed correctly
    await sandbox.vendor_faults(badResponseSignature=True)
    with pytest.raises(WechatPayBadResponseError) as caught:
        await client.query_by_out_trade_no("REG20250301000053")
    assert caught.value.code == "wechatpay.bad_response"
    assert caught.value.reason == "wechatpay.bad_signature"


async def test_a_stale_answer_is_rejected(sandbox: PaySandbox) -> None:
    sandbox.simulator.merchants[MCHID] = default_merchant("public_key")
    ahead = ManualClock(START + timedelta(seconds=200))
    client = sandbox.client(mode="public_key", clock=ahead, window_seconds=100)
    with pytest.raises(WechatPayBadResponseError) as caught:
        await client.query_by_out_trade_no("REG20250301000054")
    assert caught.value.reason == "wechatpay.stale"


async def test_a_request_signed_with_a_wrong_key_is_sign_error(sandbox: PaySandbox) -> None:
    client = sandbox.client(key="impostor")
    with pytest.raises(WechatPayMisconfiguredError) as caught:
        await client.query_by_out_trade_no("REG20250301000055")
    assert (caught.value.code, caught.value.vendor_code, caught.value.http_status) == (
        "wechatpay.misconfigured",
        "SIGN_ERROR",
        401,
    )
    sandbox.simulator.merchants[MCHID] = default_merchant("public_key")
    wrong_serial = sandbox.client(mode="public_key", serial="0123456789ABCDEF")
    with pytest.raises(WechatPayMisconfiguredError):
        await wrong_serial.query_by_out_trade_no("REG20250301000055")


async def test_a_request_from_a_skewed_clock_is_sign_error(sandbox: PaySandbox) -> None:
    sandbox.simulator.merchants[MCHID] = default_merchant("public_key")
    late = ManualClock(START - timedelta(seconds=400))
    client = sandbox.client(mode="public_key", clock=late, window_seconds=1000)
    with pytest.raises(WechatPayMisconfiguredError) as caught:
        await client.query_by_out_trade_no("REG20250301000056")
    assert caught.value.vendor_code == "SIGN_ERROR"


async def test_merchants_and_platform_keys_are_configured_over_http(sandbox: PaySandbox) -> None:
    """What the demo does: register a merchant in public-key mode and read the key its client is given."""
    other = "1900000110"
    registered = await sandbox.admin.put(
        f"/sandbox/wechatpay/test/merchants/{other}",
        json={
            "publicKeyPem": public_pem("other-merchant").decode(),
            "serialNo": "0aa1",
            "apiV3Key": "another0wechatpay0apiv3key000002",
            "mode": "public_key",
        },
    )
    assert registered.json() == {"mchid": other, "serialNo": "AA1", "mode": "public_key", "appids": None}
    platform = (await sandbox.admin.get("/sandbox/wechatpay/test/platform")).json()
    assert platform["publicKeyId"].startswith("PUB_KEY_ID_")
    assert platform["certificateSerial"] == sandbox.simulator.certificate.serial_no
    client = WechatPayClient(
        mchid=other,
        merchant_private_key_pem=private_pem("other-merchant"),
        merchant_serial_no="AA1",
        api_v3_key=b"another0wechatpay0apiv3key000002",
        platform=PlatformKeyStore.public_key(platform["publicKeyId"], platform["publicKeyPem"].encode()),
        http=sandbox.http,
        clock=sandbox.clock,
        base_url=sandbox.base_url,
    )
    with pytest.raises(WechatPayRejectedError) as caught:
        await client.query_by_out_trade_no("REG20250301000060")
    assert caught.value.vendor_code == "ORDER_NOT_EXIST", "a signed, verified answer for the new merchant"

    unknown = await sandbox.admin.put("/sandbox/wechatpay/test/merchants/1900000111", json={"mode": "public_key"})
    assert unknown.status_code == 404


# --- the wechatpayv3 SDK as an oracle of both sides ----------------------------------------------------------------


async def test_the_wechatpayv3_sdk_talks_to_the_simulator(sandbox: PaySandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests signed by the SDK verify in the simulator; the simulator's answers and notifications verify in
    the SDK (public-key mode, so nothing is fetched at construction; its gateway pointed at the simulator)."""
    sandbox.simulator.merchants[MCHID] = default_merchant("public_key")
    monkeypatch.setattr(oracle_utils, "time", SimpleNamespace(time=lambda: sandbox.clock.now().timestamp()))
    sdk = WeChatPay(
        wechatpay_type=WeChatPayType.MINIPROG,
        mchid=MCHID,
        private_key=private_pem("merchant").decode(),
        cert_serial_no=MERCHANT_SERIAL,
        appid=MINI_APPID,
        apiv3_key=API_V3_KEY.decode(),
        notify_url=sandbox.receiver.notify_url,
        public_key=sandbox.simulator.public_key_mode_pem.decode(),
        public_key_id=sandbox.simulator.public_key_id,
    )
    sdk._core._gate_way = sandbox.base_url
    code, message = await asyncio.to_thread(
        sdk.pay,
        description="挂号费",
        out_trade_no="SDK20250301000001",
        amount={"total": 100},
        payer={"openid": OPENID},
    )
    assert code == 200, message
    prepay_id = json.loads(message)["prepay_id"]

    sandbox.receiver.script = [500]  # keep the notification for the SDK to verify
    await sandbox.pay(prepay_id)
    headers, body = sandbox.receiver.received[0]
    sdk_headers = {name.title(): value for name, value in headers.items()}
    event = sdk.callback(sdk_headers, body)
    assert event is not None
    assert event["resource"]["out_trade_no"] == "SDK20250301000001"

    code, message = await asyncio.to_thread(sdk.query, out_trade_no="SDK20250301000001")
    assert code == 200, message
    ours = await sandbox.client(mode="public_key").query_by_out_trade_no("SDK20250301000001")
    assert ours == parse_transaction(json.loads(message))
    code, _ = await asyncio.to_thread(sdk.close, "SDK20250301000002")
    assert code == 204
