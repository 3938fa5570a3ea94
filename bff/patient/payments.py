"""Paying a payment order with WeChat Pay or Alipay: the signed client parameters for ``wx.requestPayment``,
``my.tradePay`` or the app SDKs. The front end's "paid" is never trusted: the channel's notification (or our
query) decides."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from bff.auth.guards import current_principal, require_resident
from bff.services import payment_service
from domain.payment.machine import OrderState, PaymentOrder

OrderId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class PayIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    channel: Annotated[str, msgspec.Meta(pattern="^(wechat|alipay)$", examples=["wechat"])]
    app_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    """The mini-program paying (its appid); omitted from the patient app."""


class PayOut(msgspec.Struct, rename="camel"):
    order_id: str
    channel: str
    client_params: dict[str, Any]
    """For ``wx.requestPayment`` (timeStamp, nonceStr, package, signType, paySign), ``my.tradePay``
    (tradeNO) or the app SDKs."""


class OrderOut(msgspec.Struct, rename="camel"):
    id: str
    state: OrderState
    description: str
    self_pay_fen: int
    insured_fen: int
    total_fen: int
    refunded_fen: int
    expires_at: datetime
    paid_at: datetime | None


def order_out(order: PaymentOrder) -> OrderOut:
    return OrderOut(
        id=order.id,
        state=order.state,
        description=order.description,
        self_pay_fen=order.self_pay_fen,
        insured_fen=order.insured_fen,
        total_fen=order.total_fen,
        refunded_fen=order.refunded_fen,
        expires_at=order.expires_at,
        paid_at=order.paid_at,
    )


@get("/payment-orders/{order_id:str}", operation_id="patientPaymentOrder", summary="One of my payment orders")
async def get_order(state: State, request: Request[Any, Any, Any], order_id: FromPath[OrderId]) -> OrderOut:
    return order_out(await payment_service(state).order_for(current_principal(request).subject, order_id))


@post(
    "/payment-orders/{order_id:str}/pay",
    operation_id="patientPay",
    summary="Pay with WeChat Pay or Alipay: the signed client parameters",
    status_code=200,
)
async def pay(
    state: State, request: Request[Any, Any, Any], order_id: FromPath[OrderId], data: JSONBody[PayIn]
) -> PayOut:
    principal = current_principal(request)
    service = payment_service(state)
    from_app = principal.audience == "patient-app"
    payer = await service.payer(principal.subject, data.channel, app_id=data.app_id, app=from_app)
    params = await service.pay(principal.subject, order_id, data.channel, payer)
    return PayOut(order_id=order_id, channel=data.channel, client_params=dict(params))


payments_router = Router(
    path="/api/v1/patient",
    tags=["patient"],
    guards=[require_resident],
    security=[{"bearer": []}],
    route_handlers=[get_order, pay],
)
