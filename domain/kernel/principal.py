"""Who is calling: resolved from the access token by the authentication port."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class PrincipalKind(StrEnum):
    RESIDENT = "resident"
    STAFF = "staff"


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    """The account id (resident or staff)."""
    kind: PrincipalKind
    session_id: str
    audience: str
    """The front end the token was issued for (wechat-mp, alipay-mp, patient-app, staff-app)."""
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def scope_key(self) -> str:
        return f"{self.kind.value}:{self.subject}"


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal:
        """Verify an access token and its live session; raises AuthenticationError otherwise."""
        ...
