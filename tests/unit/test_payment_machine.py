"""The payment order and refund state machines (DESIGN §5) under random interleavings of prepays, channel
successes, duplicated and reordered notifications, queries, closes, expiries and refunds (issue: payments).

A small model of the channels stands beside the machine: each attempt is open, paid or closed *at its channel*;
a close reaches the channel only if the resident has not paid yet (otherwise the channel answers "paid" and the
success is learnt by a query); notifications queue up and arrive in any order, any number of times; refunds
succeed or fail at the channel and are retried with the same refund number.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain.kernel.errors import DomainError
from domain.payment.machine import (
    AttemptClosed,
    AttemptState,
    Close,
    CloseAttempt,
    Event,
    KeepLate,
    NotifyPayable,
    OrderState,
    PaymentOrder,
    Prepaid,
    RefundFailed,
    RefundRetried,
    RefundState,
    RefundSubmitted,
    RefundSucceeded,
    RequestRefund,
    SubmitRefund,
    Succeeded,
    apply,
)

T0 = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
PRICE = 5000


def new_order() -> PaymentOrder:
    return PaymentOrder(
        id="o1",
        payable_type="bill",
        payable_id="b1",
        account_id="a1",
        description="诊间缴费",
        self_pay_fen=PRICE,
        insured_fen=0,
        created_at=T0,
        expires_at=T0 + timedelta(minutes=15),
    )


@dataclass
class Channel:
    at_channel: dict[str, str] = field(default_factory=dict)
    """out_trade_no -> open | paid | closed, as the channel sees it."""
    transactions: dict[str, str] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=dict)
    """What the channel paid back per attempt."""
    refund_outcome: dict[str, str] = field(default_factory=dict)
    """refund id -> succeeded | failed, as decided at the channel."""


class PaymentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.order = new_order()
        self.channel = Channel()
        self.notifications: list[Succeeded] = []
        self.pending_submits: list[str] = []
        self.counter = 0
        self.notified: list[str] = []

    # ------------------------------------------------------------------ helpers

    def feed(self, event: Event) -> None:
        try:
            outcome = apply(self.order, event)
        except DomainError:
            return  # refused moves (stable codes) change nothing
        self.order = outcome.order
        for effect in outcome.effects:
            match effect:
                case CloseAttempt(out_trade_no, _):
                    # The close reaches the channel: it closes an unpaid attempt; a paid one stays paid and the
                    # success will be learnt (by its notification or a query).
                    if self.channel.at_channel.get(out_trade_no) == "open":
                        self.channel.at_channel[out_trade_no] = "closed"
                case SubmitRefund(refund_id):
                    self.pending_submits.append(refund_id)
                case NotifyPayable(what):
                    self.notified.append(what)

    # ------------------------------------------------------------------ rules

    @rule(channel=st.sampled_from(["wechat", "alipay"]))
    def prepay(self, channel: str) -> None:
        self.counter += 1
        out_trade_no = f"T{self.counter}"
        before = self.order
        self.feed(Prepaid(out_trade_no, channel))
        if self.order is not before and self.order.attempt(out_trade_no) is not None:
            self.channel.at_channel[out_trade_no] = "open"

    @rule(data=st.data())
    def resident_pays(self, data: st.DataObject) -> None:
        open_ones = sorted(k for k, v in self.channel.at_channel.items() if v == "open")
        if not open_ones:
            return
        out_trade_no = data.draw(st.sampled_from(open_ones))
        self.channel.at_channel[out_trade_no] = "paid"
        self.channel.transactions[out_trade_no] = "X" + out_trade_no
        success = Succeeded(out_trade_no, "X" + out_trade_no, PRICE, T0)
        self.notifications.append(success)

    @rule(data=st.data(), duplicate=st.booleans())
    def a_notification_arrives(self, data: st.DataObject, duplicate: bool) -> None:
        if not self.notifications:
            return
        index = data.draw(st.integers(0, len(self.notifications) - 1))  # any order
        success = self.notifications[index] if duplicate else self.notifications.pop(index)
        self.feed(success)

    @rule()
    def a_query_finds_every_payment(self) -> None:
        for out_trade_no, state in sorted(self.channel.at_channel.items()):
            if state == "paid":
                self.feed(Succeeded(out_trade_no, self.channel.transactions[out_trade_no], PRICE, T0))
            elif state == "closed":
                self.feed(AttemptClosed(out_trade_no))

    @rule()
    def the_order_expires(self) -> None:
        self.feed(Close(T0 + timedelta(minutes=16)))

    @rule()
    def the_payable_keeps_a_late_payment(self) -> None:
        self.feed(KeepLate())

    @rule(amount=st.integers(1, PRICE))
    def a_refund_is_requested(self, amount: int) -> None:
        self.counter += 1
        self.feed(RequestRefund(f"r{self.counter}", f"R{self.counter}", amount, "cancel"))

    @rule(data=st.data(), ok=st.booleans())
    def the_channel_answers_a_refund(self, data: st.DataObject, ok: bool) -> None:
        if not self.pending_submits:
            return
        refund_id = self.pending_submits.pop(data.draw(st.integers(0, len(self.pending_submits) - 1)))
        refund = self.order.refund(refund_id)
        assert refund is not None
        self.feed(RefundSubmitted(refund_id))
        decided = self.channel.refund_outcome.get(refund_id)
        if decided == "succeeded":
            self.feed(RefundSucceeded(refund_id))  # same refund number: the channel answers the same
            return
        if ok:
            already = self.channel.refunded.get(refund.out_trade_no, 0)
            assert already + refund.amount_fen <= PRICE, "we asked the channel for more than was paid"
            self.channel.refunded[refund.out_trade_no] = already + refund.amount_fen
            self.channel.refund_outcome[refund_id] = "succeeded"
            self.feed(RefundSucceeded(refund_id))
        else:
            self.feed(RefundFailed(refund_id, "NOT_ENOUGH"))

    @rule(data=st.data())
    def an_operator_retries_a_failed_refund(self, data: st.DataObject) -> None:
        failed = [r.id for r in self.order.refunds if r.state is RefundState.FAILED]
        if failed:
            self.feed(RefundRetried(data.draw(st.sampled_from(failed))))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def never_paid_twice(self) -> None:
        succeeded = [a for a in self.order.attempts if a.state is AttemptState.SUCCEEDED]
        assert len(succeeded) <= 1
        if succeeded:
            assert self.order.paid_out_trade_no == succeeded[0].out_trade_no
        assert self.notified.count("paid") + self.notified.count("paid_late") <= 1

    @invariant()
    def every_duplicate_payment_is_being_refunded_in_full(self) -> None:
        for attempt in self.order.attempts:
            if attempt.state is AttemptState.DUPLICATE:
                refunds = self.order.refunds_of(attempt.out_trade_no)
                assert sum(r.amount_fen for r in refunds) == PRICE

    @invariant()
    def refunds_never_exceed_the_payment(self) -> None:
        assert 0 <= self.order.refunded_fen <= self.order.committed_refund_fen <= self.order.paid_fen
        for out_trade_no, amount in self.channel.refunded.items():
            assert amount <= PRICE, out_trade_no

    @invariant()
    def state_agrees_with_the_money(self) -> None:
        order = self.order
        if order.state in (OrderState.CREATED, OrderState.PAYING, OrderState.CLOSED):
            assert order.paid_out_trade_no is None
        if order.state is OrderState.REFUNDED:
            assert order.refunded_fen == order.paid_fen > 0
        if order.state is OrderState.PARTIALLY_REFUNDED:
            assert 0 < order.refunded_fen < order.paid_fen
        if order.state is OrderState.PAID:
            assert order.refunded_fen == 0
            assert order.paid_fen == PRICE


PaymentMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestPaymentMachine = PaymentMachine.TestCase


def test_a_success_on_a_closed_order_is_paid_late_and_the_payable_decides() -> None:
    order = apply(new_order(), Prepaid("T1", "wechat")).order
    closed = apply(order, Close(T0)).order
    assert closed.state is OrderState.CLOSED
    late = apply(closed, Succeeded("T1", "X1", PRICE, T0))
    assert late.order.state is OrderState.PAID_LATE
    assert NotifyPayable("paid_late") in late.effects
    assert apply(late.order, KeepLate()).order.state is OrderState.PAID
    refunded = apply(late.order, RequestRefund("r1", "R1", PRICE, "slot gone")).order
    refunded = apply(apply(refunded, RefundSubmitted("r1")).order, RefundSucceeded("r1")).order
    assert refunded.state is OrderState.REFUNDED


def test_a_second_channel_success_is_refunded_in_full_and_the_order_stays_paid() -> None:
    order = apply(new_order(), Prepaid("T1", "wechat")).order
    switched = apply(order, Prepaid("T2", "alipay"))
    assert switched.effects == (CloseAttempt("T1", "wechat"),), "switching channel closes the first"
    order = apply(switched.order, Succeeded("T2", "A2", PRICE, T0)).order
    twice = apply(order, Succeeded("T1", "W1", PRICE, T0))
    assert twice.order.state is OrderState.PAID
    assert twice.order.paid_out_trade_no == "T2"
    (effect,) = twice.effects
    assert isinstance(effect, SubmitRefund)
    refund = twice.order.refund(effect.refund_id)
    assert refund is not None
    assert (refund.out_trade_no, refund.amount_fen, refund.reason) == ("T1", PRICE, "duplicate")


def test_repeated_events_change_nothing_and_bad_amounts_are_refused() -> None:
    order = apply(new_order(), Prepaid("T1", "wechat")).order
    paid = apply(order, Succeeded("T1", "X1", PRICE, T0)).order
    again = apply(paid, Succeeded("T1", "X1", PRICE, T0))
    assert again.changed is False
    assert again.order == paid
    with pytest.raises(DomainError) as caught:
        apply(order, Succeeded("T1", "X1", PRICE - 1, T0))
    assert caught.value.code == "payment.amount_mismatch"
    with pytest.raises(DomainError) as caught:
        apply(paid, RequestRefund("r1", "R1", PRICE + 1, "x"))
    assert caught.value.code == "payment.refund_too_large"
    with pytest.raises(DomainError) as caught:
        apply(paid, Close(T0))
    assert caught.value.code == "payment.already_paid"
    assert replace(paid, version=0).version == 0
