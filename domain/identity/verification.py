"""Real-name verification (实名认证): the port to a verification service and its value types.

Three checks against the authorities, each answering a ``VerificationResult``:

* ``verify_id``: name + citizen ID number (two factors, the public-security ID registry);
* ``verify_phone``: name + citizen ID number + mobile number (three factors, the carrier's real-name records);
* the face check: ``start_face`` opens a session the resident completes on the provider's page (liveness and
  a one-to-one comparison with the registry photo), ``face_result`` fetches the outcome afterwards.

An outcome is the provider's verdict on the data; a provider that cannot give one (down, throttled, the
registry unavailable) raises instead. Names, ID numbers and phone numbers never appear in an error, a log
line or a cache key: ``verification_cache_key`` turns them into an HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol

from domain.kernel.errors import ConflictError, RateLimitedError, UpstreamError

MIN_CACHE_SECRET_BYTES: Final = 16


class VerificationOutcome(StrEnum):
    MATCH = "match"
    """Every factor agrees with the authority's record (for the face check: the person is who they claim)."""
    MISMATCH = "mismatch"
    """The authority has a record and the factors disagree with it (or the face check failed)."""
    NO_RECORD = "no_record"
    """The authority has no record to compare with (unknown ID number, phone without real-name records)."""
    INVALID_INPUT = "invalid_input"
    """The data is malformed for the authority (bad check digit, illegal name or phone); nothing was compared."""


@dataclass(frozen=True, slots=True)
class VerificationResult:
    outcome: VerificationOutcome
    provider: str
    reference: str | None
    """The provider's id of the check (request id, face session token) for audit and support; no personal data."""
    checked_at: datetime
    """Aware UTC."""

    @property
    def passed(self) -> bool:
        return self.outcome is VerificationOutcome.MATCH


@dataclass(frozen=True, slots=True)
class FaceSession:
    """A face check the resident completes on the provider's page at ``url``; ``token`` fetches the result."""

    token: str
    url: str
    expires_at: datetime
    """Aware UTC: after this the resident can no longer complete the check and a new session is needed."""


class VerificationUnavailableError(UpstreamError):
    """The verification service, or the registry behind it, failed or could not be reached."""

    code = "verification.unavailable"
    message = "实名认证服务暂时不可用，请稍后再试"


class VerificationRateLimitedError(RateLimitedError):
    """The provider throttled us (request rate), or the daily limit of checks was reached."""

    code = "verification.rate_limited"
    message = "实名认证操作太频繁，请稍后再试"


class FaceCheckPendingError(ConflictError):
    """The resident has not finished the face check of this session yet."""

    code = "verification.face_pending"
    message = "人脸核验尚未完成，请完成后再试"


class FaceSessionInvalidError(ConflictError):
    """The face session is unknown to the provider or has expired; a new one must be started."""

    code = "verification.face_session_invalid"
    message = "人脸核验已失效，请重新发起"


class RealNameVerifier(Protocol):
    """A real-name verification service. Every method raises ``VerificationUnavailableError`` or
    ``VerificationRateLimitedError`` when it cannot give a verdict."""

    async def verify_id(self, name: str, id_number: str) -> VerificationResult:
        """Name and citizen ID number against the ID registry."""
        ...

    async def verify_phone(self, name: str, id_number: str, phone: str) -> VerificationResult:
        """Name, citizen ID number and mainland mobile number against the carrier's real-name records."""
        ...

    async def start_face(self, name: str, id_number: str, *, redirect_url: str | None) -> FaceSession:
        """Open a face check for the person; ``redirect_url`` is where the provider's page sends the resident
        back when done (the provider adds the session token)."""
        ...

    async def face_result(self, token: str) -> VerificationResult:
        """The outcome of a face session. Raises ``FaceCheckPendingError`` while the resident has not finished
        and ``FaceSessionInvalidError`` for an unknown or expired session."""
        ...


def verification_cache_key(kind: str, *parts: str, secret: bytes) -> str:
    """The hex HMAC-SHA256 under ``secret`` of ``kind`` and ``parts``: a cache key that identifies a check
    without containing the name, ID number or phone behind it.

    Each field is length-prefixed, so different splits of the same characters (``("ab", "c")`` and
    ``("a", "bc")``) give different keys. Fields are used as given: normalise them first (trim, upper-case
    the ID number's check character) so that equal data gives equal keys.
    """
    if len(secret) < MIN_CACHE_SECRET_BYTES:
        raise ValueError(f"the cache-key secret needs at least {MIN_CACHE_SECRET_BYTES} bytes")
    if not kind:
        raise ValueError("a cache key needs a kind")
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for field in (kind, *parts):
        encoded = field.encode("utf-8")
        mac.update(len(encoded).to_bytes(4, "big"))
        mac.update(encoded)
    return mac.hexdigest()
