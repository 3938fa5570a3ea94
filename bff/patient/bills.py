"""Outpatient bills (诊间支付): a patient's unpaid bills at a hospital, a payment order for one of them (paid
through ``POST /api/v1/patient/payment-orders/{id}/pay``), and the account's bill payments with how their
settlement at the hospital went. Bills are health data: a restricted session sees none until the re-check."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post
from litestar.datastructures import State
from litestar.params import PathParameter, QueryParameter

from bff.auth.guards import current_principal, require_resident, require_unrestricted
from bff.services import billing_service
from domain.billing.model import BillPayment, BillPaymentState, BillStatus
from domain.billing.use_cases import BillOrder, PayableBill
from domain.payment.machine import OrderState

PatientId = Annotated[str, PathParameter(min_length=1, max_length=64)]
HospitalCode = Annotated[str, PathParameter(min_length=1, max_length=32)]
BillId = Annotated[str, PathParameter(min_length=1, max_length=64)]
Limit = Annotated[int, QueryParameter(ge=1, le=100, description="page size")]


class BillItemOut(msgspec.Struct, rename="camel"):
    code: str
    name: str
    category: str
    quantity: int
    unit_price_fen: int
    amount_fen: int


class BillOut(msgspec.Struct, rename="camel"):
    bill_id: str
    hospital_code: str
    title: str
    department: str
    doctor_name: str
    issued_at: datetime
    status: BillStatus
    self_pay_fen: int
    insured_fen: int
    total_fen: int
    items: list[BillItemOut]
    payment_state: BillPaymentState | None
    """A payment of this bill under way (``pending``), if any."""
    order_id: str | None
    """My open payment order for this bill: pay it rather than asking for a new one."""


class BillsOut(msgspec.Struct, rename="camel"):
    items: list[BillOut]


class BillOrderOut(msgspec.Struct, rename="camel"):
    order_id: str
    """Pay it with ``POST /api/v1/patient/payment-orders/{orderId}/pay``."""
    bill_payment_id: str
    bill_id: str
    description: str
    self_pay_fen: int
    insured_fen: int
    total_fen: int
    expires_at: datetime
    state: OrderState
    created: bool
    """False when the bill's open order was answered again."""


class BillPaymentOut(msgspec.Struct, rename="camel"):
    id: str
    order_id: str
    patient_id: str
    hospital_code: str
    bill_id: str
    title: str
    amount_fen: int
    state: BillPaymentState
    """``pending`` (paying or settling), ``settled``, ``refused`` (refund under way), ``refunded``, ``closed``
    (the order expired unpaid)."""
    created_at: datetime
    settled_at: datetime | None
    his_receipt_no: str | None
    refusal: str | None


class BillPaymentsOut(msgspec.Struct, rename="camel"):
    items: list[BillPaymentOut]


def bill_out(found: PayableBill) -> BillOut:
    bill = found.bill
    return BillOut(
        bill_id=bill.bill_id,
        hospital_code=bill.hospital_code,
        title=bill.title,
        department=bill.department,
        doctor_name=bill.doctor_name,
        issued_at=bill.issued_at,
        status=bill.status,
        self_pay_fen=bill.self_pay_fen,
        insured_fen=bill.insured_fen,
        total_fen=bill.total_fen,
        items=[
            BillItemOut(
                code=i.code,
                name=i.name,
                category=i.category,
                quantity=i.quantity,
                unit_price_fen=i.unit_price_fen,
                amount_fen=i.amount_fen,
            )
            for i in bill.items
        ],
        payment_state=found.payment_state,
        order_id=found.order_id,
    )


def bill_order_out(found: BillOrder) -> BillOrderOut:
    order = found.order
    return BillOrderOut(
        order_id=order.id,
        bill_payment_id=found.payment.id,
        bill_id=found.payment.bill_id,
        description=order.description,
        self_pay_fen=order.self_pay_fen,
        insured_fen=order.insured_fen,
        total_fen=order.total_fen,
        expires_at=order.expires_at,
        state=order.state,
        created=found.created,
    )


def bill_payment_out(payment: BillPayment) -> BillPaymentOut:
    return BillPaymentOut(
        id=payment.id,
        order_id=payment.order_id,
        patient_id=payment.patient_id,
        hospital_code=payment.hospital_code,
        bill_id=payment.bill_id,
        title=payment.title,
        amount_fen=payment.amount_fen,
        state=payment.state,
        created_at=payment.created_at,
        settled_at=payment.settled_at,
        his_receipt_no=payment.his_receipt_no,
        refusal=payment.refusal,
    )


@get(
    "/patients/{patient_id:str}/hospitals/{hospital_code:str}/bills",
    operation_id="patientBills",
    summary="A patient's unpaid outpatient bills at a hospital",
)
async def list_bills(
    state: State,
    request: Request[Any, Any, Any],
    patient_id: PatientId,
    hospital_code: HospitalCode,
) -> BillsOut:
    account_id = current_principal(request).subject
    found = await billing_service(state).unpaid_bills(account_id, patient_id, hospital_code)
    return BillsOut(items=[bill_out(b) for b in found])


@post(
    "/patients/{patient_id:str}/hospitals/{hospital_code:str}/bills/{bill_id:str}/payment-order",
    operation_id="patientBillPaymentOrder",
    summary="A payment order for one unpaid bill (the open one when asked again)",
    status_code=201,
)
async def bill_payment_order(
    state: State,
    request: Request[Any, Any, Any],
    patient_id: PatientId,
    hospital_code: HospitalCode,
    bill_id: BillId,
) -> BillOrderOut:
    account_id = current_principal(request).subject
    return bill_order_out(await billing_service(state).pay_bill(account_id, patient_id, hospital_code, bill_id))


@get("/bill-payments", operation_id="patientBillPayments", summary="My outpatient bill payments, newest first")
async def list_bill_payments(state: State, request: Request[Any, Any, Any], limit: Limit = 50) -> BillPaymentsOut:
    payments = await billing_service(state).payments_of(current_principal(request).subject, limit=limit)
    return BillPaymentsOut(items=[bill_payment_out(p) for p in payments])


bills_router = Router(
    path="/api/v1/patient",
    tags=["patient"],
    guards=[require_resident, require_unrestricted],
    security=[{"bearer": []}],
    route_handlers=[list_bills, bill_payment_order, list_bill_payments],
)
