"""Patient rules as configuration (SEC-P-04, SEC-A-05; the limits are platform policy [C])."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class PatientPolicy:
    max_patients: int = 5
    """Patients per account, pending ones included (platform policy [C])."""
    max_self: int = 1
    adult_age: int = 14
    """From this age a person added by someone else must confirm; below it a guardian consents (PIPL Art. 31)."""
    consent_version: str = "2026-11"
    """The privacy notice and separate health-data consent the front ends show; an older version is refused."""
    confirm_code_ttl: timedelta = timedelta(minutes=10)
    confirm_code_attempts: int = 5
    confirm_resend_seconds: int = 60
    step_up_ttl: timedelta = timedelta(minutes=5)
    """How long a passed step-up check opens the sensitive actions of SEC-A-05."""
    step_up_code_ttl: timedelta = timedelta(minutes=5)
    step_up_code_attempts: int = 5
    verification_cache_ttl: timedelta = timedelta(days=30)
    """How long a registry match is reused for the same name and number (only matches are cached)."""
    verifications_per_account_day: int = 20
    """Registry checks one account may cause per day: each costs money and could probe the registry."""
    earliest_birth_year: int = 1900
