"""The bill-payments repository on SQLAlchemy Core. The partial unique index ``uq_bill_payments_live`` keeps one
live (pending or settled) payment per bill: a write that would make a second answers False, inside a savepoint
so that the caller's transaction goes on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.billing.model import LIVE_BILL_PAYMENT_STATES, BillPayment, BillPaymentState
from domain.payment.machine import OrderState
from persistence.billing.tables import bill_payments
from persistence.payment.tables import payment_orders

_LIVE = [s.value for s in LIVE_BILL_PAYMENT_STATES]


def _payment(row: RowMapping) -> BillPayment:
    return BillPayment(
        id=row["id"],
        order_id=row["order_id"],
        account_id=row["account_id"],
        patient_id=row["patient_id"],
        person_id=row["person_id"],
        hospital_code=row["hospital_code"],
        bill_id=row["bill_id"],
        patid=row["patid"],
        title=row["title"],
        amount_fen=int(row["amount_fen"]),
        state=BillPaymentState(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        his_receipt_no=row["his_receipt_no"],
        refusal=row["refusal"],
        settled_at=row["settled_at"],
    )


class SqlBillPaymentRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def _guarded(self, statement: Any) -> bool:
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(statement)
        except IntegrityError:
            return False
        return True

    async def add(self, payment: BillPayment) -> bool:
        return await self._guarded(
            bill_payments.insert().values(
                id=payment.id,
                order_id=payment.order_id,
                account_id=payment.account_id,
                patient_id=payment.patient_id,
                person_id=payment.person_id,
                hospital_code=payment.hospital_code,
                bill_id=payment.bill_id,
                patid=payment.patid,
                title=payment.title[:128],
                amount_fen=payment.amount_fen,
                state=payment.state.value,
                his_receipt_no=payment.his_receipt_no,
                refusal=payment.refusal,
                created_at=payment.created_at,
                settled_at=payment.settled_at,
                updated_at=payment.updated_at,
            )
        )

    async def _one(self, where: Any, *, lock: bool) -> BillPayment | None:
        query = sa.select(bill_payments).where(where)
        if lock:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _payment(row)

    async def get(self, payment_id: str, *, lock: bool = False) -> BillPayment | None:
        return await self._one(bill_payments.c.id == payment_id, lock=lock)

    async def by_order(self, order_id: str, *, lock: bool = False) -> BillPayment | None:
        return await self._one(bill_payments.c.order_id == order_id, lock=lock)

    async def live_for_bill(self, hospital_code: str, bill_id: str) -> BillPayment | None:
        found = await self.live_for_bills(hospital_code, [bill_id])
        return found[0] if found else None

    async def live_for_bills(self, hospital_code: str, bill_ids: Sequence[str]) -> Sequence[BillPayment]:
        if not bill_ids:
            return []
        rows = await self._conn.execute(
            sa.select(bill_payments).where(
                bill_payments.c.hospital_code == hospital_code,
                bill_payments.c.bill_id.in_(list(bill_ids)),
                bill_payments.c.state.in_(_LIVE),
            )
        )
        return [_payment(r) for r in rows.mappings()]

    async def save(self, payment: BillPayment) -> bool:
        return await self._guarded(
            bill_payments.update()
            .where(bill_payments.c.id == payment.id)
            .values(
                state=payment.state.value,
                his_receipt_no=payment.his_receipt_no,
                refusal=payment.refusal,
                settled_at=payment.settled_at,
                updated_at=payment.updated_at,
            )
        )

    async def of_account(self, account_id: str, *, limit: int) -> Sequence[BillPayment]:
        rows = await self._conn.execute(
            sa.select(bill_payments)
            .where(bill_payments.c.account_id == account_id)
            .order_by(bill_payments.c.created_at.desc(), bill_payments.c.id.desc())
            .limit(limit)
        )
        return [_payment(r) for r in rows.mappings()]

    async def awaiting_settlement(self, *, older_than: datetime, limit: int) -> Sequence[str]:
        rows = await self._conn.execute(
            sa.select(bill_payments.c.order_id)
            .join(payment_orders, payment_orders.c.id == bill_payments.c.order_id)
            .where(
                bill_payments.c.updated_at < older_than,
                sa.or_(
                    sa.and_(
                        bill_payments.c.state == BillPaymentState.PENDING.value,
                        payment_orders.c.state.in_((OrderState.PAID.value, OrderState.PAID_LATE.value)),
                    ),
                    sa.and_(
                        bill_payments.c.state == BillPaymentState.CLOSED.value,
                        payment_orders.c.state == OrderState.PAID_LATE.value,
                    ),
                ),
            )
            .order_by(bill_payments.c.updated_at)
            .limit(limit)
        )
        return [str(v) for v in rows.scalars()]
