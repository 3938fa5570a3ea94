"""Ports to the login providers: WeChat mini-program, Alipay mini-program, SMS."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from domain.account.model import (
    Identity,
    PractitionerLink,
    Provider,
    RefreshGrant,
    ResidentAccount,
    Restriction,
    Session,
    StaffAccount,
)
from domain.kernel.errors import ConflictError, UpstreamError, ValidationError


class IdentityRaceError(ConflictError):
    """Two first logins of one identity raced; the loser retries and finds the winner's account."""

    code = "account.identity_race"


class LoginCodeError(ValidationError):
    """The provider refused the login code: invalid, expired or already used."""

    code = "auth.login_code_invalid"
    message = "登录凭证无效或已过期，请重新登录"


class ProviderRateLimitedError(UpstreamError):
    code = "auth.provider_rate_limited"
    message = "登录过于频繁，请稍后再试"


class ProviderUnavailableError(UpstreamError):
    code = "auth.provider_unavailable"
    message = "登录服务暂时不可用，请稍后再试"


class ProviderRefusedUserError(ValidationError):
    """The provider blocks this user (WeChat 40226 high-risk user)."""

    code = "auth.provider_refused_user"
    message = "当前账号存在风险，暂时无法登录"


@dataclass(frozen=True, slots=True)
class WechatSession:
    openid: str
    session_key: str = field(repr=False)
    """Never leaves the server."""
    unionid: str | None = None


class WechatMiniProgram(Protocol):
    """WeChat mini-program server APIs for one app id (protocols: code2Session, stable_token,
    getuserphonenumber). Raises LoginCodeError (40029, 40163), ProviderRateLimitedError (45011),
    ProviderRefusedUserError (40226), ProviderUnavailableError (-1, transport failures)."""

    @property
    def appid(self) -> str: ...

    async def code_to_session(self, code: str) -> WechatSession: ...

    async def phone_number(self, code: str, *, openid: str | None = None) -> str:
        """The verified phone (purePhoneNumber, digits only) behind a getPhoneNumber button code."""
        ...


@dataclass(frozen=True, slots=True)
class AlipayIdentity:
    user_id: str | None
    """``2088…`` in the legacy user-id mode."""
    open_id: str | None
    """In OpenID mode (apps switched since 2023)."""
    union_id: str | None = None

    @property
    def subject(self) -> str:
        value = self.open_id or self.user_id
        if not value:
            raise ValueError("an Alipay identity has a user_id or an open_id")
        return value


class AlipayMiniProgram(Protocol):
    """``alipay.system.oauth.token``: authCode -> user. Raises LoginCodeError (40002 isv.code-invalid),
    ProviderUnavailableError (20000, transport failures, a response whose signature does not verify)."""

    @property
    def app_id(self) -> str: ...

    async def exchange_auth_code(self, auth_code: str) -> AlipayIdentity: ...


@dataclass(frozen=True, slots=True)
class SmsReceipt:
    provider: str
    message_id: str


class SmsRejectedError(ValidationError):
    """The provider refused this message for good (illegal number, blacklisted, daily limit per number)."""

    code = "sms.rejected"
    message = "短信发送失败，请确认手机号码是否正确"


class SmsSender(Protocol):
    """Sends one templated SMS. Raises SmsRejectedError (final for this number) or
    ProviderUnavailableError (transient: another provider may be tried)."""

    @property
    def provider(self) -> str: ...

    async def send(self, phone: str, template: str, params: Mapping[str, str]) -> SmsReceipt:
        """``phone`` is 11 mainland digits; ``template`` is our template name, mapped to the provider's own
        template code and sign name by configuration; ``params`` in the template's order."""
        ...


class PasswordHasher(Protocol):
    """A slow, salted password hash (argon2id)."""

    def hash(self, password: str) -> str: ...

    def verify(self, hashed: str, password: str) -> bool: ...

    def needs_rehash(self, hashed: str) -> bool: ...


class TotpVerifier(Protocol):
    """RFC 6238 one-time codes: the cryptographic second factor of every staff login (SEC-A-05)."""

    def new_secret(self) -> str: ...

    def provisioning_uri(self, secret: str, *, account_name: str) -> str: ...

    def matching_step(self, secret: str, code: str, *, now: datetime) -> int | None:
        """The time step ``code`` belongs to (allowing one step of drift), or None."""
        ...


class CaptchaVerifier(Protocol):
    async def verify(self, token: str, *, client_ip: str) -> bool: ...


class AccountRepository(Protocol):
    # residents
    async def resident_by_identity(self, provider: Provider, app_id: str, subject: str) -> ResidentAccount | None: ...

    async def resident_by_phone(self, phone_index: str) -> ResidentAccount | None: ...

    async def resident(self, account_id: str) -> ResidentAccount | None: ...

    async def add_resident(self, account: ResidentAccount) -> None: ...

    async def add_identity(self, account_id: str, identity: Identity, *, now: datetime) -> None: ...

    async def identities(self, account_id: str) -> Sequence[Identity]: ...

    async def move_identities(self, from_account: str, to_account: str) -> int: ...

    async def set_resident_phone(
        self, account_id: str, *, phone_index: str | None, phone_cipher: str | None, now: datetime
    ) -> None: ...

    async def mark_merged(self, account_id: str, into: str) -> None: ...

    async def touch_resident(self, account_id: str, *, now: datetime) -> None: ...

    # staff
    async def staff_by_login(self, login_name: str, *, for_update: bool = False) -> StaffAccount | None: ...

    async def staff(self, account_id: str, *, for_update: bool = False) -> StaffAccount | None: ...

    async def add_staff(self, account: StaffAccount) -> None: ...

    async def save_staff(self, account: StaffAccount) -> None: ...

    async def add_login_failure(self, account_id: str, *, now: datetime) -> None: ...

    async def login_failures_since(self, account_id: str, since: datetime) -> int: ...

    async def clear_login_failures(self, account_id: str) -> None: ...

    async def claim_totp_step(self, account_id: str, step: int) -> bool:
        """Record the last TOTP step used; False when ``step`` is not newer (a replayed code)."""
        ...

    async def list_staff(self, *, after: str | None, limit: int) -> Sequence[StaffAccount]: ...

    async def replace_links(self, staff_id: str, links: Sequence[PractitionerLink]) -> None: ...

    # sessions
    async def add_session(self, session: Session) -> None: ...

    async def session(self, session_id: str) -> Session | None: ...

    async def touch_session(self, session_id: str, *, now: datetime) -> None: ...

    async def revoke_session(self, session_id: str, *, now: datetime, reason: str) -> bool: ...

    async def revoke_account_sessions(
        self, account_id: str, *, now: datetime, reason: str, keep: str | None = None
    ) -> list[str]: ...

    async def live_sessions(self, account_id: str, *, now: datetime) -> Sequence[Session]: ...

    async def set_session_restriction(self, session_id: str, restriction: Restriction | None) -> None: ...

    # refresh grants
    async def add_grant(self, grant: RefreshGrant) -> None: ...

    async def grant_by_hash(self, token_hash: str, *, for_update: bool = True) -> RefreshGrant | None: ...

    async def use_grant(self, token_hash: str, *, now: datetime) -> None: ...

    # SMS codes
    async def add_sms_code(self, phone_index: str, code_hash: str, *, now: datetime, expires_at: datetime) -> None: ...

    async def latest_sms_code(self, phone_index: str, *, for_update: bool = True) -> SmsCode | None: ...

    async def count_sms_attempt(self, code_id: int) -> None: ...

    async def consume_sms_code(self, code_id: int, *, now: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class SmsCode:
    id: int
    phone_index: str
    code_hash: str = field(repr=False)
    created_at: datetime
    expires_at: datetime
    attempts: int
    consumed_at: datetime | None
