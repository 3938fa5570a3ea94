"""The payment service on the real PostgreSQL (issue: payments): paying, notifications stored once and applied
at most once, a channel switch that cannot charge twice, expiry that asks the channel first, refunds retried
with the same refund number until final, and the operators' queue. The channels are a model of the port (the
vendor gateways have contract tests against their simulators)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from domain.kernel.clock import Clock, to_shanghai
from domain.kernel.errors import DomainError, UnavailableError
from domain.kernel.money import Amount
from domain.payment.machine import AttemptState, OrderState, PaymentOrder, RefundState
from domain.payment.ports import (
    ChannelBillLine,
    ChannelEvent,
    ChannelRefund,
    ChannelRefundState,
    ChannelTrade,
    ChannelTradeState,
    Payer,
)
from domain.payment.use_cases import PaymentDeps, PaymentPolicy, PaymentService
from persistence.db import ConnectionSource
from persistence.uow import SqlUnitOfWork, unit_of_work_factory
from tests.support.app import FixedClock

PRICE = 2500
PAYER = Payer(app_id="wx-app", user_id="o-payer")


@dataclass
class ModelChannel:
    """A channel as the port sees it: orders open, paid or closed; refunds idempotent by refund number."""

    name: str
    trades: dict[str, str] = field(default_factory=dict)
    amounts: dict[str, int] = field(default_factory=dict)
    refunds: dict[str, tuple[str, int]] = field(default_factory=dict)
    refund_answers: list[ChannelRefundState] = field(default_factory=list)
    refund_calls: list[str] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)
    clock: Clock | None = None
    """Times payments and refunds for the daily bill (wall-clock time without one)."""
    paid_at: dict[str, datetime] = field(default_factory=dict)
    refunded_at: dict[str, datetime] = field(default_factory=dict)
    bill_ready: bool = True

    def _now(self) -> datetime:
        return self.clock.now() if self.clock is not None else datetime.now(UTC)

    async def prepay(
        self, order: PaymentOrder, out_trade_no: str, payer: Payer, *, notify_url: str
    ) -> Mapping[str, Any]:
        self.trades[out_trade_no] = "open"
        self.amounts[out_trade_no] = order.self_pay_fen
        return {"package": f"prepay_id={out_trade_no}"}

    def resident_pays(self, out_trade_no: str) -> ChannelTrade:
        assert self.trades[out_trade_no] == "open"
        self.trades[out_trade_no] = "paid"
        self.paid_at[out_trade_no] = self._now()
        return self._trade(out_trade_no)

    def _trade(self, out_trade_no: str) -> ChannelTrade:
        state = self.trades.get(out_trade_no)
        if state is None:
            return ChannelTrade(out_trade_no, ChannelTradeState.NOT_FOUND)
        if state == "paid":
            return ChannelTrade(
                out_trade_no,
                ChannelTradeState.PAID,
                "X" + out_trade_no,
                self.amounts[out_trade_no],
                self.paid_at.get(out_trade_no) or datetime.now(UTC),
            )
        return ChannelTrade(out_trade_no, ChannelTradeState(state))

    async def query(self, out_trade_no: str) -> ChannelTrade:
        return self._trade(out_trade_no)

    async def close(self, out_trade_no: str) -> ChannelTrade:
        self.closes.append(out_trade_no)
        if self.trades.get(out_trade_no) == "open":
            self.trades[out_trade_no] = "closed"
        return self._trade(out_trade_no)

    async def refund(
        self, out_trade_no: str, out_refund_no: str, *, amount_fen: int, total_fen: int, reason: str
    ) -> ChannelRefund:
        self.refund_calls.append(out_refund_no)
        answer = self.refund_answers.pop(0) if self.refund_answers else ChannelRefundState.SUCCEEDED
        if answer is ChannelRefundState.SUCCEEDED and out_refund_no not in self.refunds:
            paid_back = sum(a for t, a in self.refunds.values() if t == out_trade_no)
            assert paid_back + amount_fen <= self.amounts[out_trade_no], "refunded more than was paid"
            self.refunds[out_refund_no] = (out_trade_no, amount_fen)
            self.refunded_at[out_refund_no] = self._now()
        return ChannelRefund(out_refund_no, answer, "NOT_ENOUGH" if answer is ChannelRefundState.FAILED else None)

    async def query_refund(self, out_trade_no: str, out_refund_no: str) -> ChannelRefund:
        state = ChannelRefundState.SUCCEEDED if out_refund_no in self.refunds else ChannelRefundState.PROCESSING
        return ChannelRefund(out_refund_no, state)

    async def bill(self, day: date) -> Sequence[ChannelBillLine]:
        """The day's trade bill (Beijing days): paid trades by their payment time, refunds by their success time."""
        if not self.bill_ready:
            raise UnavailableError("the bill is not ready yet", code="payment.bill_not_ready")
        lines = [
            ChannelBillLine("payment", t, "X" + t, self.amounts[t], at=at)
            for t, at in self.paid_at.items()
            if self.trades.get(t) == "paid" and to_shanghai(at).date() == day
        ]
        lines += [
            ChannelBillLine("refund", t, "X" + t, amount, out_refund_no=r, at=self.refunded_at[r])
            for r, (t, amount) in self.refunds.items()
            if r in self.refunded_at and to_shanghai(self.refunded_at[r]).date() == day
        ]
        return lines


@dataclass
class Harness:
    service: PaymentService
    wechat: ModelChannel
    alipay: ModelChannel
    clock: FixedClock
    source: ConnectionSource

    async def order(self, account_id: str = "acct-1") -> PaymentOrder:
        async with SqlUnitOfWork(self.source) as uow:
            order = await self.service.create_order(
                uow,
                payable_type="bill",
                payable_id="bill-" + str(id(object())),
                account_id=account_id,
                description="诊间缴费",
                amount=Amount(PRICE),
                expires_at=self.clock.now() + timedelta(minutes=15),
            )
            await uow.commit()
        return order

    async def get(self, order_id: str) -> PaymentOrder:
        async with SqlUnitOfWork(self.source) as uow:
            order = await uow.payments.get(order_id)
        assert order is not None
        return order

    async def outbox_topics(self, order_id: str) -> list[str]:
        async with SqlUnitOfWork(self.source) as uow:
            rows = await uow.connection.execute(
                sa.text("SELECT topic FROM outbox WHERE payload::text LIKE :p ORDER BY id"), {"p": f"%{order_id}%"}
            )
            return [str(r) for r in rows.scalars()]


@pytest.fixture
def h(committed_source: ConnectionSource) -> Harness:
    clock = FixedClock(datetime(2026, 11, 22, 2, 0, tzinfo=UTC))
    wechat, alipay = ModelChannel("wechat"), ModelChannel("alipay")
    service = PaymentService(
        PaymentDeps(
            uow_factory=unit_of_work_factory(committed_source),
            clock=clock,
            channels={"wechat": wechat, "alipay": alipay},
            policy=PaymentPolicy(refund_backoff=(30, 60)),
        )
    )
    return Harness(service, wechat, alipay, clock, committed_source)


def notification(channel: str, trade: ChannelTrade, key: str) -> ChannelEvent:
    return ChannelEvent(channel, key, trade.out_trade_no, "transaction.success", {"id": key}, datetime.now(UTC))


def last_out_trade_no(channel: ModelChannel) -> str:
    return list(channel.trades)[-1]


async def test_a_duplicated_notification_is_stored_once_and_pays_once(h: Harness) -> None:
    order = await h.order()
    params = await h.service.pay("acct-1", order.id, "wechat", PAYER)
    assert params["package"].startswith("prepay_id=")
    trade = h.wechat.resident_pays(last_out_trade_no(h.wechat))
    assert await h.service.apply_trade("wechat", trade, event=notification("wechat", trade, "EV-1"))
    assert not await h.service.apply_trade("wechat", trade, event=notification("wechat", trade, "EV-1"))
    paid = await h.get(order.id)
    assert paid.state is OrderState.PAID
    assert paid.paid_fen == PRICE
    assert await h.outbox_topics(order.id) == ["payment.paid"]
    async with SqlUnitOfWork(h.source) as uow:
        stored = (await uow.connection.execute(sa.text("SELECT count(*) FROM payment_events"))).scalar_one()
    assert stored == 1


async def test_concurrent_notifications_for_one_order_pay_it_once(h: Harness) -> None:
    order = await h.order()
    await h.service.pay("acct-1", order.id, "wechat", PAYER)
    trade = h.wechat.resident_pays(last_out_trade_no(h.wechat))
    results = await asyncio.gather(
        *(h.service.apply_trade("wechat", trade, event=notification("wechat", trade, f"EV-{i}")) for i in range(5)),
        return_exceptions=True,
    )
    assert not [r for r in results if isinstance(r, Exception)]
    assert await h.outbox_topics(order.id) == ["payment.paid"]


async def test_switching_channel_closes_the_first_and_a_second_payment_is_refunded(h: Harness) -> None:
    order = await h.order()
    await h.service.pay("acct-1", order.id, "wechat", PAYER)
    first = last_out_trade_no(h.wechat)
    h.wechat.resident_pays(first)  # paid in WeChat just before switching; the notification is late
    with pytest.raises(DomainError) as caught:
        await h.service.pay("acct-1", order.id, "alipay", Payer(app_id="ali", user_id="2088000000000001"))
    assert caught.value.code == "payment.already_paid"
    assert h.wechat.closes == [first], "the first attempt was closed at its channel"
    # The close found it paid: that payment pays the order, and no Alipay order was ever created.
    paid = await h.get(order.id)
    assert paid.state is OrderState.PAID
    assert paid.paid_out_trade_no == first
    assert h.alipay.trades == {}

    # Now the other way: both channels really succeed (the close came too late at Alipay).
    order = await h.order()
    await h.service.pay("acct-1", order.id, "wechat", PAYER)
    w = last_out_trade_no(h.wechat)
    trade_w = h.wechat.resident_pays(w)
    await h.service.apply_trade("wechat", trade_w, event=notification("wechat", trade_w, "EV-w"))
    h.alipay.trades["LATE"] = "paid"
    h.alipay.amounts["LATE"] = PRICE
    async with SqlUnitOfWork(h.source) as uow:  # an Alipay attempt that was open when the WeChat payment landed
        current = await uow.payments.get(order.id, lock=True)
        assert current is not None
        from dataclasses import replace

        from domain.payment.machine import Attempt

        await uow.payments.save(
            current,
            replace(current, attempts=(*current.attempts, Attempt("LATE", "alipay")), version=current.version + 1),
            now=h.clock.now(),
        )
        await uow.commit()
    late = await h.alipay.query("LATE")
    await h.service.apply_trade("alipay", late, event=notification("alipay", late, "N-late"))
    final = await h.get(order.id)
    assert final.state is OrderState.PAID
    duplicate = final.attempt("LATE")
    assert duplicate is not None
    assert duplicate.state is AttemptState.DUPLICATE
    (refund,) = final.refunds_of("LATE")
    assert (refund.amount_fen, refund.state) == (PRICE, RefundState.SUCCEEDED)
    assert h.alipay.refunds[refund.out_refund_no] == ("LATE", PRICE)


async def test_expiry_closes_at_the_channel_first_and_a_payment_found_there_wins(h: Harness) -> None:
    unpaid, paid_late = await h.order(), await h.order()
    await h.service.pay("acct-1", unpaid.id, "wechat", PAYER)
    await h.service.pay("acct-1", paid_late.id, "wechat", PAYER)
    h.wechat.resident_pays(last_out_trade_no(h.wechat))  # paid; its notification is lost
    h.clock.advance(16 * 60)
    assert await h.service.expire_due() == 2
    assert (await h.get(unpaid.id)).state is OrderState.CLOSED
    assert (await h.get(paid_late.id)).state is OrderState.PAID
    with pytest.raises(DomainError) as caught:
        await h.service.pay("acct-1", unpaid.id, "wechat", PAYER)
    assert caught.value.code in ("payment.closed", "payment.expired")


async def test_a_missed_notification_is_found_by_the_active_query(h: Harness) -> None:
    order = await h.order()
    await h.service.pay("acct-1", order.id, "alipay", Payer(app_id="ali", user_id="2088000000000001"))
    h.alipay.resident_pays(last_out_trade_no(h.alipay))
    assert await h.service.query_pending() == 0, "not yet: the notification may still come"
    h.clock.advance(120)
    assert await h.service.query_pending() == 1
    assert (await h.get(order.id)).state is OrderState.PAID


async def test_refunds_are_retried_with_the_same_number_until_final_then_queued_for_operators(h: Harness) -> None:
    order = await h.order()
    await h.service.pay("acct-1", order.id, "wechat", PAYER)
    trade = h.wechat.resident_pays(last_out_trade_no(h.wechat))
    await h.service.apply_trade("wechat", trade)

    h.wechat.refund_answers = [ChannelRefundState.PROCESSING, ChannelRefundState.SUCCEEDED]
    partial = await h.service.request_refund(order.id, amount_fen=1000, reason="部分退费", key="k1")
    assert partial.state is RefundState.PROCESSING
    assert await h.service.submit_due_refunds() == 0, "next try not due yet"
    h.clock.advance(31)
    await h.service.submit_due_refunds()
    after = await h.get(order.id)
    assert after.state is OrderState.PARTIALLY_REFUNDED
    assert h.wechat.refund_calls == [partial.out_refund_no] * 2, "the same refund number each time"
    again = await h.service.request_refund(order.id, amount_fen=1000, reason="部分退费", key="k1")
    assert again.id == partial.id, "the same key is the same refund"

    with pytest.raises(DomainError) as caught:
        await h.service.request_refund(order.id, amount_fen=PRICE, reason="too much", key="k2")
    assert caught.value.code == "payment.refund_too_large"

    h.wechat.refund_answers = [ChannelRefundState.FAILED]
    rest = await h.service.request_refund(order.id, amount_fen=None, reason="取消", key="k3")
    assert rest.amount_fen == PRICE - 1000
    queue = await h.service.failed_refunds()
    assert [(o.id, r.id) for o, r in queue] == [(order.id, rest.id)]
    assert "payment.refund_failed" in await h.outbox_topics(order.id)

    retried = await h.service.retry_refund("staff:op", rest.id)
    assert retried.out_refund_no == rest.out_refund_no
    final = await h.get(order.id)
    assert final.state is OrderState.REFUNDED
    assert final.refunded_fen == PRICE
    assert sum(a for _, a in h.wechat.refunds.values()) == PRICE
    assert await h.service.failed_refunds() == []


async def test_another_accounts_order_is_not_found(h: Harness) -> None:
    order = await h.order("acct-1")
    with pytest.raises(DomainError) as caught:
        await h.service.pay("acct-2", order.id, "wechat", PAYER)
    assert caught.value.code == "payment.order_not_found"
    with pytest.raises(DomainError) as caught:
        await h.service.pay("acct-1", order.id, "unionpay", PAYER)
    assert caught.value.code == "payment.unknown_channel"
