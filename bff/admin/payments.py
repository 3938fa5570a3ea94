"""Operators: refunds that failed for good, and sending one again with the same refund number."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from bff.auth.guards import current_principal, require_staff
from bff.services import payment_service


class FailedRefundOut(msgspec.Struct, rename="camel"):
    order_id: str
    refund_id: str
    out_refund_no: str
    amount_fen: int
    reason: str
    failure: str | None
    payable_type: str
    payable_id: str


class FailedRefundsOut(msgspec.Struct, rename="camel"):
    items: list[FailedRefundOut]


class RetriedOut(msgspec.Struct, rename="camel"):
    refund_id: str
    state: str


@get("/payments/failed-refunds", operation_id="adminFailedRefunds", summary="Refunds that failed for good")
async def failed_refunds(state: State) -> FailedRefundsOut:
    rows = await payment_service(state).failed_refunds()
    return FailedRefundsOut(
        items=[
            FailedRefundOut(
                order.id, r.id, r.out_refund_no, r.amount_fen, r.reason, r.failure, order.payable_type, order.payable_id
            )
            for order, r in rows
        ]
    )


@post(
    "/payments/refunds/{refund_id:str}/retry",
    operation_id="adminRetryRefund",
    summary="Send a failed refund again (same refund number)",
    status_code=200,
)
async def retry_refund(
    state: State, request: Request[Any, Any, Any], refund_id: FromPath[Annotated[str, msgspec.Meta(max_length=80)]]
) -> RetriedOut:
    refund = await payment_service(state).retry_refund(f"staff:{current_principal(request).subject}", refund_id)
    return RetriedOut(refund_id=refund.id, state=refund.state.value)


payments_admin_router = Router(
    path="/api/v1/admin",
    tags=["admin"],
    guards=[require_staff("operator", "sysadmin")],
    security=[{"bearer": []}],
    route_handlers=[failed_refunds, retry_refund],
)
