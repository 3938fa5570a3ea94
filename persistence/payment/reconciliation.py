"""Daily reconciliation: the reports (one per day and channel, with their differences and repairs) and the
ledger lines the comparison reads from the payment tables.

Our ledger lines of a day: the paying attempts by the order's ``paid_at`` (the channel's payment time), the
duplicate attempts by when their automatic refund was created (when we learnt of them), the succeeded refunds by
``updated_at`` (a succeeded refund is never changed again, so that is when it succeeded here).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.payment.machine import AttemptState, RefundState
from domain.payment.reconciliation import (
    Difference,
    DifferenceKind,
    LedgerLine,
    LineKey,
    ReconciliationRun,
    Repair,
    RepairAction,
    RunState,
    Totals,
)
from persistence.metadata import metadata
from persistence.payment.tables import payment_attempts, payment_orders, payment_refunds
from persistence.types import Id, UTCDateTime

reconciliation_runs = sa.Table(
    "reconciliation_runs",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("day", sa.Date(), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("failure", sa.String(64), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=False),
    *(
        sa.Column(f"{side}_{what}", sa.BigInteger(), nullable=False, server_default="0")
        for side in ("bill", "ledger", "matched")
        for what in ("payments", "payment_fen", "refunds", "refund_fen")
    ),
    sa.Column("differences", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("repairs", sa.Integer(), nullable=False, server_default="0"),
    sa.UniqueConstraint("day", "channel"),
)

reconciliation_differences = sa.Table(
    "reconciliation_differences",
    metadata,
    sa.Column("run_id", Id, primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("line_kind", sa.String(8), nullable=False),
    sa.Column("out_trade_no", sa.String(64), nullable=False),
    sa.Column("out_refund_no", sa.String(64), nullable=True),
    sa.Column("transaction_id", sa.String(64), nullable=True),
    sa.Column("channel_fen", sa.BigInteger(), nullable=True),
    sa.Column("ledger_fen", sa.BigInteger(), nullable=True),
    sa.Column("note", sa.String(200), nullable=True),
)

reconciliation_repairs = sa.Table(
    "reconciliation_repairs",
    metadata,
    sa.Column("run_id", Id, primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True),
    sa.Column("action", sa.String(24), nullable=False),
    sa.Column("line_kind", sa.String(8), nullable=False),
    sa.Column("out_trade_no", sa.String(64), nullable=False),
    sa.Column("out_refund_no", sa.String(64), nullable=True),
    sa.Column("transaction_id", sa.String(64), nullable=True),
    sa.Column("amount_fen", sa.BigInteger(), nullable=False),
    sa.Column("result", sa.String(128), nullable=False),
)

# The ledger is read by day: the success times of orders and refunds are indexed (migration 0010).
sa.Index("ix_payment_orders_paid_at", payment_orders.c.paid_at)
sa.Index("ix_payment_refunds_state_updated_at", payment_refunds.c.state, payment_refunds.c.updated_at)

_IN_CHUNK = 500


def _totals(row: RowMapping, side: str) -> Totals:
    return Totals(
        int(row[f"{side}_payments"]),
        int(row[f"{side}_payment_fen"]),
        int(row[f"{side}_refunds"]),
        int(row[f"{side}_refund_fen"]),
    )


def _cut(value: str | None, size: int = 64) -> str | None:
    return None if value is None else value[:size]


class SqlReconciliationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    # ------------------------------------------------------------------ the ledger

    def _payments(self, channel: str) -> tuple[sa.Select[Any], sa.Select[Any]]:
        a, o, r = payment_attempts, payment_orders, payment_refunds
        paying = (
            sa.select(
                a.c.out_trade_no, a.c.transaction_id, o.c.self_pay_fen.label("amount_fen"), o.c.paid_at.label("at")
            )
            .select_from(a.join(o, o.c.id == a.c.order_id))
            .where(
                a.c.channel == channel,
                a.c.state == AttemptState.SUCCEEDED.value,
                o.c.paid_out_trade_no == a.c.out_trade_no,
            )
        )
        duplicate = (
            sa.select(
                a.c.out_trade_no, a.c.transaction_id, o.c.self_pay_fen.label("amount_fen"), r.c.created_at.label("at")
            )
            .select_from(a.join(o, o.c.id == a.c.order_id).join(r, r.c.out_trade_no == a.c.out_trade_no))
            .where(a.c.channel == channel, a.c.state == AttemptState.DUPLICATE.value)
        )
        return paying, duplicate

    def _refunds(self, channel: str) -> sa.Select[Any]:
        a, r = payment_attempts, payment_refunds
        return (
            sa.select(
                r.c.out_trade_no, r.c.out_refund_no, r.c.amount_fen, r.c.updated_at.label("at"), a.c.transaction_id
            )
            .select_from(r.join(a, a.c.out_trade_no == r.c.out_trade_no))
            .where(a.c.channel == channel, r.c.state == RefundState.SUCCEEDED.value)
        )

    async def _lines(
        self, paying: sa.Select[Any], duplicate: sa.Select[Any], refunds: sa.Select[Any]
    ) -> list[LedgerLine]:
        lines: list[LedgerLine] = []
        for query in (paying, duplicate):
            for row in (await self._conn.execute(query)).mappings():
                lines.append(
                    LedgerLine(
                        "payment", row["out_trade_no"], int(row["amount_fen"]), None, row["transaction_id"], row["at"]
                    )
                )
        for row in (await self._conn.execute(refunds)).mappings():
            lines.append(
                LedgerLine(
                    "refund",
                    row["out_trade_no"],
                    int(row["amount_fen"]),
                    row["out_refund_no"],
                    row["transaction_id"],
                    row["at"],
                )
            )
        return lines

    async def ledger_lines(self, channel: str, *, start: datetime, end: datetime) -> Sequence[LedgerLine]:
        paying, duplicate = self._payments(channel)
        o, r = payment_orders, payment_refunds
        return await self._lines(
            paying.where(o.c.paid_at >= start, o.c.paid_at < end),
            duplicate.where(r.c.created_at >= start, r.c.created_at < end),
            self._refunds(channel).where(r.c.updated_at >= start, r.c.updated_at < end),
        )

    async def ledger_lines_for(self, channel: str, keys: Sequence[LineKey]) -> Sequence[LedgerLine]:
        trade_nos = sorted({k for kind, k in keys if kind == "payment"})
        refund_nos = sorted({k for kind, k in keys if kind == "refund"})
        lines: list[LedgerLine] = []
        paying, duplicate = self._payments(channel)
        a, r = payment_attempts, payment_refunds
        for i in range(0, max(len(trade_nos), len(refund_nos)), _IN_CHUNK):
            trades, refunds = trade_nos[i : i + _IN_CHUNK], refund_nos[i : i + _IN_CHUNK]
            lines.extend(
                await self._lines(
                    paying.where(a.c.out_trade_no.in_(trades)),
                    duplicate.where(a.c.out_trade_no.in_(trades)),
                    self._refunds(channel).where(r.c.out_refund_no.in_(refunds)),
                )
            )
        return lines

    # ------------------------------------------------------------------ the reports

    async def replace(self, run: ReconciliationRun) -> None:
        try:
            async with self._conn.begin_nested():
                await self._replace(run)
        except IntegrityError:
            # Another run of the same (day, channel) stored its report meanwhile: this one, later, replaces it.
            async with self._conn.begin_nested():
                await self._replace(run)

    async def _replace(self, run: ReconciliationRun) -> None:
        runs = reconciliation_runs
        old = [
            str(x)
            for x in (
                await self._conn.execute(
                    sa.select(runs.c.id).where(runs.c.day == run.day, runs.c.channel == run.channel)
                )
            ).scalars()
        ]
        if old:
            await self._conn.execute(
                reconciliation_differences.delete().where(reconciliation_differences.c.run_id.in_(old))
            )
            await self._conn.execute(reconciliation_repairs.delete().where(reconciliation_repairs.c.run_id.in_(old)))
            await self._conn.execute(runs.delete().where(runs.c.id.in_(old)))
        totals: dict[str, int] = {}
        for side, t in (("bill", run.bill), ("ledger", run.ledger), ("matched", run.matched)):
            totals.update(
                {
                    f"{side}_payments": t.payments,
                    f"{side}_payment_fen": t.payment_fen,
                    f"{side}_refunds": t.refunds,
                    f"{side}_refund_fen": t.refund_fen,
                }
            )
        await self._conn.execute(
            runs.insert().values(
                id=run.id,
                day=run.day,
                channel=run.channel,
                state=run.state.value,
                actor=run.actor[:64],
                failure=_cut(run.failure),
                started_at=run.started_at,
                finished_at=run.finished_at,
                differences=len(run.differences),
                repairs=len(run.repairs),
                **totals,
            )
        )
        if run.differences:
            await self._conn.execute(
                reconciliation_differences.insert(),
                [
                    {
                        "run_id": run.id,
                        "seq": seq,
                        "kind": d.kind.value,
                        "line_kind": d.line_kind,
                        "out_trade_no": d.out_trade_no[:64],
                        "out_refund_no": _cut(d.out_refund_no),
                        "transaction_id": _cut(d.transaction_id),
                        "channel_fen": d.channel_fen,
                        "ledger_fen": d.ledger_fen,
                        "note": _cut(d.note, 200),
                    }
                    for seq, d in enumerate(run.differences)
                ],
            )
        if run.repairs:
            await self._conn.execute(
                reconciliation_repairs.insert(),
                [
                    {
                        "run_id": run.id,
                        "seq": seq,
                        "action": p.action.value,
                        "line_kind": p.line_kind,
                        "out_trade_no": p.out_trade_no[:64],
                        "out_refund_no": _cut(p.out_refund_no),
                        "transaction_id": _cut(p.transaction_id),
                        "amount_fen": p.amount_fen,
                        "result": p.result[:128],
                    }
                    for seq, p in enumerate(run.repairs)
                ],
            )

    async def _load(self, row: RowMapping) -> ReconciliationRun:
        d, p = reconciliation_differences, reconciliation_repairs
        differences = (
            await self._conn.execute(sa.select(d).where(d.c.run_id == row["id"]).order_by(d.c.seq))
        ).mappings()
        repairs = (await self._conn.execute(sa.select(p).where(p.c.run_id == row["id"]).order_by(p.c.seq))).mappings()
        return ReconciliationRun(
            id=row["id"],
            day=row["day"],
            channel=row["channel"],
            state=RunState(row["state"]),
            actor=row["actor"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            bill=_totals(row, "bill"),
            ledger=_totals(row, "ledger"),
            matched=_totals(row, "matched"),
            differences=tuple(
                Difference(
                    DifferenceKind(x["kind"]),
                    "refund" if x["line_kind"] == "refund" else "payment",
                    x["out_trade_no"],
                    x["out_refund_no"],
                    x["transaction_id"],
                    None if x["channel_fen"] is None else int(x["channel_fen"]),
                    None if x["ledger_fen"] is None else int(x["ledger_fen"]),
                    x["note"],
                )
                for x in differences
            ),
            repairs=tuple(
                Repair(
                    RepairAction(x["action"]),
                    "refund" if x["line_kind"] == "refund" else "payment",
                    x["out_trade_no"],
                    x["out_refund_no"],
                    x["transaction_id"],
                    int(x["amount_fen"]),
                    x["result"],
                )
                for x in repairs
            ),
            failure=row["failure"],
        )

    async def get(self, day: date, channel: str) -> ReconciliationRun | None:
        runs = reconciliation_runs
        row = (
            (await self._conn.execute(sa.select(runs).where(runs.c.day == day, runs.c.channel == channel)))
            .mappings()
            .first()
        )
        return None if row is None else await self._load(row)

    async def of_day(self, day: date) -> Sequence[ReconciliationRun]:
        runs = reconciliation_runs
        rows = (
            (await self._conn.execute(sa.select(runs).where(runs.c.day == day).order_by(runs.c.channel)))
            .mappings()
            .all()
        )
        return [await self._load(row) for row in rows]
