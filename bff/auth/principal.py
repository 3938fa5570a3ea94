"""The principal the edge builds from an access token, carrying the live session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar.connection import ASGIConnection

from bff.auth.guards import current_principal
from bff.auth.tokens import AccessTokens, TokenInvalidError
from domain.account.model import Session
from domain.account.use_cases import AccountService
from domain.kernel.principal import Principal, PrincipalKind


@dataclass(frozen=True, slots=True)
class SessionPrincipal(Principal):
    session: Session | None = field(default=None, compare=False, repr=False)


class SessionAuthenticator:
    """Implements the Authenticator port: verify the JWT, then the live session it names."""

    def __init__(self, tokens: AccessTokens, accounts: AccountService) -> None:
        self._tokens = tokens
        self._accounts = accounts

    async def authenticate(self, token: str) -> Principal:
        verified = self._tokens.verify(token)
        session = await self._accounts.authenticate(verified.session_id)
        if session.account_id != verified.subject or session.audience is not verified.audience:
            raise TokenInvalidError("token does not match its session")
        return SessionPrincipal(
            subject=session.account_id,
            kind=PrincipalKind(session.kind.value),
            session_id=session.id,
            audience=session.audience.value,
            roles=session.roles,
            session=session,
        )


def current_session(connection: ASGIConnection[Any, Any, Any, Any]) -> Session:
    principal = current_principal(connection)
    if not isinstance(principal, SessionPrincipal) or principal.session is None:
        raise TokenInvalidError("no session behind this principal")
    return principal.session
