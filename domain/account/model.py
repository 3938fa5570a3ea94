"""Accounts and sessions (DESIGN D4, D6). An account is who logs in; a patient (later) is a person."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class AccountKind(StrEnum):
    RESIDENT = "resident"
    STAFF = "staff"


class Provider(StrEnum):
    WECHAT = "wechat"
    ALIPAY = "alipay"
    PHONE = "phone"


class Audience(StrEnum):
    """The front end a session was opened from; access tokens are bound to it."""

    WECHAT_MP = "wechat-mp"
    ALIPAY_MP = "alipay-mp"
    PATIENT_APP = "patient-app"
    STAFF_APP = "staff-app"

    @property
    def kind(self) -> AccountKind:
        return AccountKind.STAFF if self is Audience.STAFF_APP else AccountKind.RESIDENT


class StaffRole(StrEnum):
    DOCTOR = "doctor"
    PHARMACIST = "pharmacist"
    OPERATOR = "operator"
    SYSTEM_ADMIN = "sysadmin"
    SECURITY_ADMIN = "secadmin"
    AUDIT_ADMIN = "auditadmin"


PRIVILEGED_ROLES = frozenset({StaffRole.SYSTEM_ADMIN, StaffRole.SECURITY_ADMIN, StaffRole.AUDIT_ADMIN})


class StaffStatus(StrEnum):
    PENDING = "pending"
    """Created; waits for the holder to set a password and enrol TOTP with the one-time token."""
    ACTIVE = "active"
    DISABLED = "disabled"


class Restriction(StrEnum):
    """Why a resident session opens no patient data until a real-name re-check passes."""

    DORMANT_ACCOUNT = "dormant_account"
    PHONE_REBOUND = "phone_rebound"


@dataclass(frozen=True, slots=True)
class Identity:
    provider: Provider
    app_id: str
    """The mini-program's appid for WeChat and Alipay; empty for the phone."""
    subject: str
    """openid, Alipay user_id/open_id, or the phone's blind index."""
    union_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResidentAccount:
    id: str
    created_at: datetime
    last_active_at: datetime
    phone_index: str | None = None
    phone_cipher: str | None = field(default=None, repr=False)
    phone_bound_at: datetime | None = None
    merged_into: str | None = None


@dataclass(frozen=True, slots=True)
class PractitionerLink:
    hospital_code: str
    practitioner_id: str
    roles: frozenset[StaffRole]


@dataclass(frozen=True, slots=True)
class StaffAccount:
    id: str
    login_name: str
    display_name: str
    roles: frozenset[StaffRole]
    status: StaffStatus
    created_at: datetime
    password_hash: str | None = field(default=None, repr=False)
    password_changed_at: datetime | None = None
    password_history: tuple[str, ...] = field(default=(), repr=False)
    totp_cipher: str | None = field(default=None, repr=False)
    activation_hash: str | None = field(default=None, repr=False)
    activation_expires_at: datetime | None = None
    locked_until: datetime | None = None
    last_login_at: datetime | None = None
    links: tuple[PractitionerLink, ...] = ()


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    account_id: str
    kind: AccountKind
    audience: Audience
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    """The absolute end of the session."""
    idle_seconds: int
    roles: frozenset[str] = frozenset()
    restriction: Restriction | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    device: str | None = None
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    session_id: str
    generation: int
    token_hash: str
    expires_at: datetime
    used_at: datetime | None = None
