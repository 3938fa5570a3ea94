"""Account rules as configuration (SEC-A-02..05): every number here is a convention, configurable."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.account.model import AccountKind, Audience, Session, StaffRole
from domain.kernel.errors import AuthenticationError, ValidationError


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """SEC-A-04: idle and absolute timeouts per kind of account [C]."""

    resident_idle: timedelta = timedelta(minutes=30)
    resident_absolute: timedelta = timedelta(days=30)
    staff_idle: timedelta = timedelta(minutes=15)
    staff_absolute: timedelta = timedelta(hours=12)
    access_token_ttl: timedelta = timedelta(minutes=10)
    touch_every: timedelta = timedelta(seconds=60)
    """How stale the stored last-seen time may get before a request writes it."""

    def idle(self, kind: AccountKind) -> timedelta:
        return self.staff_idle if kind is AccountKind.STAFF else self.resident_idle

    def absolute(self, kind: AccountKind) -> timedelta:
        return self.staff_absolute if kind is AccountKind.STAFF else self.resident_absolute


class SessionExpiredError(AuthenticationError):
    code = "auth.session_expired"
    message = "登录已过期，请重新登录"


class SessionRevokedError(AuthenticationError):
    code = "auth.session_revoked"
    message = "您已退出登录，请重新登录"


def check_session(session: Session | None, *, now: datetime, last_seen: datetime | None = None) -> Session:
    """A session is usable when it exists, is not revoked, and neither its idle nor its absolute time ran out."""
    if session is None:
        raise SessionRevokedError("no such session")
    if session.revoked_at is not None:
        raise SessionRevokedError(f"revoked: {session.revoke_reason or 'logout'}")
    if now >= session.expires_at:
        raise SessionExpiredError("absolute lifetime over")
    seen = max(session.last_seen_at, last_seen or session.last_seen_at)
    if (now - seen).total_seconds() > session.idle_seconds:
        raise SessionExpiredError("idle timeout")
    return session


def audience_allowed(audience: Audience, kind: AccountKind) -> bool:
    return audience.kind is kind


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """SEC-A-02 [C]: length, three of four classes, not the login name, not common, history, expiry."""

    min_length: int = 12
    min_classes: int = 3
    history: int = 5
    max_age: timedelta = timedelta(days=90)
    common: frozenset[str] = field(
        default_factory=lambda: frozenset(
            {
                "password",
                "passw0rd",
                "password1",
                "p@ssw0rd",
                "p@ssword",
                "12345678",
                "123456789",
                "1234567890",
                "qwertyuiop",
                "qwerty123",
                "admin123",
                "administrator",
                "welcome1",
                "iloveyou",
                "abc123456",
                "a1b2c3d4",
                "11111111",
                "88888888",
                "66666666",
                "woaini1314",
                "zhangwei",
                "qazwsxedc",
                "1qaz2wsx",
                "letmein1",
                "changeme",
            }
        )
    )


class WeakPasswordError(ValidationError):
    code = "auth.password_weak"
    message = "密码不符合安全要求：至少12位，包含大写字母、小写字母、数字、符号中的三类，且不能包含账号名"


class PasswordReusedError(ValidationError):
    code = "auth.password_reused"
    message = "新密码不能与最近使用过的密码相同"


def check_password_strength(password: str, *, login_name: str, policy: PasswordPolicy) -> None:
    """Raises WeakPasswordError with a reason a person can act on."""
    if len(password) < policy.min_length:
        raise WeakPasswordError(f"shorter than {policy.min_length}")
    classes = sum(
        [
            any(c.isupper() for c in password),
            any(c.islower() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        ]
    )
    if classes < policy.min_classes:
        raise WeakPasswordError(f"only {classes} character classes")
    lowered = password.lower()
    if login_name and login_name.lower() in lowered:
        raise WeakPasswordError("contains the login name")
    if lowered in policy.common or re.sub(r"[^a-z0-9]", "", lowered) in policy.common:
        raise WeakPasswordError("a common password")


def password_expired(changed_at: datetime | None, *, now: datetime, policy: PasswordPolicy) -> bool:
    return changed_at is None or now - changed_at > policy.max_age


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """SEC-A-03 [C]: 5 failures within 15 minutes lock the account for 30 minutes."""

    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lock_for: timedelta = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class SmsCodePolicy:
    """SEC-A-03 [C]: 6 digits, valid 5 minutes, 5 attempts, one send per 60 s per phone, daily caps."""

    length: int = 6
    ttl: timedelta = timedelta(minutes=5)
    max_attempts: int = 5
    resend_after: timedelta = timedelta(seconds=60)
    daily_per_phone: int = 10
    daily_per_ip: int = 50
    captcha_after_sends: int = 3
    """Sends to one phone in a day after which a CAPTCHA is required."""


@dataclass(frozen=True, slots=True)
class AccountPolicy:
    max_dormant: timedelta = timedelta(days=180)
    """A phone login or join onto an account unused this long opens no patient data until a re-check."""
    staff_activation_ttl: timedelta = timedelta(hours=24)
    staff_roles_by_operator: frozenset[StaffRole] = frozenset(
        {StaffRole.DOCTOR, StaffRole.PHARMACIST, StaffRole.OPERATOR}
    )


_PHONE = re.compile(r"^1[3-9]\d{9}$")


class InvalidPhoneError(ValidationError):
    code = "auth.phone_invalid"
    message = "请输入正确的11位手机号码"


def normalise_phone(text: str) -> str:
    """A mainland mobile number as 11 digits; accepts full-width digits, spaces, dashes and +86."""
    value = unicodedata.normalize("NFKC", text).strip().replace(" ", "").replace("-", "")
    if value.startswith("+86"):
        value = value[3:]
    elif value.startswith("0086"):
        value = value[4:]
    elif value.startswith("86") and len(value) == 13:
        value = value[2:]
    if not _PHONE.match(value):
        raise InvalidPhoneError("not a mainland mobile number")
    return value


def roles_of(values: frozenset[StaffRole]) -> frozenset[str]:
    return frozenset(r.value for r in values)
