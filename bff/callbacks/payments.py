"""Payment notifications from WeChat Pay and Alipay, answered in each channel's own form.

WeChat Pay wants 200/204 without a body once the notification is durably handled and a 4xx/5xx with
``{"code": "FAIL", "message": "失败"}`` otherwise (it retries); Alipay wants the plain text ``success`` and
retries on anything else (protocols §2.5, §3.5). The answer is sent only after the payment service committed.
"""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, post
from litestar.datastructures import State

from bff.services import payment_service
from domain.kernel.errors import DomainError

WECHAT_FAIL = {"code": "FAIL", "message": "失败"}


def _source_ip(request: Request[Any, Any, Any]) -> str | None:
    ip = request.scope.get("state", {}).get("client_ip")
    return str(ip) if ip else None


@post(
    "/callbacks/wechat-pay",
    operation_id="callbackWechatPay",
    tags=["callbacks"],
    summary="WeChat Pay v3 notifications (payments and refunds)",
    description="Verified (signature, 300 s window, probes refused), decrypted, stored once and applied at most "
    "once; 204 after commit, 4xx `{code: FAIL}` for anything refused (audited), 503 when we cannot handle it now.",
    status_code=200,
)
async def wechat_pay_notification(state: State, request: Request[Any, Any, Any]) -> Response[Any]:
    body = await request.body()
    try:
        await payment_service(state).receive_notice(
            "wechat", dict(request.headers), body, source_ip=_source_ip(request)
        )
    except DomainError as exc:
        return Response(WECHAT_FAIL, status_code=exc.status if exc.status >= 500 else 400, media_type=MediaType.JSON)
    return Response(None, status_code=204)


@post(
    "/callbacks/alipay",
    operation_id="callbackAlipay",
    tags=["callbacks"],
    summary="Alipay trade_status_sync notifications",
    description="The form Alipay posts, verified under the Alipay key, checked for our app and seller and against "
    "the order, stored once, applied at most once; `success` after commit, `fail` otherwise (Alipay retries).",
    status_code=200,
)
async def alipay_notification(state: State, request: Request[Any, Any, Any]) -> Response[str]:
    body = await request.body()
    try:
        await payment_service(state).receive_notice(
            "alipay", dict(request.headers), body, source_ip=_source_ip(request)
        )
    except DomainError as exc:
        return Response("fail", status_code=exc.status if exc.status >= 500 else 400, media_type=MediaType.TEXT)
    return Response("success", status_code=200, media_type=MediaType.TEXT)
