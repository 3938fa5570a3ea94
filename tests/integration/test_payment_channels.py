"""Payments end to end over real HTTP (issue: payments): the payment service on the real PostgreSQL, the WeChat Pay
and Alipay adapters talking to their simulators, and the simulators' notifications reaching our callback routes
served by the real edge. The simulators sign with their own keys, encrypt WeChat resources with the APIv3 key and
retry on their real schedules, driven by a shared manual clock.

The chaos test drives many orders with duplicated, reordered, delayed and dropped notifications, channel switches,
unpaid orders that expire and partial refunds, and proves: every paid order is paid exactly once (a second payment
through another channel is refunded in full), every refund is exactly the amount asked, the channels agree with
our ledger, and nothing forged is accepted.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, cast

import httpx
import pytest
import sqlalchemy as sa

from bootstrap import sandbox_accounts as demo
from domain.kernel.clock import SHANGHAI, to_shanghai
from domain.kernel.errors import DomainError
from domain.kernel.money import Amount
from domain.payment.machine import AttemptState, OrderState, PaymentOrder, RefundState
from domain.payment.ports import ChannelRefundState, ChannelTradeState, Payer
from domain.payment.reconciliation_service import ReconciliationService, ReconciliationUnitOfWork
from domain.payment.use_cases import PaymentDeps, PaymentPolicy, PaymentService
from integrations.alipay.client import AlipayClient
from integrations.alipay.trade import AlipayTradeClient
from integrations.payments import AlipayChannel, WechatPayChannel
from integrations.wechat.pay import PlatformKeyStore, WechatPayClient, sign_message
from persistence.db import ConnectionSource
from persistence.uow import SqlUnitOfWork, unit_of_work_factory
from sandbox.alipay import AlipaySimulator
from sandbox.framework import SandboxContext, build_sandbox_app, run_standalone
from sandbox.wechat import DEMO_APPID
from sandbox.wechatpay import SimulatedMerchant, WechatPaySimulator
from tests.support.app import FixedClock, build_test_apps
from tests.support.clock import ManualClock

START = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
"""09:00 Beijing time: the whole run stays within one Beijing day."""
OPENID = "oDemoResident000000000000001"
BUYER = "2088000000000042"
REJECTED_SQL = "SELECT count(*) FROM audit_log WHERE action = 'payment.notification_rejected'"


@dataclass
class Stack:
    service: PaymentService
    wechat: WechatPayChannel
    alipay: AlipayChannel
    clock: ManualClock
    ctx: SandboxContext
    admin: httpx.AsyncClient
    edge_url: str
    source: ConnectionSource

    async def order(self, amount_fen: int, *, minutes: int = 15) -> PaymentOrder:
        async with SqlUnitOfWork(self.source) as uow:
            order = await self.service.create_order(
                uow,
                payable_type="test",
                payable_id=f"t-{random.getrandbits(48):x}",
                account_id="acct-1",
                description="诊间缴费",
                amount=Amount(amount_fen),
                expires_at=self.clock.now() + timedelta(minutes=minutes),
            )
            await uow.commit()
        return order

    async def get(self, order_id: str) -> PaymentOrder:
        async with SqlUnitOfWork(self.source) as uow:
            order = await uow.payments.get(order_id)
        assert order is not None
        return order

    async def pay_wechat(self, order: PaymentOrder) -> str:
        """Prepay in the mini-program and the resident pays; the out_trade_no."""
        params = await self.service.pay("acct-1", order.id, "wechat", Payer(app_id=DEMO_APPID, user_id=OPENID))
        assert params["kind"] == "requestPayment"
        prepay_id = params["params"]["package"].removeprefix("prepay_id=")
        paid = await self.admin.post("/sandbox/wechatpay/test/pay", json={"prepayId": prepay_id})
        assert paid.status_code == 200, paid.text
        return str(paid.json()["outTradeNo"])

    async def pay_alipay(self, order: PaymentOrder) -> str:
        params = await self.service.pay("acct-1", order.id, "alipay", Payer(app_id=demo.ALIPAY_APP_ID, user_id=BUYER))
        assert params["kind"] == "tradePay"
        paid = await self.admin.post("/sandbox/alipay/test/trade/pay", json={"tradeNo": params["params"]["tradeNO"]})
        assert paid.status_code == 200, paid.text
        return str(paid.json()["outTradeNo"])

    async def advance(self, seconds: float) -> None:
        await self.ctx.advance(seconds)
        await self.ctx.wait_idle()

    async def faults(self, simulator: str, plan: dict[str, Any]) -> None:
        response = await self.admin.put(f"/sandbox/admin/{simulator}/faults", json=plan)
        assert response.status_code == 200, response.text

    async def count(self, sql: str, **params: Any) -> int:
        async with SqlUnitOfWork(self.source) as uow:
            return int((await uow.connection.execute(sa.text(sql), params)).scalar_one())


@pytest.fixture
async def stack(committed_source: ConnectionSource) -> AsyncIterator[Stack]:
    clock = ManualClock(START)
    ctx = SandboxContext(clock)
    wechatpay = WechatPaySimulator(
        merchants=[
            SimulatedMerchant(
                mchid=demo.WECHATPAY_MCHID,
                public_key_pem=demo.public_pem(demo.wechatpay_merchant_private_key()),
                serial_no=demo.WECHATPAY_MERCHANT_SERIAL,
                api_v3_key=demo.WECHATPAY_API_V3_KEY.encode(),
            )
        ],
        platform_private_key_pem=demo.wechatpay_platform_private_key(),
        refund_processing_seconds=60,
    )
    alipay = AlipaySimulator(
        apps={demo.ALIPAY_APP_ID: demo.public_pem(demo.alipay_app_private_key())},
        alipay_private_key_pem=demo.alipay_platform_private_key(),
        seller_id=demo.ALIPAY_SELLER_ID,
    )
    public, _, deps = build_test_apps(committed_source, clock=cast(FixedClock, clock))
    async with (
        run_standalone(build_sandbox_app([wechatpay, alipay], ctx, pump_interval=None)) as sandbox_url,
        run_standalone(public) as edge_url,
        httpx.AsyncClient(base_url=sandbox_url, trust_env=False, timeout=30) as admin,
        httpx.AsyncClient(trust_env=False, timeout=30) as http,
    ):
        wechatpay.relay_base_url = f"{sandbox_url}/sandbox/wechatpay"
        wechat = WechatPayChannel(
            WechatPayClient(
                mchid=demo.WECHATPAY_MCHID,
                merchant_private_key_pem=demo.wechatpay_merchant_private_key(),
                merchant_serial_no=demo.WECHATPAY_MERCHANT_SERIAL,
                api_v3_key=demo.WECHATPAY_API_V3_KEY.encode(),
                platform=PlatformKeyStore.certificates(),
                http=http,
                clock=clock,
                base_url=f"{sandbox_url}/sandbox/wechatpay",
            ),
            clock,
            app_appid=demo.WECHATPAY_APP_APPID,
            app_ids=frozenset({DEMO_APPID, demo.WECHATPAY_APP_APPID}),
        )
        alipay_client = AlipayClient(
            app_id=demo.ALIPAY_APP_ID,
            app_private_key_pem=demo.alipay_app_private_key(),
            alipay_public_key_pem=demo.public_pem(demo.alipay_platform_private_key()),
            gateway_url=f"{sandbox_url}/sandbox/alipay/gateway.do",
            http=http,
            clock=clock,
        )
        ali = AlipayChannel(
            AlipayTradeClient(
                alipay_client,
                alipay_public_key_pem=alipay_client.alipay_public_key_pem,
                http=http,
                seller_id=demo.ALIPAY_SELLER_ID,
            ),
            clock,
        )
        service = PaymentService(
            PaymentDeps(
                uow_factory=unit_of_work_factory(committed_source),
                clock=clock,
                channels={"wechat": wechat, "alipay": ali},
                notice_readers={"wechat": wechat, "alipay": ali},
                notify_urls={"wechat": f"{edge_url}/callbacks/wechat-pay", "alipay": f"{edge_url}/callbacks/alipay"},
                policy=PaymentPolicy(refund_backoff=(30, 60, 120, 300, 600)),
            )
        )
        deps.payments = service
        yield Stack(service, wechat, ali, clock, ctx, admin, edge_url, committed_source)
        await ctx.aclose()


async def test_a_wechat_payment_reaches_our_callback_and_pays_the_order_once(stack: Stack) -> None:
    order = await stack.order(2500)
    out_trade_no = await stack.pay_wechat(order)
    await stack.advance(0)
    paid = await stack.get(order.id)
    assert paid.state is OrderState.PAID
    assert paid.paid_out_trade_no == out_trade_no
    stored = await stack.count("SELECT count(*) FROM payment_events WHERE out_trade_no = :o", o=out_trade_no)
    assert stored == 1
    body = await stack.count(
        "SELECT count(*) FROM payment_events WHERE out_trade_no = :o AND body LIKE '%openid%'", o=out_trade_no
    )
    assert body == 0, "the payer's openid is not stored with the event"


async def test_an_alipay_payment_reaches_our_callback_and_answers_success(stack: Stack) -> None:
    order = await stack.order(990)
    out_trade_no = await stack.pay_alipay(order)
    await stack.advance(0)
    paid = await stack.get(order.id)
    assert paid.state is OrderState.PAID
    assert paid.paid_out_trade_no == out_trade_no
    records = (await stack.admin.get("/sandbox/admin/alipay/requests", params={"stream": "callbacks"})).json()
    outcomes = [e.get("outcome") for e in records["entries"]]
    assert "delivered" in outcomes


async def test_forged_stale_and_probe_notifications_change_nothing_and_are_audited(stack: Stack) -> None:
    order = await stack.order(1200)
    await stack.service.pay("acct-1", order.id, "wechat", Payer(app_id=DEMO_APPID, user_id=OPENID))
    attempt = (await stack.get(order.id)).attempts[0].out_trade_no
    audited_before = await stack.count(REJECTED_SQL)
    async with httpx.AsyncClient(trust_env=False) as client:
        # A body signed by a key that is not WeChat Pay's.
        body = json.dumps({"id": "EV-forged", "event_type": "TRANSACTION.SUCCESS", "resource": {}}).encode()
        timestamp = str(int(stack.clock.now().timestamp()))
        forged_key = demo.alipay_app_private_key()
        forged = await client.post(
            stack.edge_url + "/callbacks/wechat-pay",
            content=body,
            headers={
                "Wechatpay-Timestamp": timestamp,
                "Wechatpay-Nonce": "n0nce",
                "Wechatpay-Serial": "ABCDEF",
                "Wechatpay-Signature": sign_message(forged_key, f"{timestamp}\nn0nce\n".encode() + body + b"\n"),
                "Content-Type": "application/json",
            },
        )
        probe = await client.post(
            stack.edge_url + "/callbacks/wechat-pay",
            content=body,
            headers={
                "Wechatpay-Timestamp": timestamp,
                "Wechatpay-Nonce": "n0nce",
                "Wechatpay-Serial": "ABCDEF",
                "Wechatpay-Signature": "WECHATPAY/SIGNTEST/" + "A" * 40,
            },
        )
        stale_ts = str(int((stack.clock.now() - timedelta(minutes=6)).timestamp()))
        stale = await client.post(
            stack.edge_url + "/callbacks/wechat-pay",
            content=body,
            headers={
                "Wechatpay-Timestamp": stale_ts,
                "Wechatpay-Nonce": "n",
                "Wechatpay-Serial": "A",
                "Wechatpay-Signature": "x",
            },
        )
        alipay_forged = await client.post(
            stack.edge_url + "/callbacks/alipay",
            content=f"notify_id=1&out_trade_no={attempt}&trade_status=TRADE_SUCCESS&total_amount=12.00&sign=AAAA&sign_type=RSA2".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    for response in (forged, probe, stale):
        assert response.status_code == 400
        assert response.json() == {"code": "FAIL", "message": "失败"}
    assert alipay_forged.status_code == 400
    assert alipay_forged.text == "fail"
    assert (await stack.get(order.id)).state is OrderState.PAYING
    assert await stack.count("SELECT count(*) FROM payment_events") == 0
    audited = await stack.count(REJECTED_SQL) - audited_before
    assert audited == 4


async def test_chaos_every_order_paid_once_refunds_exact(stack: Stack) -> None:
    await chaos(stack, 200)


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_chaos_at_full_size(stack: Stack) -> None:
    await chaos(stack, 1000)


async def chaos(stack: Stack, count: int) -> None:
    """Duplicated, reordered, delayed and dropped notifications on both channels; some residents switch channel
    after paying, some never pay; refunds in parts. At the end our ledger and both channels agree."""
    rng = random.Random(20261206)
    for simulator in ("wechatpay", "alipay"):
        await stack.faults(
            simulator, {"callbacks": {"dropRate": 0.15, "duplicateRate": 0.3, "reorder": True, "delaySeconds": 5}}
        )
    orders: list[tuple[PaymentOrder, str]] = []
    switched: list[str] = []
    unpaid: list[str] = []
    for i in range(count):
        order = await stack.order(rng.randint(1, 50_000))
        roll = rng.random()
        if roll < 0.08:
            unpaid.append(order.id)
            chosen = rng.choice(["wechat", "alipay"])
            await stack.service.pay("acct-1", order.id, chosen, _payer(rng, chosen))
            continue
        channel = "wechat" if i % 2 else "alipay"
        out_trade_no = await (stack.pay_wechat(order) if channel == "wechat" else stack.pay_alipay(order))
        orders.append((order, channel))
        if roll < 0.14:
            # Paid, no notification yet, and the resident tries the other channel: refused, nothing charged twice.
            other = "alipay" if channel == "wechat" else "wechat"
            with pytest.raises(DomainError) as refused:
                await stack.service.pay("acct-1", order.id, other, _payer(rng, other))
            assert refused.value.code == "payment.already_paid"
            switched.append(out_trade_no)
        if i % 25 == 0:
            await stack.advance(1)
    # Notifications (delayed 5 s), their retries, and the active query for the dropped ones.
    for _ in range(8):
        await stack.advance(20)
    await stack.service.query_pending(limit=10_000)
    await stack.advance(15 * 60)
    await stack.service.expire_due(limit=10_000)
    await stack.service.query_pending(limit=10_000)

    requested: dict[str, int] = {}
    for order, _ in orders:
        current = await stack.get(order.id)
        assert current.state is OrderState.PAID, (order.id, current.state)
        if rng.random() < 0.4:
            first = rng.randint(1, current.self_pay_fen)
            await stack.service.request_refund(order.id, amount_fen=first, reason="部分退款", key="r1")
            requested[order.id] = first
            if first < current.self_pay_fen and rng.random() < 0.5:
                await stack.service.request_refund(order.id, amount_fen=None, reason="余额退款", key="r2")
                requested[order.id] = current.self_pay_fen
    # WeChat refunds settle after 60 s and notify; retries and queries finish the rest.
    for _ in range(6):
        await stack.advance(60)
        await stack.service.submit_due_refunds(limit=10_000)

    paid_total = 0
    for order, channel in orders:
        current = await stack.get(order.id)
        succeeded = [a for a in current.attempts if a.state is AttemptState.SUCCEEDED]
        assert len(succeeded) == 1, (order.id, current.attempts)
        assert current.paid_fen == current.self_pay_fen
        asked = requested.get(order.id, 0)
        assert current.refunded_fen == asked, (order.id, current.refunded_fen, asked)
        assert all(r.state is RefundState.SUCCEEDED for r in current.refunds), current.refunds
        expected = (
            OrderState.PAID
            if asked == 0
            else OrderState.REFUNDED
            if asked == current.self_pay_fen
            else OrderState.PARTIALLY_REFUNDED
        )
        assert current.state is expected
        adapter = stack.wechat if channel == "wechat" else stack.alipay
        for attempt in current.attempts:
            at_channel = await (stack.wechat if attempt.channel == "wechat" else stack.alipay).query(
                attempt.out_trade_no
            )
            if attempt.state is AttemptState.SUCCEEDED:
                assert at_channel.state is ChannelTradeState.PAID
                assert at_channel.amount_fen == current.self_pay_fen
            elif attempt.state is AttemptState.DUPLICATE:
                # Charged twice: refunded in full.
                dup_refunds = current.refunds_of(attempt.out_trade_no)
                assert sum(r.amount_fen for r in dup_refunds) == current.self_pay_fen
            else:
                assert at_channel.state is not ChannelTradeState.PAID, attempt
        for refund in current.refunds_of(current.paid_out_trade_no or ""):
            answer = await adapter.query_refund(refund.out_trade_no, refund.out_refund_no)
            assert answer.state is ChannelRefundState.SUCCEEDED
        paid_total += 1
        topics = await stack.count(
            "SELECT count(*) FROM outbox WHERE topic = 'payment.paid' AND payload::text LIKE :p", p=f"%{order.id}%"
        )
        assert topics == 1, order.id
    for order_id in unpaid:
        current = await stack.get(order_id)
        assert current.state is OrderState.CLOSED
        for attempt in current.attempts:
            at_channel = await (stack.wechat if attempt.channel == "wechat" else stack.alipay).query(
                attempt.out_trade_no
            )
            assert at_channel.state is not ChannelTradeState.PAID
    assert paid_total == len(orders)
    # The faults really happened: copies were delivered, some payments had no notification at all (found by the
    # active query), residents switched channel, and refunds were made.
    copies = 0
    for simulator in ("wechatpay", "alipay"):
        entries = (await stack.admin.get(f"/sandbox/admin/{simulator}/requests", params={"stream": "callbacks"})).json()
        copies += sum(1 for e in entries["entries"] if e.get("copy", 0) > 0 and e.get("outcome") == "delivered")
    assert copies > 0
    without_event = await stack.count(
        "SELECT count(*) FROM payment_orders o WHERE o.paid_out_trade_no IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM payment_events e WHERE e.out_trade_no = o.paid_out_trade_no)"
    )
    assert without_event > 0
    assert switched
    assert requested

    # The next morning both channels' bills agree with the ledger line by line: nothing to repair, nothing left.
    day = to_shanghai(START).date()
    next_morning = datetime.combine(day + timedelta(days=1), time(10, 30), SHANGHAI)
    await stack.advance((next_morning - stack.clock.now()).total_seconds())
    reconciliation = ReconciliationService(
        stack.service, cast(Callable[[], ReconciliationUnitOfWork], unit_of_work_factory(stack.source))
    )
    for channel in ("wechat", "alipay"):
        run = await reconciliation.reconcile(day, channel)
        assert run.differences == (), (channel, run.differences)
        assert run.repairs == (), (channel, run.repairs)
        assert run.bill.payments == run.ledger.payments > 0
        assert run.bill.refund_fen == run.ledger.refund_fen


def _payer(rng: random.Random, channel: str | None = None) -> Payer:
    if channel == "alipay":
        return Payer(app_id=demo.ALIPAY_APP_ID, user_id=BUYER)
    return Payer(app_id=DEMO_APPID, user_id=OPENID)


async def test_an_order_without_a_notification_is_queried_with_backoff(stack: Stack) -> None:
    """Issue item 6: orders without a callback are queried with backoff: at 1, 2, 4 and 8 minutes of paying."""
    order = await stack.order(800)
    await stack.service.pay("acct-1", order.id, "wechat", Payer(app_id=DEMO_APPID, user_id=OPENID))

    async def queries() -> int:
        entries = (await stack.admin.get("/sandbox/admin/wechatpay/requests", params={"stream": "requests"})).json()
        return sum(1 for e in entries["entries"] if "/v3/pay/transactions/out-trade-no/" in e["path"])

    seen: list[int] = []
    for _ in range(16):  # eight minutes of sweeps every 30 s
        await stack.advance(30)
        await stack.service.query_pending()
        seen.append(await queries())
    # Four queries in eight minutes of sweeps, not sixteen.
    assert [seen.index(n) for n in (1, 2, 3, 4)] == [1, 3, 7, 15], seen
    assert (await stack.get(order.id)).state is OrderState.PAYING
