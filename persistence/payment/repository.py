"""The payments repository on SQLAlchemy Core. An order is read with its attempts and refunds and written back
with an optimistic version check, under a row lock when the caller asks for one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.kernel.errors import ConflictError
from domain.payment.machine import (
    Attempt,
    AttemptState,
    OrderState,
    PaymentOrder,
    Refund,
    RefundState,
)
from domain.payment.ports import ChannelEvent
from persistence.payment.tables import payment_attempts, payment_events, payment_orders, payment_refunds


class ConcurrentChangeError(ConflictError):
    code = "payment.concurrent_change"
    message = "订单正在处理中，请稍后再试"


class SqlPaymentRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, order: PaymentOrder) -> None:
        await self._conn.execute(
            payment_orders.insert().values(
                id=order.id,
                payable_type=order.payable_type,
                payable_id=order.payable_id,
                account_id=order.account_id,
                description=order.description,
                self_pay_fen=order.self_pay_fen,
                insured_fen=order.insured_fen,
                state=order.state.value,
                created_at=order.created_at,
                expires_at=order.expires_at,
                paid_out_trade_no=order.paid_out_trade_no,
                paid_at=order.paid_at,
                version=order.version,
                updated_at=order.created_at,
            )
        )
        await self._write_children(order, PaymentOrder(**_blank(order)), now=order.created_at)

    async def _load(self, row: RowMapping | None) -> PaymentOrder | None:
        if row is None:
            return None
        attempts = (
            await self._conn.execute(
                sa.select(payment_attempts)
                .where(payment_attempts.c.order_id == row["id"])
                .order_by(payment_attempts.c.seq)
            )
        ).mappings()
        refunds = (
            await self._conn.execute(
                sa.select(payment_refunds)
                .where(payment_refunds.c.order_id == row["id"])
                .order_by(payment_refunds.c.seq)
            )
        ).mappings()
        return PaymentOrder(
            id=row["id"],
            payable_type=row["payable_type"],
            payable_id=row["payable_id"],
            account_id=row["account_id"],
            description=row["description"],
            self_pay_fen=row["self_pay_fen"],
            insured_fen=row["insured_fen"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            state=OrderState(row["state"]),
            attempts=tuple(
                Attempt(a["out_trade_no"], a["channel"], AttemptState(a["state"]), a["transaction_id"])
                for a in attempts
            ),
            refunds=tuple(
                Refund(
                    r["id"],
                    r["out_refund_no"],
                    r["out_trade_no"],
                    r["amount_fen"],
                    r["reason"],
                    RefundState(r["state"]),
                    r["failure"],
                )
                for r in refunds
            ),
            paid_out_trade_no=row["paid_out_trade_no"],
            paid_at=row["paid_at"],
            version=row["version"],
        )

    async def get(self, order_id: str, *, lock: bool = False) -> PaymentOrder | None:
        query = sa.select(payment_orders).where(payment_orders.c.id == order_id)
        if lock:
            query = query.with_for_update()
        return await self._load((await self._conn.execute(query)).mappings().first())

    async def by_out_trade_no(self, out_trade_no: str, *, lock: bool = False) -> PaymentOrder | None:
        order_id = (
            await self._conn.execute(
                sa.select(payment_attempts.c.order_id).where(payment_attempts.c.out_trade_no == out_trade_no)
            )
        ).scalar_one_or_none()
        return None if order_id is None else await self.get(str(order_id), lock=lock)

    async def by_refund(self, refund_id: str, *, lock: bool = False) -> PaymentOrder | None:
        order_id = (
            await self._conn.execute(sa.select(payment_refunds.c.order_id).where(payment_refunds.c.id == refund_id))
        ).scalar_one_or_none()
        return None if order_id is None else await self.get(str(order_id), lock=lock)

    async def save(self, before: PaymentOrder, after: PaymentOrder, *, now: datetime) -> None:
        if after.version == before.version:
            return
        result = await self._conn.execute(
            payment_orders.update()
            .where(payment_orders.c.id == after.id, payment_orders.c.version == before.version)
            .values(
                state=after.state.value,
                paid_out_trade_no=after.paid_out_trade_no,
                paid_at=after.paid_at,
                version=after.version,
                updated_at=now,
            )
        )
        if result.rowcount != 1:
            raise ConcurrentChangeError(f"order {after.id} changed under us")
        await self._write_children(after, before, now=now)

    async def _write_children(self, after: PaymentOrder, before: PaymentOrder, *, now: datetime) -> None:
        old_attempts = {a.out_trade_no: a for a in before.attempts}
        for seq, attempt in enumerate(after.attempts):
            old = old_attempts.get(attempt.out_trade_no)
            if old is None:
                await self._conn.execute(
                    payment_attempts.insert().values(
                        out_trade_no=attempt.out_trade_no,
                        order_id=after.id,
                        channel=attempt.channel,
                        state=attempt.state.value,
                        transaction_id=attempt.transaction_id,
                        seq=seq,
                        created_at=now,
                    )
                )
            elif old != attempt:
                await self._conn.execute(
                    payment_attempts.update()
                    .where(payment_attempts.c.out_trade_no == attempt.out_trade_no)
                    .values(state=attempt.state.value, transaction_id=attempt.transaction_id)
                )
        old_refunds = {r.id: r for r in before.refunds}
        for seq, refund in enumerate(after.refunds):
            prior = old_refunds.get(refund.id)
            if prior is None:
                await self._conn.execute(
                    payment_refunds.insert().values(
                        id=refund.id,
                        order_id=after.id,
                        out_refund_no=refund.out_refund_no,
                        out_trade_no=refund.out_trade_no,
                        amount_fen=refund.amount_fen,
                        reason=refund.reason,
                        state=refund.state.value,
                        failure=refund.failure,
                        seq=seq,
                        next_try_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                )
            elif prior != refund:
                values: dict[str, Any] = {"state": refund.state.value, "failure": refund.failure, "updated_at": now}
                if refund.state is RefundState.REQUESTED:
                    values["next_try_at"] = now
                await self._conn.execute(
                    payment_refunds.update().where(payment_refunds.c.id == refund.id).values(**values)
                )

    async def record_event(self, event: ChannelEvent) -> bool:
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    payment_events.insert().values(
                        channel=event.channel,
                        event_key=event.event_key[:128],
                        out_trade_no=event.out_trade_no,
                        kind=event.kind,
                        body=json.dumps(event.body, ensure_ascii=False, sort_keys=True, default=str),
                        received_at=event.received_at,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def mark_event_applied(self, channel: str, event_key: str, *, now: datetime) -> None:
        await self._conn.execute(
            payment_events.update()
            .where(payment_events.c.channel == channel, payment_events.c.event_key == event_key[:128])
            .values(applied_at=now)
        )

    async def due_for_expiry(self, *, now: datetime, limit: int) -> Sequence[str]:
        rows = await self._conn.execute(
            sa.select(payment_orders.c.id)
            .where(
                payment_orders.c.state.in_([OrderState.CREATED.value, OrderState.PAYING.value]),
                payment_orders.c.expires_at <= now,
            )
            .order_by(payment_orders.c.expires_at)
            .limit(limit)
        )
        return [str(r) for r in rows.scalars()]

    async def awaiting_payment(self, *, now: datetime, older_than: datetime, limit: int) -> Sequence[tuple[str, int]]:
        o = payment_orders.c
        due = sa.or_(
            sa.and_(o.next_query_at.is_(None), o.updated_at <= older_than),
            o.next_query_at <= now,
        )
        rows = await self._conn.execute(
            sa.select(o.id, o.query_tries)
            .where(o.state == OrderState.PAYING.value, due)
            .order_by(sa.func.coalesce(o.next_query_at, o.updated_at))
            .limit(limit)
        )
        return [(str(r.id), int(r.query_tries)) for r in rows]

    async def postpone_query(self, order_id: str, *, next_query_at: datetime, tries: int) -> None:
        await self._conn.execute(
            payment_orders.update()
            .where(payment_orders.c.id == order_id)
            .values(next_query_at=next_query_at, query_tries=tries)
        )

    async def refunds_to_submit(self, *, now: datetime, limit: int) -> Sequence[str]:
        rows = await self._conn.execute(
            sa.select(payment_refunds.c.id)
            .where(
                payment_refunds.c.state.in_([RefundState.REQUESTED.value, RefundState.PROCESSING.value]),
                payment_refunds.c.next_try_at <= now,
            )
            .order_by(payment_refunds.c.next_try_at)
            .limit(limit)
        )
        return [str(r) for r in rows.scalars()]

    async def set_refund_retry(self, refund_id: str, *, next_try_at: datetime | None, tries: int) -> None:
        await self._conn.execute(
            payment_refunds.update()
            .where(payment_refunds.c.id == refund_id)
            .values(next_try_at=next_try_at, tries=tries)
        )

    async def refund_tries(self, refund_id: str) -> int:
        value = (
            await self._conn.execute(sa.select(payment_refunds.c.tries).where(payment_refunds.c.id == refund_id))
        ).scalar_one_or_none()
        return int(value or 0)

    async def failed_refunds(self, *, limit: int) -> Sequence[tuple[str, str]]:
        rows = await self._conn.execute(
            sa.select(payment_refunds.c.order_id, payment_refunds.c.id)
            .where(payment_refunds.c.state == RefundState.FAILED.value)
            .order_by(payment_refunds.c.updated_at)
            .limit(limit)
        )
        return [(str(o), str(r)) for o, r in rows]


def _blank(order: PaymentOrder) -> dict[str, Any]:
    """The fields of ``order`` with no attempts or refunds (what "before" is for a new order)."""
    return {
        "id": order.id,
        "payable_type": order.payable_type,
        "payable_id": order.payable_id,
        "account_id": order.account_id,
        "description": order.description,
        "self_pay_fen": order.self_pay_fen,
        "insured_fen": order.insured_fen,
        "created_at": order.created_at,
        "expires_at": order.expires_at,
    }
