"""Logins, sessions and staff accounts (DESIGN D4, D6; SEC-A-01..05, SEC-C-02, SEC-L-01/02)."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

from domain.account.model import (
    PRIVILEGED_ROLES,
    AccountKind,
    Audience,
    Identity,
    PractitionerLink,
    Provider,
    RefreshGrant,
    ResidentAccount,
    Restriction,
    Session,
    StaffAccount,
    StaffRole,
    StaffStatus,
)
from domain.account.ports import (
    AccountRepository,
    AlipayMiniProgram,
    CaptchaVerifier,
    IdentityRaceError,
    LoginCodeError,
    PasswordHasher,
    SmsSender,
    TotpVerifier,
    WechatMiniProgram,
)
from domain.account.rules import (
    AccountPolicy,
    LockoutPolicy,
    PasswordPolicy,
    PasswordReusedError,
    SessionExpiredError,
    SessionPolicy,
    SessionRevokedError,
    SmsCodePolicy,
    check_password_strength,
    check_session,
    normalise_phone,
    password_expired,
    roles_of,
)
from domain.identity.masking import mask_phone
from domain.kernel.audit import AuditEvent, AuditRepository, Outcome
from domain.kernel.audit_chain import record_failure
from domain.kernel.clock import SHANGHAI, Clock
from domain.kernel.crypto import BlindIndex, FieldCipher, Mac
from domain.kernel.ephemeral import EphemeralStore, EphemeralStoreUnavailableError
from domain.kernel.errors import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
    ValidationError,
)
from domain.kernel.ids import new_id
from domain.kernel.outbox import OutboxRepository
from domain.kernel.ratelimit import RateLimit, RateLimiter


class AccountUnitOfWork(Protocol):
    @property
    def accounts(self) -> AccountRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def commit(self) -> None: ...


class LoginFailedError(AuthenticationError):
    """One answer for every failed staff login: never reveals whether the account exists (SEC-A-03)."""

    code = "auth.login_failed"
    message = "账号、密码或动态口令错误；多次失败后账号将被临时锁定"


class PasswordExpiredError(ForbiddenError):
    code = "auth.password_expired"
    message = "密码已过期，请先修改密码"


class SmsCodeWrongError(ValidationError):
    code = "auth.sms_code_wrong"
    message = "验证码错误"


class SmsCodeInvalidError(ValidationError):
    code = "auth.sms_code_invalid"
    message = "验证码已失效，请重新获取"


class SmsCodeLockedError(ValidationError):
    code = "auth.sms_code_locked"
    message = "验证码错误次数过多，请重新获取"


class CaptchaRequiredError(RateLimitedError):
    code = "auth.captcha_required"
    message = "请先完成图形验证"


class UnknownAppError(ValidationError):
    code = "auth.unknown_app"
    message = "不支持的小程序"


class RefreshReusedError(AuthenticationError):
    code = "auth.refresh_reused"
    message = "登录状态异常，为保护账号安全已退出，请重新登录"


class RefreshInvalidError(AuthenticationError):
    code = "auth.refresh_invalid"
    message = "登录已过期，请重新登录"


class ActivationInvalidError(AuthenticationError):
    code = "auth.activation_invalid"
    message = "激活凭证无效或已过期，请联系管理员"


class LoginNameTakenError(ConflictError):
    code = "staff.login_taken"
    message = "该登录名已被使用"


class StaffNotFoundError(NotFoundError):
    code = "staff.not_found"
    message = "工作人员账号不存在"


class SessionNotFoundError(NotFoundError):
    code = "auth.session_not_found"
    message = "会话不存在"


class RoleChangeForbiddenError(ForbiddenError):
    code = "staff.role_change_forbidden"
    message = "您无权授予或变更该角色"


@dataclass(frozen=True, slots=True)
class ClientContext:
    ip: str | None = None
    device: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class LoginResult:
    session: Session
    refresh_token: str = field(repr=False)
    new_account: bool = False


@dataclass(frozen=True, slots=True)
class ResidentProfile:
    account: ResidentAccount
    identities: tuple[Identity, ...]
    phone_masked: str | None


@dataclass(frozen=True, slots=True)
class StaffActivation:
    login_name: str
    token: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    secret: str = field(repr=False)
    uri: str = field(repr=False)


@dataclass
class AccountDeps:
    uow_factory: Callable[[], AccountUnitOfWork]
    clock: Clock
    cipher: FieldCipher
    blind_index: BlindIndex
    mac: Mac
    hasher: PasswordHasher
    totp: TotpVerifier
    rate_limiter: RateLimiter
    store: EphemeralStore | None = None
    wechat: Mapping[str, WechatMiniProgram] = field(default_factory=dict)
    alipay: Mapping[str, AlipayMiniProgram] = field(default_factory=dict)
    sms: SmsSender | None = None
    captcha: CaptchaVerifier | None = None
    sessions: SessionPolicy = field(default_factory=SessionPolicy)
    passwords: PasswordPolicy = field(default_factory=PasswordPolicy)
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    sms_codes: SmsCodePolicy = field(default_factory=SmsCodePolicy)
    accounts: AccountPolicy = field(default_factory=AccountPolicy)


_DUMMY_PASSWORD = "dummy-password-for-timing"  # noqa: S105  (hashed to equalise timing, never accepted)
_SESSION_CACHE_TTL = 60.0


class AccountService:
    def __init__(self, deps: AccountDeps) -> None:
        self.d = deps
        self._dummy_hash: str | None = None

    # ------------------------------------------------------------------ helpers

    def _now(self) -> datetime:
        return self.d.clock.now()

    def phone_index(self, phone: str) -> str:
        return self.d.blind_index.index(phone, context="phone")

    def _audit(
        self,
        action: str,
        outcome: Outcome,
        ctx: ClientContext,
        *,
        actor: str | None = None,
        role: str | None = None,
        object_type: str | None = None,
        object_id: str | None = None,
        reason: str | None = None,
        details: Mapping[str, str] | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            action=action,
            outcome=outcome,
            actor=actor,
            actor_role=role,
            object_type=object_type,
            object_id=object_id,
            source_ip=ctx.ip,
            device=(ctx.device or "")[:200] or None,
            request_id=ctx.request_id,
            reason=reason,
            details=dict(details or {}),
        )

    async def _fail(self, event: AuditEvent) -> None:
        await record_failure(self.d.uow_factory, event, now=self._now())

    def _refresh_token(self, session_id: str) -> tuple[str, str]:
        token = f"rt1.{session_id}.{secrets.token_urlsafe(32)}"
        return token, self._hash_refresh(token)

    def _hash_refresh(self, token: str) -> str:
        return self.d.mac.mac(token.encode(), context="auth.refresh").hex()

    async def _open_session(
        self,
        uow: AccountUnitOfWork,
        *,
        account_id: str,
        kind: AccountKind,
        audience: Audience,
        ctx: ClientContext,
        roles: frozenset[str] = frozenset(),
        restriction: Restriction | None = None,
    ) -> tuple[Session, str]:
        now = self._now()
        policy = self.d.sessions
        session = Session(
            id=new_id(),
            account_id=account_id,
            kind=kind,
            audience=audience,
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.absolute(kind),
            idle_seconds=int(policy.idle(kind).total_seconds()),
            roles=roles,
            restriction=restriction,
            device=(ctx.device or "")[:200] or None,
            ip=ctx.ip,
        )
        await uow.accounts.add_session(session)
        token, token_hash = self._refresh_token(session.id)
        await uow.accounts.add_grant(
            RefreshGrant(session_id=session.id, generation=1, token_hash=token_hash, expires_at=session.expires_at)
        )
        return session, token

    def _restriction_for(self, account: ResidentAccount) -> Restriction | None:
        if self._now() - account.last_active_at > self.d.accounts.max_dormant:
            return Restriction.DORMANT_ACCOUNT
        return None

    # ------------------------------------------------------------------ resident logins

    async def _login_identity(
        self, identity: Identity, audience: Audience, ctx: ClientContext, *, method: str
    ) -> LoginResult:
        for attempt in range(2):
            try:
                return await self._login_identity_once(identity, audience, ctx, method=method)
            except IdentityRaceError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _login_identity_once(
        self, identity: Identity, audience: Audience, ctx: ClientContext, *, method: str
    ) -> LoginResult:
        now = self._now()
        async with self.d.uow_factory() as uow:
            account = await uow.accounts.resident_by_identity(identity.provider, identity.app_id, identity.subject)
            created = account is None
            if account is None:
                account = ResidentAccount(id=new_id(), created_at=now, last_active_at=now)
                await uow.accounts.add_resident(account)
                await uow.accounts.add_identity(account.id, identity, now=now)
            elif account.merged_into is not None:
                raise ConflictError("merged account still holds an identity", code="account.merged")
            session, token = await self._finish_resident_login(
                uow, account, created=created, audience=audience, ctx=ctx, method=method, details={}
            )
            await uow.commit()
        return LoginResult(session=session, refresh_token=token, new_account=created)

    async def _finish_resident_login(
        self,
        uow: AccountUnitOfWork,
        account: ResidentAccount,
        *,
        created: bool,
        audience: Audience,
        ctx: ClientContext,
        method: str,
        details: Mapping[str, str],
    ) -> tuple[Session, str]:
        """The tail every resident login shares: the dormancy check, the session, the audit row and the
        ``account.logged_in`` event (a new device notice), in the caller's unit of work."""
        now = self._now()
        restriction = None if created else self._restriction_for(account)
        await uow.accounts.touch_resident(account.id, now=now)
        session, token = await self._open_session(
            uow,
            account_id=account.id,
            kind=AccountKind.RESIDENT,
            audience=audience,
            ctx=ctx,
            restriction=restriction,
        )
        await uow.audit.record(
            self._audit(
                "auth.login",
                Outcome.SUCCESS,
                ctx,
                actor=f"account:{account.id}",
                role="resident",
                object_type="session",
                object_id=session.id,
                details={
                    "method": method,
                    "new_account": str(created).lower(),
                    "restriction": restriction.value if restriction else "",
                    **details,
                },
            ),
            now=now,
        )
        await uow.outbox.add(
            "account.logged_in",
            {
                "accountId": account.id,
                "sessionId": session.id,
                "method": method,
                "newAccount": created,
                "notify": not created,
                "values": {"time": _local_minute(now), "device": _DEVICE_LABELS.get(method, method)},
            },
            now=now,
        )
        return session, token

    async def login_wechat(self, *, appid: str, code: str, ctx: ClientContext) -> LoginResult:
        client = self.d.wechat.get(appid)
        if client is None:
            raise UnknownAppError(f"appid {appid[:32]!r} is not configured")
        try:
            wx = await client.code_to_session(code)
        except LoginCodeError as exc:
            await self._fail(
                self._audit("auth.login", Outcome.FAILURE, ctx, reason=exc.code, details={"method": "wechat"})
            )
            raise
        identity = Identity(Provider.WECHAT, appid, wx.openid, wx.unionid)
        return await self._login_identity(identity, Audience.WECHAT_MP, ctx, method="wechat")

    async def login_alipay(self, *, app_id: str, auth_code: str, ctx: ClientContext) -> LoginResult:
        client = self.d.alipay.get(app_id)
        if client is None:
            raise UnknownAppError(f"app_id {app_id[:32]!r} is not configured")
        try:
            user = await client.exchange_auth_code(auth_code)
        except LoginCodeError as exc:
            await self._fail(
                self._audit("auth.login", Outcome.FAILURE, ctx, reason=exc.code, details={"method": "alipay"})
            )
            raise
        identity = Identity(Provider.ALIPAY, app_id, user.subject, user.union_id)
        return await self._login_identity(identity, Audience.ALIPAY_MP, ctx, method="alipay")

    # ------------------------------------------------------------------ SMS codes

    async def _limit(self, limit: RateLimit, key: str) -> None:
        """Security limits fail closed when their store is down (D1)."""
        try:
            decision = await self.d.rate_limiter.hit(limit, key)
        except EphemeralStoreUnavailableError:
            raise UnavailableError("rate-limit store unavailable", code="auth.limits_unavailable") from None
        if not decision.allowed:
            raise RateLimitedError(
                f"limit {limit.name}",
                retry_after=decision.retry_after_seconds,
                code="auth.sms_too_frequent" if limit.name == "sms-resend" else "auth.sms_daily_cap",
                message="验证码发送太频繁，请稍后再试" if limit.name == "sms-resend" else "今日验证码发送次数已达上限",
            )

    async def send_sms_code(self, *, phone: str, ctx: ClientContext, captcha_token: str | None = None) -> datetime:
        """Send a login code straight through the SMS port (never deferred or filtered by preferences).
        Returns when the code expires."""
        number = normalise_phone(phone)
        index = self.phone_index(number)
        policy = self.d.sms_codes
        await self._limit(RateLimit("sms-resend", 1, int(policy.resend_after.total_seconds()), fail_closed=True), index)
        await self._limit(RateLimit("sms-phone-day", policy.daily_per_phone, 86400, fail_closed=True), index)
        await self._limit(RateLimit("sms-ip-day", policy.daily_per_ip, 86400, fail_closed=True), ctx.ip or "unknown")
        sends = await self._count_send(index)
        if sends > policy.captcha_after_sends and (
            self.d.captcha is None
            or not captcha_token
            or not await self.d.captcha.verify(captcha_token, client_ip=ctx.ip or "")
        ):
            raise CaptchaRequiredError("captcha required after repeated sends", retry_after=1)
        if self.d.sms is None:
            raise UnavailableError("no SMS provider configured", code="sms.not_configured")
        code = "".join(secrets.choice("0123456789") for _ in range(policy.length))
        now = self._now()
        expires = now + policy.ttl
        async with self.d.uow_factory() as uow:
            await uow.accounts.add_sms_code(index, self._code_hash(index, code), now=now, expires_at=expires)
            await uow.audit.record(
                self._audit("auth.sms_code_sent", Outcome.SUCCESS, ctx, details={"phone": mask_phone(number)}), now=now
            )
            await uow.commit()
        minutes = str(int(policy.ttl.total_seconds() // 60))
        await self.d.sms.send(number, "login_code", {"code": code, "minutes": minutes})
        return expires

    async def _count_send(self, index: str) -> int:
        if self.d.store is None:
            return 0
        day = self._now().strftime("%Y%m%d")
        try:
            return await self.d.store.incr(f"sms-sends:{index}:{day}", ttl_seconds=86400)
        except EphemeralStoreUnavailableError:
            raise UnavailableError("counter store unavailable", code="auth.limits_unavailable") from None

    def _code_hash(self, index: str, code: str) -> str:
        return self.d.mac.mac(f"{index}:{code}".encode(), context="auth.sms_code").hex()

    async def login_sms(self, *, phone: str, code: str, ctx: ClientContext) -> LoginResult:
        number = normalise_phone(phone)
        index = self.phone_index(number)
        now = self._now()
        failure: Exception | None = None
        async with self.d.uow_factory() as uow:
            stored = await uow.accounts.latest_sms_code(index)
            if stored is None or stored.consumed_at is not None or stored.expires_at <= now:
                failure = SmsCodeInvalidError("no live code")
            elif stored.attempts >= self.d.sms_codes.max_attempts:
                failure = SmsCodeLockedError("too many attempts")
            elif not secrets.compare_digest(stored.code_hash, self._code_hash(index, code.strip())):
                await uow.accounts.count_sms_attempt(stored.id)
                left = self.d.sms_codes.max_attempts - stored.attempts - 1
                failure = SmsCodeWrongError(f"wrong code, {left} attempts left", extra={"attemptsLeft": left})
            if failure is not None:
                await uow.audit.record(
                    self._audit(
                        "auth.login",
                        Outcome.FAILURE,
                        ctx,
                        reason=getattr(failure, "code", "error"),
                        details={"method": "sms", "phone": mask_phone(number)},
                    ),
                    now=now,
                )
                await uow.commit()
                raise failure
            assert stored is not None
            await uow.accounts.consume_sms_code(stored.id, now=now)
            account = await uow.accounts.resident_by_phone(index)
            created = account is None
            if account is None:
                account = ResidentAccount(
                    id=new_id(),
                    created_at=now,
                    last_active_at=now,
                    phone_index=index,
                    phone_cipher=self.d.cipher.encrypt(number.encode(), context="account.phone"),
                    phone_bound_at=now,
                )
                await uow.accounts.add_resident(account)
                await uow.accounts.add_identity(account.id, Identity(Provider.PHONE, "", index), now=now)
            session, token = await self._finish_resident_login(
                uow,
                account,
                created=created,
                audience=Audience.PATIENT_APP,
                ctx=ctx,
                method="sms",
                details={"phone": mask_phone(number)},
            )
            await uow.commit()
        return LoginResult(session=session, refresh_token=token, new_account=created)

    # ------------------------------------------------------------------ phone join

    async def bind_wechat_phone(
        self, session: Session, *, appid: str, code: str, ctx: ClientContext
    ) -> LoginResult | None:
        """Bind the phone behind a WeChat getPhoneNumber code. When another account already holds that phone,
        this account's identities join it and a new session on that account is returned."""
        client = self.d.wechat.get(appid)
        if client is None:
            raise UnknownAppError(f"appid {appid[:32]!r} is not configured")
        phone = normalise_phone(await client.phone_number(code))
        return await self.join_phone(session, phone=phone, ctx=ctx)

    async def join_phone(self, session: Session, *, phone: str, ctx: ClientContext) -> LoginResult | None:
        now = self._now()
        index = self.phone_index(phone)
        async with self.d.uow_factory() as uow:
            current = await uow.accounts.resident(session.account_id)
            if current is None:
                raise SessionRevokedError("account gone")
            holder = await uow.accounts.resident_by_phone(index)
            if holder is None or holder.id == current.id:
                await uow.accounts.set_resident_phone(
                    current.id,
                    phone_index=index,
                    phone_cipher=self.d.cipher.encrypt(phone.encode(), context="account.phone"),
                    now=now,
                )
                if holder is None:
                    await uow.accounts.add_identity(current.id, Identity(Provider.PHONE, "", index), now=now)
                await uow.audit.record(
                    self._audit(
                        "account.phone_bound",
                        Outcome.SUCCESS,
                        ctx,
                        actor=f"account:{current.id}",
                        role="resident",
                        details={"phone": mask_phone(phone)},
                    ),
                    now=now,
                )
                await uow.outbox.add(
                    "account.phone_bound",
                    {"accountId": current.id, "values": {"time": _local_minute(now), "phone": mask_phone(phone)}},
                    now=now,
                )
                await uow.commit()
                return None
            restriction = self._restriction_for(holder)
            moved = await uow.accounts.move_identities(current.id, holder.id)
            await uow.accounts.mark_merged(current.id, holder.id)
            await uow.accounts.revoke_account_sessions(current.id, now=now, reason="account.joined")
            await uow.accounts.touch_resident(holder.id, now=now)
            new_session, token = await self._open_session(
                uow,
                account_id=holder.id,
                kind=AccountKind.RESIDENT,
                audience=session.audience,
                ctx=ctx,
                restriction=restriction,
            )
            await uow.audit.record(
                self._audit(
                    "account.phone_join",
                    Outcome.SUCCESS,
                    ctx,
                    actor=f"account:{current.id}",
                    role="resident",
                    object_type="account",
                    object_id=holder.id,
                    details={
                        "phone": mask_phone(phone),
                        "identities_moved": str(moved),
                        "restriction": restriction.value if restriction else "",
                    },
                ),
                now=now,
            )
            await uow.outbox.add(
                "account.phone_bound",
                {
                    "accountId": holder.id,
                    "joinedFrom": current.id,
                    "values": {"time": _local_minute(now), "phone": mask_phone(phone)},
                },
                now=now,
            )
            await uow.commit()
        await self._forget_sessions([session.id])
        return LoginResult(session=new_session, refresh_token=token)

    # ------------------------------------------------------------------ sessions

    async def authenticate(self, session_id: str) -> Session:
        """The live session behind an access token, with idle and absolute timeouts (SEC-A-04). Reads Redis
        first; falls back to PostgreSQL when Redis is unavailable (D1)."""
        now = self._now()
        session = await self._cached_session(session_id)
        from_db = session is None
        last_seen = await self._cached_last_seen(session_id)
        if session is None:
            async with self.d.uow_factory() as uow:
                session = await uow.accounts.session(session_id)
        try:
            check_session(session, now=now, last_seen=last_seen)
        except SessionExpiredError:
            if session is not None and session.revoked_at is None:
                await self._expire(session, now)
            raise
        assert session is not None
        if from_db:
            await self._cache_session(session)
        await self._touch(session, now, last_seen)
        return session

    async def _cached_session(self, session_id: str) -> Session | None:
        store = self.d.store
        if store is None:
            return None
        try:
            raw = await store.get(f"sess:{session_id}")
        except EphemeralStoreUnavailableError:
            return None
        return _decode_session(raw) if raw else None

    async def _cached_last_seen(self, session_id: str) -> datetime | None:
        store = self.d.store
        if store is None:
            return None
        try:
            raw = await store.get(f"seen:{session_id}")
        except EphemeralStoreUnavailableError:
            return None
        return datetime.fromisoformat(raw.decode()) if raw else None

    async def _cache_session(self, session: Session) -> None:
        if self.d.store is None:
            return
        with contextlib.suppress(EphemeralStoreUnavailableError):
            await self.d.store.set(f"sess:{session.id}", _encode_session(session), ttl_seconds=_SESSION_CACHE_TTL)

    async def _touch(self, session: Session, now: datetime, cached_seen: datetime | None) -> None:
        seen = max(session.last_seen_at, cached_seen or session.last_seen_at)
        wrote_cache = False
        if self.d.store is not None:
            try:
                await self.d.store.set(
                    f"seen:{session.id}", now.isoformat().encode(), ttl_seconds=session.idle_seconds + 60
                )
                wrote_cache = True
            except EphemeralStoreUnavailableError:
                wrote_cache = False
        if (
            not wrote_cache
            or now - seen >= self.d.sessions.touch_every
            or now - session.last_seen_at >= timedelta(seconds=max(60, session.idle_seconds // 3))
        ):
            async with self.d.uow_factory() as uow:
                await uow.accounts.touch_session(session.id, now=now)
                await uow.commit()
            if self.d.store is not None:
                await self._forget_sessions([session.id], keep_seen=True)

    async def _expire(self, session: Session, now: datetime) -> None:
        async with self.d.uow_factory() as uow:
            await uow.accounts.revoke_session(session.id, now=now, reason="timeout")
            await uow.commit()
        await self._forget_sessions([session.id])

    async def lift_restriction(self, session: Session, *, ctx: ClientContext) -> None:
        """After the real-name re-check passed (the patients feature decides), the session opens patient data."""
        if session.restriction is None:
            return
        async with self.d.uow_factory() as uow:
            await uow.accounts.set_session_restriction(session.id, None)
            await uow.audit.record(
                self._audit(
                    "auth.restriction_lifted",
                    Outcome.SUCCESS,
                    ctx,
                    actor=f"account:{session.account_id}",
                    role="resident",
                    object_type="session",
                    object_id=session.id,
                    details={"restriction": session.restriction.value},
                ),
                now=self._now(),
            )
            await uow.commit()
        await self._forget_sessions([session.id], keep_seen=True)

    async def _forget_sessions(self, ids: Sequence[str], *, keep_seen: bool = False) -> None:
        if self.d.store is None or not ids:
            return
        keys = [f"sess:{i}" for i in ids] + ([] if keep_seen else [f"seen:{i}" for i in ids])
        # When Redis is down the cache entry lives at most _SESSION_CACHE_TTL; PostgreSQL has the revocation.
        with contextlib.suppress(EphemeralStoreUnavailableError):
            await self.d.store.delete(*keys)

    async def refresh(self, *, refresh_token: str, ctx: ClientContext) -> LoginResult:
        """Rotate the refresh token. Presenting one already used revokes the whole session (reuse detection)."""
        now = self._now()
        token_hash = self._hash_refresh(refresh_token)
        reused: Session | None = None
        async with self.d.uow_factory() as uow:
            grant = await uow.accounts.grant_by_hash(token_hash)
            if grant is None:
                raise RefreshInvalidError("unknown refresh token")
            session = await uow.accounts.session(grant.session_id)
            if grant.used_at is not None:
                if session is not None and session.revoked_at is None:
                    await uow.accounts.revoke_session(session.id, now=now, reason="refresh_reuse")
                    reused = session
                await uow.audit.record(
                    self._audit(
                        "auth.refresh_reuse",
                        Outcome.FAILURE,
                        ctx,
                        actor=f"account:{session.account_id}" if session else None,
                        object_type="session",
                        object_id=grant.session_id,
                        reason="refresh_reused",
                    ),
                    now=now,
                )
                await uow.commit()
            else:
                try:
                    session = check_session(session, now=now, last_seen=await self._cached_last_seen(grant.session_id))
                except (SessionExpiredError, SessionRevokedError):
                    raise RefreshInvalidError("session over") from None
                if grant.expires_at <= now:
                    raise RefreshInvalidError("refresh token expired")
                await uow.accounts.use_grant(token_hash, now=now)
                token, new_hash = self._refresh_token(session.id)
                await uow.accounts.add_grant(
                    RefreshGrant(
                        session_id=session.id,
                        generation=grant.generation + 1,
                        token_hash=new_hash,
                        expires_at=session.expires_at,
                    )
                )
                await uow.accounts.touch_session(session.id, now=now)
                await uow.audit.record(
                    self._audit(
                        "auth.refresh",
                        Outcome.SUCCESS,
                        ctx,
                        actor=f"account:{session.account_id}",
                        object_type="session",
                        object_id=session.id,
                    ),
                    now=now,
                )
                await uow.commit()
                return LoginResult(session=replace(session, last_seen_at=now), refresh_token=token)
        if reused is not None:
            await self._forget_sessions([reused.id])
        raise RefreshReusedError("refresh token used twice")

    async def logout(self, session: Session, *, ctx: ClientContext) -> None:
        now = self._now()
        async with self.d.uow_factory() as uow:
            await uow.accounts.revoke_session(session.id, now=now, reason="logout")
            await uow.audit.record(
                self._audit(
                    "auth.logout",
                    Outcome.SUCCESS,
                    ctx,
                    actor=_actor(session),
                    role=session.kind.value,
                    object_type="session",
                    object_id=session.id,
                ),
                now=now,
            )
            await uow.commit()
        await self._forget_sessions([session.id])

    async def logout_all(self, session: Session, *, ctx: ClientContext) -> int:
        now = self._now()
        async with self.d.uow_factory() as uow:
            ids = await uow.accounts.revoke_account_sessions(session.account_id, now=now, reason="logout_all")
            await uow.audit.record(
                self._audit(
                    "auth.logout_all",
                    Outcome.SUCCESS,
                    ctx,
                    actor=_actor(session),
                    role=session.kind.value,
                    details={"sessions": str(len(ids))},
                ),
                now=now,
            )
            await uow.commit()
        await self._forget_sessions(ids)
        return len(ids)

    async def live_sessions(self, session: Session) -> Sequence[Session]:
        async with self.d.uow_factory() as uow:
            return await uow.accounts.live_sessions(session.account_id, now=self._now())

    async def revoke_session(self, session: Session, target_id: str, *, ctx: ClientContext) -> None:
        now = self._now()
        async with self.d.uow_factory() as uow:
            target = await uow.accounts.session(target_id)
            if target is None or target.account_id != session.account_id or target.revoked_at is not None:
                raise SessionNotFoundError("no such session of this account")
            await uow.accounts.revoke_session(target_id, now=now, reason="revoked_by_holder")
            await uow.audit.record(
                self._audit(
                    "auth.session_revoked",
                    Outcome.SUCCESS,
                    ctx,
                    actor=_actor(session),
                    object_type="session",
                    object_id=target_id,
                ),
                now=now,
            )
            await uow.commit()
        await self._forget_sessions([target_id])

    async def resident_profile(self, session: Session) -> ResidentProfile:
        async with self.d.uow_factory() as uow:
            account = await uow.accounts.resident(session.account_id)
            if account is None:
                raise SessionRevokedError("account gone")
            identities = tuple(await uow.accounts.identities(account.id))
        phone = None
        if account.phone_cipher:
            phone = mask_phone(self.d.cipher.decrypt(account.phone_cipher, context="account.phone").decode())
        return ResidentProfile(account=account, identities=identities, phone_masked=phone)

    # ------------------------------------------------------------------ staff

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self.d.hasher.hash(_DUMMY_PASSWORD)
        return self._dummy_hash

    async def _verify_staff_credentials(
        self,
        uow: AccountUnitOfWork,
        login_name: str,
        password: str,
        totp_code: str,
        ctx: ClientContext,
        *,
        action: str,
    ) -> StaffAccount:
        """Password, then TOTP; failures count towards the lockout and are committed before raising."""
        now = self._now()
        staff = await uow.accounts.staff_by_login(login_name.strip().lower(), for_update=True)
        reason: str | None = None
        if staff is None:
            self.d.hasher.verify(self._dummy(), password)  # the same work whether or not the account exists
            reason = "unknown_account"
        elif staff.status is not StaffStatus.ACTIVE or staff.password_hash is None:
            self.d.hasher.verify(self._dummy(), password)
            reason = f"status_{staff.status.value}"
        elif staff.locked_until is not None and staff.locked_until > now:
            reason = "locked"
        elif not self.d.hasher.verify(staff.password_hash, password):
            reason = "bad_password"
        else:
            secret = (
                self.d.cipher.decrypt(staff.totp_cipher or "", context="staff.totp").decode()
                if staff.totp_cipher
                else ""
            )
            step = self.d.totp.matching_step(secret, totp_code.strip(), now=now) if secret else None
            if step is None or not await uow.accounts.claim_totp_step(staff.id, step):
                reason = "bad_totp"
        if reason is None:
            assert staff is not None
            return staff
        locked = False
        if staff is not None and reason in ("bad_password", "bad_totp"):
            await uow.accounts.add_login_failure(staff.id, now=now)
            failures = await uow.accounts.login_failures_since(staff.id, now - self.d.lockout.window)
            if failures >= self.d.lockout.max_failures:
                staff = replace(staff, locked_until=now + self.d.lockout.lock_for)
                await uow.accounts.save_staff(staff)
                locked = True
        actor = f"staff:{staff.id}" if staff is not None else None
        await uow.audit.record(
            self._audit(
                action,
                Outcome.FAILURE,
                ctx,
                actor=actor,
                reason=reason,
                details={"mfa": "failure" if reason == "bad_totp" else ""},
            ),
            now=now,
        )
        if locked:
            await uow.audit.record(
                self._audit("auth.lockout", Outcome.SUCCESS, ctx, actor=actor, reason="too_many_failures"), now=now
            )
        await uow.commit()
        raise LoginFailedError()  # the reason goes to the audit log only, never to the caller

    async def staff_login(self, *, login_name: str, password: str, totp_code: str, ctx: ClientContext) -> LoginResult:
        now = self._now()
        async with self.d.uow_factory() as uow:
            staff = await self._verify_staff_credentials(
                uow, login_name, password, totp_code, ctx, action="auth.staff_login"
            )
            if password_expired(staff.password_changed_at, now=now, policy=self.d.passwords):
                await uow.audit.record(
                    self._audit(
                        "auth.staff_login", Outcome.FAILURE, ctx, actor=f"staff:{staff.id}", reason="password_expired"
                    ),
                    now=now,
                )
                await uow.commit()
                raise PasswordExpiredError("password older than the policy allows")
            await uow.accounts.clear_login_failures(staff.id)
            staff = replace(staff, last_login_at=now, locked_until=None)
            if self.d.hasher.needs_rehash(staff.password_hash or ""):
                staff = replace(staff, password_hash=self.d.hasher.hash(password))
            await uow.accounts.save_staff(staff)
            session, token = await self._open_session(
                uow,
                account_id=staff.id,
                kind=AccountKind.STAFF,
                audience=Audience.STAFF_APP,
                ctx=ctx,
                roles=roles_of(staff.roles),
            )
            await uow.audit.record(
                self._audit(
                    "auth.staff_login",
                    Outcome.SUCCESS,
                    ctx,
                    actor=f"staff:{staff.id}",
                    role=",".join(sorted(roles_of(staff.roles))),
                    object_type="session",
                    object_id=session.id,
                    details={"mfa": "totp"},
                ),
                now=now,
            )
            await uow.commit()
        return LoginResult(session=session, refresh_token=token)

    def _check_new_password(self, staff: StaffAccount, new_password: str) -> None:
        check_password_strength(new_password, login_name=staff.login_name, policy=self.d.passwords)
        recent = [h for h in (staff.password_hash, *staff.password_history) if h][: self.d.passwords.history]
        if any(self.d.hasher.verify(h, new_password) for h in recent):
            raise PasswordReusedError("one of the recent passwords")

    async def change_staff_password(
        self, *, login_name: str, password: str, totp_code: str, new_password: str, ctx: ClientContext
    ) -> None:
        """Works without a session so that an expired password can be changed; ends every session."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            staff = await self._verify_staff_credentials(
                uow, login_name, password, totp_code, ctx, action="auth.password_change"
            )
            self._check_new_password(staff, new_password)
            history = tuple(h for h in (staff.password_hash, *staff.password_history) if h)[: self.d.passwords.history]
            staff = replace(
                staff, password_hash=self.d.hasher.hash(new_password), password_changed_at=now, password_history=history
            )
            await uow.accounts.save_staff(staff)
            await uow.accounts.clear_login_failures(staff.id)
            revoked = await uow.accounts.revoke_account_sessions(staff.id, now=now, reason="password_changed")
            await uow.audit.record(
                self._audit("auth.password_change", Outcome.SUCCESS, ctx, actor=f"staff:{staff.id}"), now=now
            )
            await uow.commit()
        await self._forget_sessions(revoked)

    async def create_staff(
        self,
        *,
        login_name: str,
        display_name: str,
        roles: frozenset[StaffRole],
        actor: Session | None,
        ctx: ClientContext,
    ) -> StaffActivation:
        """Operators create doctors, pharmacists and operators; the security administrator any role; the
        command line (no actor) the first operator. The holder activates with a one-time token."""
        if actor is not None:
            allowed = (
                frozenset(StaffRole)
                if StaffRole.SECURITY_ADMIN.value in actor.roles
                else self.d.accounts.staff_roles_by_operator
                if StaffRole.OPERATOR.value in actor.roles
                else frozenset()
            )
            if not roles or not roles <= allowed:
                raise RoleChangeForbiddenError("roles outside what this actor may grant")
        name = _login_name(login_name)
        now = self._now()
        token = secrets.token_urlsafe(24)
        expires = now + self.d.accounts.staff_activation_ttl
        staff = StaffAccount(
            id=new_id(),
            login_name=name,
            display_name=display_name.strip()[:50] or name,
            roles=roles,
            status=StaffStatus.PENDING,
            created_at=now,
            activation_hash=self._activation_hash(token),
            activation_expires_at=expires,
        )
        async with self.d.uow_factory() as uow:
            if await uow.accounts.staff_by_login(name) is not None:
                raise LoginNameTakenError(f"login name {name!r} is taken")
            await uow.accounts.add_staff(staff)
            await uow.audit.record(
                self._audit(
                    "staff.created",
                    Outcome.SUCCESS,
                    ctx,
                    actor=_actor(actor),
                    object_type="staff",
                    object_id=staff.id,
                    details={"roles": ",".join(sorted(roles_of(roles)))},
                ),
                now=now,
            )
            await uow.commit()
        return StaffActivation(login_name=name, token=token, expires_at=expires)

    def _activation_hash(self, token: str) -> str:
        return self.d.mac.mac(token.encode(), context="staff.activation").hex()

    async def _pending_staff(self, uow: AccountUnitOfWork, login_name: str, token: str) -> StaffAccount:
        staff = await uow.accounts.staff_by_login(_login_name(login_name), for_update=True)
        now = self._now()
        if (
            staff is None
            or staff.status is not StaffStatus.PENDING
            or staff.activation_hash is None
            or staff.activation_expires_at is None
            or staff.activation_expires_at <= now
            or not secrets.compare_digest(staff.activation_hash, self._activation_hash(token))
        ):
            raise ActivationInvalidError("no pending activation for this token")
        return staff

    async def start_staff_activation(
        self, *, login_name: str, token: str, new_password: str, ctx: ClientContext
    ) -> TotpEnrolment:
        """Set the first password and receive the TOTP secret to enrol (forced password choice, SEC-A-01)."""
        async with self.d.uow_factory() as uow:
            staff = await self._pending_staff(uow, login_name, token)
            self._check_new_password(staff, new_password)
            secret = self.d.totp.new_secret()
            staff = replace(
                staff,
                password_hash=self.d.hasher.hash(new_password),
                password_changed_at=self._now(),
                totp_cipher=self.d.cipher.encrypt(secret.encode(), context="staff.totp"),
            )
            await uow.accounts.save_staff(staff)
            await uow.commit()
        return TotpEnrolment(secret=secret, uri=self.d.totp.provisioning_uri(secret, account_name=staff.login_name))

    async def finish_staff_activation(self, *, login_name: str, token: str, totp_code: str, ctx: ClientContext) -> None:
        now = self._now()
        async with self.d.uow_factory() as uow:
            staff = await self._pending_staff(uow, login_name, token)
            if staff.totp_cipher is None or staff.password_hash is None:
                raise ActivationInvalidError("set a password first")
            secret = self.d.cipher.decrypt(staff.totp_cipher, context="staff.totp").decode()
            step = self.d.totp.matching_step(secret, totp_code.strip(), now=now)
            if step is None or not await uow.accounts.claim_totp_step(staff.id, step):
                await uow.audit.record(
                    self._audit("auth.mfa_enrol", Outcome.FAILURE, ctx, actor=f"staff:{staff.id}", reason="bad_totp"),
                    now=now,
                )
                await uow.commit()
                raise ActivationInvalidError("the code does not match")
            await uow.accounts.save_staff(
                replace(staff, status=StaffStatus.ACTIVE, activation_hash=None, activation_expires_at=None)
            )
            await uow.audit.record(
                self._audit("auth.mfa_enrol", Outcome.SUCCESS, ctx, actor=f"staff:{staff.id}"), now=now
            )
            await uow.commit()

    async def set_staff_roles(
        self, actor: Session, staff_id: str, roles: frozenset[StaffRole], *, ctx: ClientContext
    ) -> StaffAccount:
        """Only the security administrator changes roles (SEC-C-02), never their own."""
        if StaffRole.SECURITY_ADMIN.value not in actor.roles or actor.account_id == staff_id:
            raise RoleChangeForbiddenError("only another security administrator changes roles")
        now = self._now()
        async with self.d.uow_factory() as uow:
            staff = await uow.accounts.staff(staff_id, for_update=True)
            if staff is None:
                raise StaffNotFoundError(staff_id)
            before = roles_of(staff.roles)
            staff = replace(staff, roles=roles)
            await uow.accounts.save_staff(staff)
            revoked = await uow.accounts.revoke_account_sessions(staff.id, now=now, reason="roles_changed")
            await uow.audit.record(
                self._audit(
                    "staff.role_change",
                    Outcome.SUCCESS,
                    ctx,
                    actor=_actor(actor),
                    object_type="staff",
                    object_id=staff.id,
                    details={"before": ",".join(sorted(before)), "after": ",".join(sorted(roles_of(roles)))},
                ),
                now=now,
            )
            await uow.commit()
        await self._forget_sessions(revoked)
        return staff

    async def set_staff_links(
        self, actor: Session, staff_id: str, links: Sequence[PractitionerLink], *, ctx: ClientContext
    ) -> StaffAccount:
        """Operators link a staff account to practitioners at hospitals; doctor and pharmacist queries are
        scoped through these links. A link's roles must be roles the account holds."""
        if not {StaffRole.OPERATOR.value, StaffRole.SECURITY_ADMIN.value} & actor.roles:
            raise ForbiddenError("operators only", code="staff.links_forbidden")
        now = self._now()
        async with self.d.uow_factory() as uow:
            staff = await uow.accounts.staff(staff_id, for_update=True)
            if staff is None:
                raise StaffNotFoundError(staff_id)
            clinical = staff.roles & {StaffRole.DOCTOR, StaffRole.PHARMACIST}
            for link in links:
                if not link.roles or not link.roles <= clinical:
                    raise ValidationError(
                        "a link's roles must be clinical roles the account holds",
                        code="staff.link_roles_invalid",
                        message="关联的执业角色必须是该账号已有的医生或药师角色",
                    )
            if len({(link.hospital_code, link.practitioner_id) for link in links}) != len(links):
                raise ValidationError("duplicate link", code="staff.link_duplicate", message="存在重复的执业关联")
            await uow.accounts.replace_links(staff.id, links)
            await uow.audit.record(
                self._audit(
                    "staff.links_changed",
                    Outcome.SUCCESS,
                    ctx,
                    actor=_actor(actor),
                    object_type="staff",
                    object_id=staff.id,
                    details={"links": ",".join(f"{x.hospital_code}/{x.practitioner_id}" for x in links)},
                ),
                now=now,
            )
            await uow.commit()
            updated = await self._reload_staff(staff.id)
        return updated

    async def _reload_staff(self, staff_id: str) -> StaffAccount:
        async with self.d.uow_factory() as uow:
            staff = await uow.accounts.staff(staff_id)
        if staff is None:
            raise StaffNotFoundError(staff_id)
        return staff

    async def staff_profile(self, session: Session) -> StaffAccount:
        async with self.d.uow_factory() as uow:
            staff = await uow.accounts.staff(session.account_id)
        if staff is None:
            raise SessionRevokedError("account gone")
        return staff

    async def list_staff(self, actor: Session, *, after: str | None, limit: int) -> Sequence[StaffAccount]:
        if not (PRIVILEGED_ROLES | {StaffRole.OPERATOR}) & {StaffRole(r) for r in actor.roles if r in _ROLE_VALUES}:
            raise ForbiddenError("operators and administrators only")
        async with self.d.uow_factory() as uow:
            return await uow.accounts.list_staff(after=after, limit=limit)


_ROLE_VALUES = frozenset(r.value for r in StaffRole)


_DEVICE_LABELS = {"wechat": "微信小程序", "alipay": "支付宝小程序", "sms": "健康App"}


def _local_minute(instant: datetime) -> str:
    return instant.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


def _actor(session: Session | None) -> str | None:
    if session is None:
        return "system"
    return (
        f"{session.kind.value}:{session.account_id}"
        if session.kind is AccountKind.STAFF
        else f"account:{session.account_id}"
    )


def _login_name(text: str) -> str:
    name = text.strip().lower()
    if not (3 <= len(name) <= 40) or not all(c.isalnum() or c in "._-" for c in name) or not name[0].isalpha():
        raise ValidationError(
            "login names are 3-40 letters, digits, dots, dashes or underscores",
            code="staff.login_name_invalid",
            message="登录名需为3到40位字母、数字或._-，并以字母开头",
        )
    return name


def _encode_session(session: Session) -> bytes:
    import json

    return json.dumps(
        {
            "id": session.id,
            "account_id": session.account_id,
            "kind": session.kind.value,
            "audience": session.audience.value,
            "created_at": session.created_at.isoformat(),
            "last_seen_at": session.last_seen_at.isoformat(),
            "expires_at": session.expires_at.isoformat(),
            "idle_seconds": session.idle_seconds,
            "roles": sorted(session.roles),
            "restriction": session.restriction.value if session.restriction else None,
        }
    ).encode()


def _decode_session(raw: bytes) -> Session | None:
    import json

    try:
        data = json.loads(raw)
        return Session(
            id=data["id"],
            account_id=data["account_id"],
            kind=AccountKind(data["kind"]),
            audience=Audience(data["audience"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            last_seen_at=datetime.fromisoformat(data["last_seen_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            idle_seconds=int(data["idle_seconds"]),
            roles=frozenset(data["roles"]),
            restriction=Restriction(data["restriction"]) if data.get("restriction") else None,
        )
    except (ValueError, KeyError, TypeError):
        return None


def token_fingerprint(token: str) -> str:
    """A short, non-reversible label for a token in audit details."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]
