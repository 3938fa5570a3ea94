"""RFC 9457 problem+json for every error (DESIGN D7): ``type``, ``title``, ``status``, ``detail``, a stable
dotted ``code`` and a Chinese ``message`` the mini-program shows as is. 422 only for payload validation."""

from __future__ import annotations

import traceback
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.exceptions import ValidationException as LitestarValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from domain.kernel.errors import DomainError

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://errors.hsp.local/"
log = structlog.get_logger("bff.errors")

_HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("request.bad", "请求格式不正确"),
    401: ("auth.unauthenticated", "请先登录"),
    403: ("auth.forbidden", "您没有权限进行此操作"),
    404: ("not_found", "您要找的内容不存在"),
    405: ("request.method_not_allowed", "不支持此请求方式"),
    406: ("request.not_acceptable", "不支持请求的内容格式"),
    409: ("conflict", "当前状态不允许此操作，请刷新后重试"),
    413: ("request.too_large", "请求内容过大"),
    415: ("request.unsupported_media_type", "不支持的内容类型"),
    422: ("request.invalid", "请求参数有误"),
    429: ("rate_limited", "操作太频繁，请稍后再试"),
    500: ("internal.error", "系统繁忙，请稍后再试"),
    503: ("service.unavailable", "服务暂时不可用，请稍后再试"),
}


def problem(
    status: int,
    *,
    code: str,
    message: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail or message,
        "code": code,
        "message": message,
    }
    if request_id:
        body["requestId"] = request_id
    if extra:
        body.update(extra)
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers or {})


def _request_id(request: Request[Any, Any, Any]) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return str(value) if value else None


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        headers["Retry-After"] = str(int(retry_after))
    if exc.status >= 500:
        log.warning("domain_error", error_code=exc.code, status=exc.status)
    return problem(
        exc.status,
        code=exc.code,
        message=exc.message,
        title=exc.title,
        detail=exc.detail,
        headers=headers,
        extra=dict(exc.extra) if exc.extra else None,
        request_id=_request_id(request),
    )


def validation_handler(request: Request[Any, Any, Any], exc: LitestarValidationException) -> Response[dict[str, Any]]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            errors.append(
                {
                    "field": str(item.get("key") or ""),
                    "source": str(item.get("source") or "body"),
                    "detail": str(item.get("message") or ""),
                }
            )
    return problem(
        422,
        code="request.invalid",
        message="请求参数有误，请检查后重试",
        title="Invalid request",
        detail=str(exc.detail) if exc.detail else "payload validation failed",
        extra={"errors": errors},
        request_id=_request_id(request),
    )


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    if isinstance(exc, NotAuthorizedException):
        status = 401
    elif isinstance(exc, PermissionDeniedException):
        status = 403
    code, message = _HTTP_CODES.get(status, ("request.error", "请求无法处理"))
    headers = dict(exc.headers or {})
    if status >= 500:
        log.error("http_error", status=status)
    return problem(
        status,
        code=code,
        message=message,
        title=_title(status),
        detail=str(exc.detail) if exc.detail and status < 500 else message,
        headers=headers,
        request_id=_request_id(request),
    )


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/site-packages/" not in f.filename] or frames
    where = f"{ours[-1].filename.rsplit('/', 2)[-2:]}:{ours[-1].lineno}" if ours else "?"
    log.error("unhandled_error", error_type=type(exc).__name__, path=request.scope.get("path_template"), where=where)
    code, message = _HTTP_CODES[500]
    return problem(
        HTTP_500_INTERNAL_SERVER_ERROR,
        code=code,
        message=message,
        title="Internal server error",
        request_id=_request_id(request),
    )


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    DomainError: domain_error_handler,
    LitestarValidationException: validation_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}
