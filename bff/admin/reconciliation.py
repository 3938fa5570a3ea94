"""Operators: the daily payment reconciliation (对账) reports, and running one day and channel again now."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, cast

import msgspec
from litestar import Request, Router, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter

from bff.auth.guards import current_principal, require_staff
from bff.auth.routes import client_context
from bff.services import deps_of, payment_service
from domain.payment.reconciliation import Difference, ReconciliationRun, Repair, Totals
from domain.payment.reconciliation_service import ReconciliationService, ReconciliationUnitOfWork


def reconciliation_service(state: State) -> ReconciliationService:
    """Built on the payment service and the edge's unit of work (the persistence unit of work implements every
    feature's protocol, domain/kernel/uow.py)."""
    deps = deps_of(state)
    return ReconciliationService(payment_service(state), cast(Callable[[], ReconciliationUnitOfWork], deps.uow_factory))


class TotalsOut(msgspec.Struct, rename="camel"):
    payments: int
    payment_fen: int
    refunds: int
    refund_fen: int
    net_fen: int


class DifferenceOut(msgspec.Struct, rename="camel"):
    kind: str
    """``missing_here`` (the channel has it, we do not), ``missing_there`` (we have it, the channel's bill does
    not), ``amount_mismatch``, ``other_day`` (both have it, on different days)."""
    line_kind: str
    out_trade_no: str
    out_refund_no: str | None
    transaction_id: str | None
    channel_fen: int | None
    ledger_fen: int | None
    note: str | None


class RepairOut(msgspec.Struct, rename="camel"):
    action: str
    """``payment_applied`` (a missed callback, applied from the channel's query) or ``refund_applied``."""
    line_kind: str
    out_trade_no: str
    out_refund_no: str | None
    transaction_id: str | None
    amount_fen: int
    result: str


class ReconciliationRunOut(msgspec.Struct, rename="camel"):
    run_id: str
    day: date = msgspec.field(name="date")
    channel: str
    state: str
    actor: str
    started_at: datetime
    finished_at: datetime
    failure: str | None
    bill: TotalsOut
    ledger: TotalsOut
    matched: TotalsOut
    differences: list[DifferenceOut]
    repairs: list[RepairOut]


class ReconciliationDayOut(msgspec.Struct, rename="camel"):
    day: date = msgspec.field(name="date")
    channels: list[str]
    """The channels configured now (a channel without a run has no report for that day yet)."""
    runs: list[ReconciliationRunOut]


class ReconciliationRunIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    day: date = msgspec.field(name="date")
    channel: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]


def _totals(t: Totals) -> TotalsOut:
    return TotalsOut(t.payments, t.payment_fen, t.refunds, t.refund_fen, t.net_fen)


def _difference(d: Difference) -> DifferenceOut:
    return DifferenceOut(
        d.kind.value,
        d.line_kind,
        d.out_trade_no,
        d.out_refund_no,
        d.transaction_id,
        d.channel_fen,
        d.ledger_fen,
        d.note,
    )


def _repair(r: Repair) -> RepairOut:
    return RepairOut(
        r.action.value, r.line_kind, r.out_trade_no, r.out_refund_no, r.transaction_id, r.amount_fen, r.result
    )


def _run(run: ReconciliationRun) -> ReconciliationRunOut:
    return ReconciliationRunOut(
        run_id=run.id,
        day=run.day,
        channel=run.channel,
        state=run.state.value,
        actor=run.actor,
        started_at=run.started_at,
        finished_at=run.finished_at,
        failure=run.failure,
        bill=_totals(run.bill),
        ledger=_totals(run.ledger),
        matched=_totals(run.matched),
        differences=[_difference(d) for d in run.differences],
        repairs=[_repair(r) for r in run.repairs],
    )


@get(
    "/reconciliation",
    operation_id="adminReconciliationDay",
    summary="The reconciliation reports of one day (yesterday by default), per channel",
)
async def reconciliation_day(
    state: State, day: Annotated[date | None, QueryParameter(name="date")] = None
) -> ReconciliationDayOut:
    service = reconciliation_service(state)
    when = day or service.yesterday()
    runs = await service.runs(when)
    return ReconciliationDayOut(day=when, channels=service.channels, runs=[_run(r) for r in runs])


@post(
    "/reconciliation/runs",
    operation_id="adminReconciliationRun",
    summary="Reconcile one day and channel again now (replaces that day's report)",
    status_code=200,
)
async def run_reconciliation(
    state: State, request: Request[Any, Any, Any], data: JSONBody[ReconciliationRunIn]
) -> ReconciliationRunOut:
    ctx = client_context(request)
    run = await reconciliation_service(state).reconcile(
        data.day,
        data.channel,
        actor=f"staff:{current_principal(request).subject}",
        request_id=ctx.request_id,
        source_ip=ctx.ip,
    )
    return _run(run)


reconciliation_admin_router = Router(
    path="/api/v1/admin",
    tags=["admin"],
    guards=[require_staff("operator", "sysadmin")],
    security=[{"bearer": []}],
    route_handlers=[reconciliation_day, run_reconciliation],
)
