"""Daily reconciliation (对账), the use case: download one channel's bill of a Beijing day, compare it with our
ledger, repair what a query proves, compare again and keep the report for operators.

Repairs go through the payment service and its state machine, never around it: a payment the channel has and we
do not is queried at the channel and applied as the missed callback it is (``PaymentService.apply_trade``); a
refund is confirmed by the channel's refund query (``PaymentService.reconcile_refund``). What is left after that
is looked at once more to tell a line of another day (跨日) from a real difference, and recorded. One report per
(day, channel): running again replaces it; a run whose bill could not be had does not replace a completed one.
No channel call happens inside a database transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from types import TracebackType
from typing import Protocol, Self

from domain.kernel.audit import AuditEvent, AuditRepository, Outcome
from domain.kernel.clock import to_shanghai
from domain.kernel.errors import DomainError, ValidationError
from domain.kernel.ids import new_id
from domain.payment.machine import AttemptState, RefundState
from domain.payment.ports import ChannelRefundState, ChannelTradeState, PaymentChannel, PaymentRepository
from domain.payment.reconciliation import (
    Difference,
    DifferenceKind,
    LedgerLine,
    LineKey,
    ReconciliationRun,
    Repair,
    RepairAction,
    RunState,
    beijing_day,
    beijing_day_bounds,
    compare,
)
from domain.payment.use_cases import PaymentService

log = logging.getLogger(__name__)

SYSTEM = "system"


class DayNotOverError(ValidationError):
    code = "reconciliation.day_not_over"
    message = "该日尚未结束，暂不能对账"


class ReconciliationRepository(Protocol):
    async def ledger_lines(self, channel: str, *, start: datetime, end: datetime) -> Sequence[LedgerLine]:
        """Our succeeded payments (paying and duplicate attempts) and succeeded refunds of one channel whose
        success falls in [start, end)."""
        ...

    async def ledger_lines_for(self, channel: str, keys: Sequence[LineKey]) -> Sequence[LedgerLine]:
        """The same lines by key, whatever their day."""
        ...

    async def replace(self, run: ReconciliationRun) -> None:
        """Store ``run`` as the report of its (day, channel), removing the previous one."""
        ...

    async def get(self, day: date, channel: str) -> ReconciliationRun | None: ...

    async def of_day(self, day: date) -> Sequence[ReconciliationRun]:
        """The reports of one day, by channel."""
        ...


class ReconciliationUnitOfWork(Protocol):
    @property
    def reconciliation(self) -> ReconciliationRepository: ...

    @property
    def payments(self) -> PaymentRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def commit(self) -> None: ...


class ReconciliationService:
    def __init__(self, payments: PaymentService, uow_factory: Callable[[], ReconciliationUnitOfWork]) -> None:
        self.payments = payments
        self.uow_factory = uow_factory
        self.clock = payments.d.clock

    @property
    def channels(self) -> list[str]:
        return sorted(self.payments.d.channels)

    def today(self) -> date:
        return beijing_day(self.clock.now())

    def yesterday(self) -> date:
        return self.today() - timedelta(days=1)

    # ------------------------------------------------------------------ reading

    async def runs(self, day: date) -> Sequence[ReconciliationRun]:
        async with self.uow_factory() as uow:
            return await uow.reconciliation.of_day(day)

    # ------------------------------------------------------------------ running

    async def reconcile(
        self,
        day: date,
        channel_name: str,
        *,
        actor: str = SYSTEM,
        request_id: str | None = None,
        source_ip: str | None = None,
    ) -> ReconciliationRun:
        """Reconcile one channel's day and store the report (replacing that day's previous one). A bill that
        cannot be had raises (UnavailableError when it is not ready yet) after it is noted in the report."""
        channel = self.payments.channel(channel_name)
        started = self.clock.now()
        if day >= beijing_day(started):
            raise DayNotOverError(f"{day} is not over in Beijing")
        try:
            bill = list(await channel.bill(day))
        except DomainError as exc:
            await self._record_failure(
                day, channel_name, exc.code, actor=actor, started=started, request_id=request_id, source_ip=source_ip
            )
            raise
        start, end = beijing_day_bounds(day)
        first = compare(bill, await self._ledger(channel_name, start, end))
        notes: dict[LineKey, str] = {}
        repairs: list[Repair] = []
        for difference in first.differences:
            if difference.kind is not DifferenceKind.MISSING_HERE:
                continue
            if difference.line_kind == "payment":
                repair, note = await self._repair_payment(channel_name, channel, difference)
            else:
                repair, note = await self._repair_refund(channel_name, difference)
            if repair is not None:
                repairs.append(repair)
            if note is not None:
                notes[difference.key] = note
        final = compare(bill, await self._ledger(channel_name, start, end))
        differences = await self._explain(day, channel_name, channel, final.differences, notes)
        run = ReconciliationRun(
            id=new_id(),
            day=day,
            channel=channel_name,
            state=RunState.COMPLETED,
            actor=actor,
            started_at=started,
            finished_at=self.clock.now(),
            bill=final.bill,
            ledger=final.ledger,
            matched=final.matched,
            differences=differences,
            repairs=tuple(repairs),
        )
        async with self.uow_factory() as uow:
            await uow.reconciliation.replace(run)
            if actor != SYSTEM:
                await self._audit(uow, run, Outcome.SUCCESS, request_id=request_id, source_ip=source_ip)
            await uow.commit()
        log.info(
            "payment_reconciled",
            extra={
                "day": day.isoformat(),
                "channel": channel_name,
                "differences": len(differences),
                "repairs": len(repairs),
            },
        )
        return run

    async def reconcile_due(self, *, not_before: time = time(10, 30), lookback_days: int = 2) -> dict[str, str]:
        """The daily task: each configured channel's days whose bills should be ready (yesterday once it is
        ``not_before`` in Beijing, and the ``lookback_days - 1`` days before) and that have no completed report
        yet. One channel failing does not stop the others; they are tried again on the next call."""
        local = to_shanghai(self.clock.now())
        latest = local.date() - timedelta(days=1 if local.time() >= not_before else 2)
        outcome: dict[str, str] = {}
        for back in range(max(1, lookback_days) - 1, -1, -1):
            day = latest - timedelta(days=back)
            for name in self.channels:
                async with self.uow_factory() as uow:
                    existing = await uow.reconciliation.get(day, name)
                if existing is None or existing.state is not RunState.COMPLETED:
                    outcome[f"{day.isoformat()}:{name}"] = await self._guarded(day, name)
        return outcome

    async def reconcile_day(self, day: date, channels: Sequence[str] | None = None) -> dict[str, str]:
        """Reconcile one day again for each configured channel (or those named), replacing the reports."""
        return {f"{day.isoformat()}:{name}": await self._guarded(day, name) for name in (channels or self.channels)}

    async def _guarded(self, day: date, name: str) -> str:
        try:
            run = await self.reconcile(day, name)
        except DomainError as exc:
            log.warning("payment_reconcile_failed", extra={"day": day.isoformat(), "channel": name, "code": exc.code})
            return f"failed:{exc.code}"
        except Exception as exc:  # noqa: BLE001  (an adapter's bug must not stop the other channels)
            log.warning(
                "payment_reconcile_failed",
                extra={"day": day.isoformat(), "channel": name, "error_type": type(exc).__name__},
            )
            return f"failed:{type(exc).__name__}"
        return f"{run.state.value}:{len(run.differences)}"

    # ------------------------------------------------------------------ the steps

    async def _ledger(self, channel: str, start: datetime, end: datetime) -> Sequence[LedgerLine]:
        async with self.uow_factory() as uow:
            return await uow.reconciliation.ledger_lines(channel, start=start, end=end)

    async def _repair_payment(
        self, channel_name: str, channel: PaymentChannel, difference: Difference
    ) -> tuple[Repair | None, str | None]:
        """A payment on the bill that has not succeeded here: a missed callback if the channel's query says paid."""
        out_trade_no = difference.out_trade_no
        async with self.uow_factory() as uow:
            order = await uow.payments.by_out_trade_no(out_trade_no)
        attempt = order.attempt(out_trade_no) if order is not None else None
        if order is None or attempt is None:
            return None, "payment.order_not_found: no attempt of ours has this out_trade_no"
        if attempt.channel != channel_name:
            return None, f"payment.channel_mismatch: our attempt is of {attempt.channel}"
        if attempt.state in (AttemptState.SUCCEEDED, AttemptState.DUPLICATE):
            return None, None  # succeeded here already, on another day: explained later
        try:
            trade = await channel.query(out_trade_no)
        except DomainError as exc:
            return None, f"{exc.code}: the channel's query failed"
        if trade.state is not ChannelTradeState.PAID:
            return None, f"channel query: {trade.state.value}"
        try:
            await self.payments.apply_trade(channel_name, trade)
        except DomainError as exc:
            return None, f"{exc.code}: the channel's query could not be applied"
        async with self.uow_factory() as uow:
            after = await uow.payments.by_out_trade_no(out_trade_no)
        done = after.attempt(out_trade_no) if after is not None else None
        if after is None or done is None or done.state not in (AttemptState.SUCCEEDED, AttemptState.DUPLICATE):
            return None, "the channel's query changed nothing"
        return (
            Repair(
                RepairAction.PAYMENT_APPLIED,
                "payment",
                out_trade_no,
                None,
                trade.transaction_id,
                trade.amount_fen or 0,
                f"attempt {done.state.value}, order {after.state.value}",
            ),
            None,
        )

    async def _repair_refund(self, channel_name: str, difference: Difference) -> tuple[Repair | None, str | None]:
        """A refund on the bill that has not succeeded here: applied if the channel's refund query says so."""
        out_refund_no = difference.out_refund_no
        if out_refund_no is None:
            return None, "the bill's refund line has no refund number"
        async with self.uow_factory() as uow:
            order = await uow.payments.by_out_trade_no(difference.out_trade_no)
        if order is None:
            return None, "payment.order_not_found: no attempt of ours has this out_trade_no"
        ours = next((r for r in order.refunds if r.out_refund_no == out_refund_no), None)
        if ours is None:
            return None, "payment.refund_not_found: a refund we never sent (made in the merchant portal?)"
        if ours.state is RefundState.SUCCEEDED:
            return None, None  # succeeded here already, on another day: explained later
        try:
            answer, changed = await self.payments.reconcile_refund(channel_name, difference.out_trade_no, out_refund_no)
        except DomainError as exc:
            return None, f"{exc.code}: the refund could not be confirmed"
        if not changed:
            return None, None if answer is ChannelRefundState.SUCCEEDED else f"channel refund query: {answer.value}"
        async with self.uow_factory() as uow:
            after = await uow.payments.by_out_trade_no(difference.out_trade_no)
        refund = next((r for r in after.refunds if r.out_refund_no == out_refund_no), None) if after else None
        assert after is not None
        assert refund is not None
        return (
            Repair(
                RepairAction.REFUND_APPLIED,
                "refund",
                difference.out_trade_no,
                out_refund_no,
                difference.transaction_id,
                refund.amount_fen,
                f"refund {refund.state.value}, order {after.state.value}",
            ),
            None,
        )

    async def _explain(
        self,
        day: date,
        channel_name: str,
        channel: PaymentChannel,
        differences: Sequence[Difference],
        notes: dict[LineKey, str],
    ) -> tuple[Difference, ...]:
        """Look once more at what is left: a line both sides have, on different days, is OTHER_DAY."""
        missing_here = [d.key for d in differences if d.kind is DifferenceKind.MISSING_HERE]
        elsewhere: dict[LineKey, LedgerLine] = {}
        if missing_here:
            async with self.uow_factory() as uow:
                found = await uow.reconciliation.ledger_lines_for(channel_name, missing_here)
            elsewhere = {line.key: line for line in found}
        explained: list[Difference] = []
        for difference in differences:
            note = notes.get(difference.key)
            kind = difference.kind
            if kind is DifferenceKind.MISSING_HERE:
                line = elsewhere.get(difference.key)
                if line is not None and line.at is not None and beijing_day(line.at) != day:
                    if line.amount_fen == difference.channel_fen:
                        kind, note = DifferenceKind.OTHER_DAY, f"ledger: succeeded on {beijing_day(line.at)}"
                    else:
                        note = f"ledger: {line.amount_fen} fen on {beijing_day(line.at)}"
            elif kind is DifferenceKind.MISSING_THERE:
                kind, note = await self._ask_channel(day, channel, difference)
            explained.append(replace(difference, kind=kind, note=note))
        return tuple(explained)

    async def _ask_channel(
        self, day: date, channel: PaymentChannel, difference: Difference
    ) -> tuple[DifferenceKind, str]:
        """A line we have that the day's bill lacks: does the channel know it at all?"""
        missing = DifferenceKind.MISSING_THERE
        try:
            if difference.line_kind == "payment":
                trade = await channel.query(difference.out_trade_no)
                if trade.state is ChannelTradeState.PAID and trade.paid_at is not None:
                    paid_day = beijing_day(trade.paid_at)
                    if paid_day != day:
                        return DifferenceKind.OTHER_DAY, f"channel: paid on {paid_day}"
                    return missing, "channel query: paid that day, yet not on the bill"
                return missing, f"channel query: {trade.state.value}"
            assert difference.out_refund_no is not None
            answer = await channel.query_refund(difference.out_trade_no, difference.out_refund_no)
        except DomainError as exc:
            return missing, f"{exc.code}: the channel's query failed"
        if answer.state is ChannelRefundState.SUCCEEDED:
            return DifferenceKind.OTHER_DAY, "channel: the refund succeeded, on another day's bill"
        return missing, f"channel refund query: {answer.state.value}"

    async def _record_failure(
        self,
        day: date,
        channel: str,
        code: str,
        *,
        actor: str,
        started: datetime,
        request_id: str | None,
        source_ip: str | None,
    ) -> None:
        run = ReconciliationRun(
            id=new_id(),
            day=day,
            channel=channel,
            state=RunState.FAILED,
            actor=actor,
            started_at=started,
            finished_at=self.clock.now(),
            failure=code[:64],
        )
        async with self.uow_factory() as uow:
            existing = await uow.reconciliation.get(day, channel)
            if existing is None or existing.state is not RunState.COMPLETED:
                await uow.reconciliation.replace(run)
            if actor != SYSTEM:
                await self._audit(uow, run, Outcome.FAILURE, request_id=request_id, source_ip=source_ip)
            await uow.commit()

    async def _audit(
        self,
        uow: ReconciliationUnitOfWork,
        run: ReconciliationRun,
        outcome: Outcome,
        *,
        request_id: str | None,
        source_ip: str | None,
    ) -> None:
        await uow.audit.record(
            AuditEvent(
                action="payment.reconciliation_run",
                outcome=outcome,
                actor=run.actor,
                actor_role="operator",
                object_type="payment_reconciliation",
                object_id=f"{run.day.isoformat()}:{run.channel}",
                request_id=request_id,
                source_ip=source_ip,
                reason=run.failure,
                details={"differences": str(len(run.differences)), "repairs": str(len(run.repairs))},
            ),
            now=run.finished_at,
        )
