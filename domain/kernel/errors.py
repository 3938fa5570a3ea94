"""Error categories with stable codes.

Every error the domain raises subclasses exactly one category below. The HTTP edge maps a category to a
status and renders problem+json with the error's stable dotted ``code`` and its Chinese ``message`` (shown
to residents as is). ``detail`` is for developers and operators and never carries personal data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class DomainError(Exception):
    """Base of every expected failure. Subclass a category, never this class directly."""

    status: ClassVar[int] = 400
    code: str = "error"
    message: str = "请求无法处理"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        message: str | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        if code is not None:
            self.code = code
        if message is not None:
            self.message = message
        self.detail = detail or self.message
        self.extra: dict[str, object] = dict(extra or {})
        super().__init__(f"{self.code}: {self.detail}")


class ValidationError(DomainError):
    """The input is well formed but breaks a business rule of shape (bad ID number, bad phone)."""

    status = 400
    code = "validation.invalid"
    message = "输入信息有误，请检查后重试"
    title = "Invalid input"


class AuthenticationError(DomainError):
    status = 401
    code = "auth.unauthenticated"
    message = "请先登录"
    title = "Unauthenticated"


class ForbiddenError(DomainError):
    status = 403
    code = "auth.forbidden"
    message = "您没有权限进行此操作"
    title = "Forbidden"


class NotFoundError(DomainError):
    status = 404
    code = "not_found"
    message = "您要找的内容不存在"
    title = "Not found"


class ConflictError(DomainError):
    """An illegal state transition or a uniqueness clash."""

    status = 409
    code = "conflict"
    message = "当前状态不允许此操作，请刷新后重试"
    title = "Conflict"


class RateLimitedError(DomainError):
    status = 429
    code = "rate_limited"
    message = "操作太频繁，请稍后再试"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1, **kwargs: object) -> None:
        super().__init__(detail, **kwargs)  # type: ignore[arg-type]
        self.retry_after = max(1, int(retry_after))


class UpstreamError(DomainError):
    """An outside system (HIS, payment channel, platform) failed or is unavailable."""

    status = 503
    code = "upstream.unavailable"
    message = "服务暂时不可用，请稍后再试"
    title = "Upstream unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None, **kwargs: object) -> None:
        super().__init__(detail, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class UnavailableError(DomainError):
    """One of our own dependencies (Redis for a fail-closed check, the database) is unavailable."""

    status = 503
    code = "service.unavailable"
    message = "系统繁忙，请稍后再试"
    title = "Service unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = 5, **kwargs: object) -> None:
        super().__init__(detail, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after
