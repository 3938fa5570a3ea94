"""Daily payment reconciliation (对账) on the real PostgreSQL: the channel's bill of a Beijing day against our
ledger, repairs of what a query proves (a missed callback, a refund confirmed late) through the payment machine,
the differences left for operators, one report per day and channel replaced by each run, the daily task and the
operators' routes. The channels are the model of the port from test_payments, with a daily bill."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import cast

import pytest
import sqlalchemy as sa

from domain.kernel.errors import DomainError
from domain.kernel.ids import new_id
from domain.kernel.money import Amount
from domain.kernel.principal import Principal, PrincipalKind
from domain.payment.machine import OrderState, PaymentOrder, RefundState
from domain.payment.ports import ChannelBillLine, ChannelRefundState
from domain.payment.reconciliation import DifferenceKind, RepairAction, RunState, Totals
from domain.payment.reconciliation_service import ReconciliationService
from domain.payment.use_cases import PaymentDeps, PaymentService
from notifications.runtime import WorkerRuntime
from notifications.tasks import payment_reconcile
from persistence.db import ConnectionSource
from persistence.uow import SqlUnitOfWork, unit_of_work_factory
from tests.integration.test_payments import PAYER, PRICE, ModelChannel, last_out_trade_no
from tests.support.app import FixedClock, asgi_client, build_test_apps

DAY = date(2026, 11, 21)
DURING = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)  # 10:00 in Beijing on DAY
NEXT_MORNING = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)  # 11:00 in Beijing the next day: the bill is ready


@dataclass
class BillChannel(ModelChannel):
    """The model channel, whose bill can also be wrong: an amount changed, lines we never heard of."""

    billed_amounts: dict[str, int] = field(default_factory=dict)
    extra: list[ChannelBillLine] = field(default_factory=list)

    async def bill(self, day: date) -> Sequence[ChannelBillLine]:
        lines = [
            replace(x, amount_fen=self.billed_amounts.get(x.out_trade_no, x.amount_fen)) if x.kind == "payment" else x
            for x in await super().bill(day)
        ]
        return [*lines, *self.extra]


@dataclass
class Rec:
    payments: PaymentService
    service: ReconciliationService
    wechat: BillChannel
    alipay: BillChannel
    clock: FixedClock
    source: ConnectionSource

    async def order(self) -> PaymentOrder:
        async with SqlUnitOfWork(self.source) as uow:
            order = await self.payments.create_order(
                uow,
                payable_type="bill",
                payable_id="bill-" + new_id(),
                account_id="acct-1",
                description="诊间缴费",
                amount=Amount(PRICE),
                expires_at=self.clock.now() + timedelta(minutes=15),
            )
            await uow.commit()
        return order

    async def paid(self, *, notified: bool = True) -> tuple[PaymentOrder, str]:
        """An order paid in WeChat now; its notification reached us, or was lost."""
        order = await self.order()
        await self.payments.pay("acct-1", order.id, "wechat", PAYER)
        out_trade_no = last_out_trade_no(self.wechat)
        trade = self.wechat.resident_pays(out_trade_no)
        if notified:
            await self.payments.apply_trade("wechat", trade)
        return order, out_trade_no

    async def get(self, order_id: str) -> PaymentOrder:
        async with SqlUnitOfWork(self.source) as uow:
            order = await uow.payments.get(order_id)
        assert order is not None
        return order

    async def count(self, sql: str, **params: object) -> int:
        async with SqlUnitOfWork(self.source) as uow:
            return int((await uow.connection.execute(sa.text(sql), params)).scalar_one())


@pytest.fixture
def rec(committed_source: ConnectionSource) -> Rec:
    clock = FixedClock(DURING)
    wechat, alipay = BillChannel("wechat", clock=clock), BillChannel("alipay", clock=clock)
    payments = PaymentService(
        PaymentDeps(
            uow_factory=unit_of_work_factory(committed_source),
            clock=clock,
            channels={"wechat": wechat, "alipay": alipay},
        )
    )
    service = ReconciliationService(payments, unit_of_work_factory(committed_source))
    return Rec(payments, service, wechat, alipay, clock, committed_source)


async def test_a_missed_callback_is_repaired_by_the_run(rec: Rec) -> None:
    notified, _ = await rec.paid()
    lost, lost_no = await rec.paid(notified=False)
    assert (await rec.get(lost.id)).state is OrderState.PAYING
    rec.clock.current = NEXT_MORNING

    run = await rec.service.reconcile(DAY, "wechat")

    assert run.state is RunState.COMPLETED
    assert run.differences == ()
    (repair,) = run.repairs
    assert (repair.action, repair.out_trade_no, repair.amount_fen) == (RepairAction.PAYMENT_APPLIED, lost_no, PRICE)
    assert repair.result == "attempt succeeded, order paid"
    assert run.bill == run.ledger == run.matched == Totals(payments=2, payment_fen=2 * PRICE)
    repaired = await rec.get(lost.id)
    assert repaired.state is OrderState.PAID
    assert repaired.paid_at == DURING, "paid when the channel says, on the day of the bill"
    assert (await rec.get(notified.id)).state is OrderState.PAID
    assert await rec.count("SELECT count(*) FROM outbox WHERE topic = 'payment.paid'") == 2
    assert await rec.service.runs(DAY) == [run]


async def test_an_amount_mismatch_and_an_unknown_trade_are_recorded_for_operators(rec: Rec) -> None:
    _, out_trade_no = await rec.paid()
    rec.wechat.billed_amounts[out_trade_no] = PRICE + 100
    rec.wechat.extra.append(ChannelBillLine("payment", "PUNKNOWN", "XUNKNOWN", 990))
    rec.clock.current = NEXT_MORNING

    run = await rec.service.reconcile(DAY, "wechat")

    mismatch, unknown = run.differences
    assert (mismatch.kind, mismatch.out_trade_no, mismatch.channel_fen, mismatch.ledger_fen) == (
        DifferenceKind.AMOUNT_MISMATCH,
        out_trade_no,
        PRICE + 100,
        PRICE,
    )
    assert (unknown.kind, unknown.out_trade_no, unknown.channel_fen, unknown.ledger_fen) == (
        DifferenceKind.MISSING_HERE,
        "PUNKNOWN",
        990,
        None,
    )
    assert unknown.note is not None
    assert unknown.note.startswith("payment.order_not_found")
    assert run.repairs == ()
    assert run.bill == Totals(payments=2, payment_fen=PRICE + 100 + 990)
    assert run.ledger == Totals(payments=1, payment_fen=PRICE)
    assert run.matched == Totals()
    (stored,) = await rec.service.runs(DAY)
    assert stored == run


async def test_an_empty_day_is_an_empty_report(rec: Rec) -> None:
    rec.clock.current = NEXT_MORNING
    run = await rec.service.reconcile(DAY, "alipay")
    assert run.state is RunState.COMPLETED
    assert (run.bill, run.ledger, run.matched, run.differences, run.repairs) == (Totals(), Totals(), Totals(), (), ())
    assert await rec.service.runs(DAY) == [run]
    with pytest.raises(DomainError) as caught:
        await rec.service.reconcile(DAY + timedelta(days=1), "alipay")
    assert caught.value.code == "reconciliation.day_not_over"


async def test_running_again_replaces_the_report(rec: Rec) -> None:
    await rec.paid()
    rec.wechat.extra.append(ChannelBillLine("payment", "PUNKNOWN", "XUNKNOWN", 990))
    rec.clock.current = NEXT_MORNING
    first = await rec.service.reconcile(DAY, "wechat")
    assert len(first.differences) == 1

    rec.wechat.extra.clear()  # the channel corrected its bill
    second = await rec.service.reconcile(DAY, "wechat")

    assert second.id != first.id
    assert second.differences == ()
    assert await rec.service.runs(DAY) == [second]
    runs = "SELECT count(*) FROM reconciliation_runs WHERE day = :day AND channel = 'wechat'"
    assert await rec.count(runs, day=DAY) == 1
    assert await rec.count("SELECT count(*) FROM reconciliation_differences WHERE run_id = :id", id=first.id) == 0


async def test_a_refund_confirmed_by_its_query_is_repaired_and_a_line_of_another_day_is_told_apart(rec: Rec) -> None:
    order, out_trade_no = await rec.paid()
    rec.wechat.refund_answers.append(ChannelRefundState.PROCESSING)
    refund = await rec.payments.request_refund(order.id, amount_fen=None, reason="cancelled", key="k1")
    assert refund.state is RefundState.PROCESSING
    # The channel finished it that evening; its notification never came and the sweep has not asked yet.
    rec.wechat.refunds[refund.out_refund_no] = (out_trade_no, PRICE)
    rec.wechat.refunded_at[refund.out_refund_no] = DURING + timedelta(hours=10)
    rec.clock.current = NEXT_MORNING

    run = await rec.service.reconcile(DAY, "wechat")

    (repair,) = run.repairs
    assert (repair.action, repair.out_refund_no, repair.amount_fen) == (
        RepairAction.REFUND_APPLIED,
        refund.out_refund_no,
        PRICE,
    )
    assert repair.result == "refund succeeded, order refunded"
    after = await rec.get(order.id)
    assert after.state is OrderState.REFUNDED
    # Here the refund succeeded when we learnt of it (the next day): both sides have it, on different days.
    (difference,) = run.differences
    assert (difference.kind, difference.line_kind, difference.out_refund_no) == (
        DifferenceKind.OTHER_DAY,
        "refund",
        refund.out_refund_no,
    )
    assert difference.note == "ledger: succeeded on 2026-11-22"
    assert run.matched == Totals(payments=1, payment_fen=PRICE)

    # The next day's run sees the same refund from our side only, and the channel confirms it: another day again.
    rec.clock.current = NEXT_MORNING + timedelta(days=1)
    next_day = await rec.service.reconcile(DAY + timedelta(days=1), "wechat")
    (other,) = next_day.differences
    assert (other.kind, other.ledger_fen, other.channel_fen) == (DifferenceKind.OTHER_DAY, PRICE, None)
    assert next_day.repairs == ()


async def test_a_bill_not_ready_is_noted_without_replacing_a_completed_report(rec: Rec) -> None:
    rec.clock.current = NEXT_MORNING
    rec.wechat.bill_ready = False
    with pytest.raises(DomainError) as caught:
        await rec.service.reconcile(DAY, "wechat")
    assert caught.value.code == "payment.bill_not_ready"
    (failed,) = await rec.service.runs(DAY)
    assert (failed.state, failed.failure) == (RunState.FAILED, "payment.bill_not_ready")

    rec.wechat.bill_ready = True
    completed = await rec.service.reconcile(DAY, "wechat")
    rec.wechat.bill_ready = False
    with pytest.raises(DomainError):
        await rec.service.reconcile(DAY, "wechat")
    assert await rec.service.runs(DAY) == [completed]


async def test_the_daily_task_reconciles_yesterday_per_channel_and_one_failing_does_not_stop_the_other(
    rec: Rec,
) -> None:
    await rec.paid()
    runtime = cast(
        WorkerRuntime, SimpleNamespace(services={"payments": rec.payments}, uow_factory=rec.service.uow_factory)
    )
    rec.clock.current = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)  # 10:00 in Beijing: yesterday's bill is not due
    assert await payment_reconcile(runtime, lookback_days=1) == {
        "2026-11-20:alipay": "completed:0",
        "2026-11-20:wechat": "completed:0",
    }

    rec.clock.current = NEXT_MORNING
    rec.wechat.bill_ready = False
    assert await payment_reconcile(runtime, lookback_days=1) == {
        "2026-11-21:alipay": "completed:0",
        "2026-11-21:wechat": "failed:payment.bill_not_ready",
    }
    rec.wechat.bill_ready = True
    rec.clock.advance(900)
    assert await payment_reconcile(runtime, lookback_days=1) == {"2026-11-21:wechat": "completed:0"}
    assert await payment_reconcile(runtime, lookback_days=1) == {}, "a completed day is not run again"
    (alipay, wechat) = await rec.service.runs(DAY)
    assert (alipay.channel, wechat.channel, wechat.matched.payments) == ("alipay", "wechat", 1)

    # An explicit day runs again and replaces the reports.
    assert await payment_reconcile(runtime, day="2026-11-21", channels=["wechat"]) == {
        "2026-11-21:wechat": "completed:0"
    }
    assert (await rec.service.runs(DAY))[1].id != wechat.id


class RoleAuthenticator:
    """``Bearer staff-<id>`` is an operator; ``Bearer doctor-<id>`` a doctor."""

    async def authenticate(self, token: str) -> Principal:
        kind, _, subject = token.partition("-")
        role = "operator" if kind == "staff" else "doctor"
        return Principal(subject, PrincipalKind.STAFF, "s-" + subject, "staff-app", frozenset({role}))


async def test_operators_read_the_report_and_run_a_day_again(rec: Rec, committed_source: ConnectionSource) -> None:
    await rec.paid()
    await rec.paid(notified=False)
    rec.clock.current = NEXT_MORNING
    await rec.service.reconcile(DAY, "wechat")
    _, admin, deps = build_test_apps(committed_source, clock=rec.clock)
    deps.payments = rec.payments
    deps.authenticator = RoleAuthenticator()
    operator = "op" + new_id()[:8]
    headers = {"authorization": f"Bearer staff-{operator}"}
    async with asgi_client(admin) as client:
        day = (await client.get("/api/v1/admin/reconciliation", params={"date": "2026-11-21"}, headers=headers)).json()
        assert day["date"] == "2026-11-21"
        assert day["channels"] == ["alipay", "wechat"]
        (run,) = day["runs"]
        assert (run["channel"], run["state"], run["actor"], run["differences"]) == ("wechat", "completed", "system", [])
        assert run["matched"] == {"payments": 2, "paymentFen": 2 * PRICE, "refunds": 0, "refundFen": 0, "netFen": 5000}
        (repair,) = run["repairs"]
        assert (repair["action"], repair["lineKind"], repair["amountFen"]) == ("payment_applied", "payment", PRICE)

        yesterday = await client.get("/api/v1/admin/reconciliation", headers=headers)
        assert yesterday.json()["date"] == "2026-11-21", "yesterday in Beijing by default"

        again = await client.post(
            "/api/v1/admin/reconciliation/runs", json={"date": "2026-11-21", "channel": "alipay"}, headers=headers
        )
        assert again.status_code == 200, again.text
        assert (again.json()["channel"], again.json()["actor"]) == ("alipay", f"staff:{operator}")
        audited = "SELECT count(*) FROM audit_log WHERE action = 'payment.reconciliation_run' AND actor = :actor"
        assert await rec.count(audited, actor=f"staff:{operator}") == 1
        assert [
            r["channel"] for r in (await client.get("/api/v1/admin/reconciliation", headers=headers)).json()["runs"]
        ] == [
            "alipay",
            "wechat",
        ]

        refused = [
            await client.post(
                "/api/v1/admin/reconciliation/runs", json={"date": "2026-11-22", "channel": "wechat"}, headers=headers
            ),
            await client.post(
                "/api/v1/admin/reconciliation/runs", json={"date": "2026-11-21", "channel": "paypal"}, headers=headers
            ),
            await client.get("/api/v1/admin/reconciliation", params={"date": "21/11/2026"}, headers=headers),
        ]
        assert [r.status_code for r in refused] == [400, 400, 422], "422: a malformed query parameter"
        assert refused[0].json()["code"] == "reconciliation.day_not_over"
        doctor = await client.get("/api/v1/admin/reconciliation", headers={"authorization": "Bearer doctor-d1"})
        assert doctor.status_code == 403
        anonymous = await client.get("/api/v1/admin/reconciliation")
        assert anonymous.status_code == 401
