"""Guards by principal kind, role and front end. 401 without a valid session, 403 for a wrong role (D7)."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from domain.kernel.errors import AuthenticationError, DomainError, ForbiddenError
from domain.kernel.principal import Principal, PrincipalKind


def current_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    st = connection.scope.get("state", {})
    principal = st.get("principal")
    if isinstance(principal, Principal):
        return principal
    error = st.get("auth_error")
    if isinstance(error, DomainError):
        raise error
    raise AuthenticationError("a valid access token is required")


def require_resident(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if current_principal(connection).kind is not PrincipalKind.RESIDENT:
        raise ForbiddenError("resident route", code="auth.wrong_audience")


def require_staff(*roles: str) -> Any:
    wanted = frozenset(roles)

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = current_principal(connection)
        if principal.kind is not PrincipalKind.STAFF:
            raise ForbiddenError("staff route", code="auth.wrong_audience")
        if wanted and not (wanted & principal.roles):
            raise ForbiddenError("missing role", code="auth.missing_role")

    return guard


def require_unrestricted(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Patient data stays closed to a restricted session (a dormant account, a phone rebound) until the
    real-name re-check passes (``POST /api/v1/patient/recheck``)."""
    from bff.auth.principal import SessionPrincipal

    principal = current_principal(connection)
    if isinstance(principal, SessionPrincipal) and principal.session is not None and principal.session.restriction:
        raise ForbiddenError(
            f"restricted session: {principal.session.restriction.value}",
            code="auth.recheck_required",
            message="为保护您的信息安全，请先完成实名信息核验",
        )
