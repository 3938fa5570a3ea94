"""Logins for every front end, refresh, logout and sessions (DESIGN D6, D8)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from bff.auth.guards import current_principal, require_resident, require_staff
from bff.auth.principal import current_session
from bff.deps import BffDeps
from bff.middleware import state as scope_state
from bff.services import account_service
from domain.account.model import Audience, Identity, Session
from domain.account.use_cases import ClientContext, LoginResult
from domain.kernel.ephemeral import EphemeralStoreUnavailableError
from domain.kernel.errors import ForbiddenError, RateLimitedError, UnavailableError
from domain.kernel.ratelimit import RateLimit

# ---------------------------------------------------------------- DTOs

Phone = Annotated[
    str,
    msgspec.Meta(
        description="中国大陆手机号 11 digits (+86, spaces, dashes, full-width accepted)", examples=["13800138000"]
    ),
]
WxAppId = Annotated[str, msgspec.Meta(description="小程序 appid", examples=["wx0000000000demo1"])]
WxCode = Annotated[
    str,
    msgspec.Meta(
        description="wx.login / getPhoneNumber code, single use, 5 minutes",
        examples=["0a3Xyz000abcdEFG1Hij2klm3NOp4QRs"],
    ),
]
AlipayAppId = Annotated[str, msgspec.Meta(description="支付宝小程序 app id", examples=["9021000122600001"])]
AlipayCode = Annotated[
    str, msgspec.Meta(description="my.getAuthCode authCode, single use", examples=["4b203fe6c11548bcabd8da5bb087a83b"])
]
SmsCode = Annotated[str, msgspec.Meta(description="6-digit SMS code", examples=["493817"])]
LoginName = Annotated[str, msgspec.Meta(description="staff login name", examples=["dr.wang"])]
Totp = Annotated[str, msgspec.Meta(description="6-digit TOTP code", examples=["204519"])]
Password = Annotated[str, msgspec.Meta(description="password", examples=["Correct-Horse-9-Battery"])]
RefreshToken = Annotated[
    str,
    msgspec.Meta(
        description="the refresh token from the last login or refresh",
        examples=["rt1.7c9f0d2e4b1a4c6e8f00112233445566.q1w2e3r4t5y6"],
    ),
]


class TokensOut(msgspec.Struct, rename="camel"):
    access_token: str
    access_token_expires_at: datetime
    refresh_token: str
    session_id: str
    account_id: str
    audience: str
    token_type: str = "Bearer"  # noqa: S105  (the OAuth token type, not a secret)
    new_account: bool = False
    restricted: bool = False
    """True when patient data stays closed until a real-name re-check (a dormant account reached by phone)."""


class WechatLoginIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    appid: WxAppId = msgspec.field(name="appid")
    code: WxCode


class WechatPhoneIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    appid: WxAppId = msgspec.field(name="appid")
    code: WxCode


class PhoneBindOut(msgspec.Struct, rename="camel", omit_defaults=True):
    joined: bool
    """True when the phone belonged to another account: this login joined it; use the new tokens."""
    tokens: TokensOut | None = None


class AlipayLoginIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    app_id: AlipayAppId
    auth_code: AlipayCode


class SmsCodeIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    phone: Phone
    captcha_token: str | None = None


class SmsCodeOut(msgspec.Struct, rename="camel"):
    expires_at: datetime
    resend_after_seconds: int


class SmsLoginIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    phone: Phone
    code: SmsCode


class StaffLoginIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    login_name: LoginName
    password: Password
    totp: Totp


class StaffPasswordIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    login_name: LoginName
    password: Password
    totp: Totp
    new_password: Password


class StaffActivateIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    login_name: LoginName
    activation_token: str
    new_password: Password


class StaffActivateOut(msgspec.Struct, rename="camel"):
    totp_secret: str
    otpauth_uri: str


class StaffActivateConfirmIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    login_name: LoginName
    activation_token: str
    totp: Totp


class RefreshIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    refresh_token: RefreshToken


class RevokedOut(msgspec.Struct, rename="camel"):
    revoked: int


class SessionOut(msgspec.Struct, rename="camel"):
    session_id: str
    audience: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    current: bool
    device: str | None = None
    ip: str | None = None


class SessionsOut(msgspec.Struct, rename="camel"):
    items: list[SessionOut]


class IdentityOut(msgspec.Struct, rename="camel"):
    provider: str
    app_id: str


class ResidentMeOut(msgspec.Struct, rename="camel"):
    account_id: str
    identities: list[IdentityOut]
    created_at: datetime
    phone_masked: str | None = None
    restricted: bool = False
    restriction: str | None = None


class LinkOut(msgspec.Struct, rename="camel"):
    hospital_code: str
    practitioner_id: str
    roles: list[str]


class StaffMeOut(msgspec.Struct, rename="camel"):
    account_id: str
    login_name: str
    display_name: str
    roles: list[str]
    links: list[LinkOut]
    password_changed_at: datetime | None = None


# ---------------------------------------------------------------- helpers


def _deps(state: State) -> BffDeps:
    deps: BffDeps = state.deps
    return deps


def client_context(request: Request[Any, Any, Any]) -> ClientContext:
    st = scope_state(request.scope)
    return ClientContext(
        ip=str(st.get("client_ip") or "") or None,
        device=(request.headers.get("user-agent") or "")[:200] or None,
        request_id=str(st.get("request_id") or "") or None,
    )


def tokens_out(state: State, result: LoginResult) -> TokensOut:
    tokens = _deps(state).tokens
    if tokens is None:
        raise UnavailableError("token signing is not configured", code="auth.not_configured")
    access, expires = tokens.mint(result.session)
    return TokensOut(
        access_token=access,
        access_token_expires_at=expires,
        refresh_token=result.refresh_token,
        session_id=result.session.id,
        account_id=result.session.account_id,
        audience=result.session.audience.value,
        new_account=result.new_account,
        restricted=result.session.restriction is not None,
    )


async def enforce(state: State, request: Request[Any, Any, Any], name: str, amount: int, per_seconds: int) -> None:
    """A per-client-address limit on a login route; fails closed when its store is down (D1)."""
    limiter = _deps(state).rate_limiter
    if limiter is None:
        return
    key = str(scope_state(request.scope).get("client_ip") or "unknown")
    try:
        decision = await limiter.hit(RateLimit(name, amount, per_seconds, fail_closed=True), key)
    except EphemeralStoreUnavailableError:
        raise UnavailableError("login limits unavailable", code="auth.limits_unavailable") from None
    if not decision.allowed:
        raise RateLimitedError(f"limit {name}", retry_after=decision.retry_after_seconds)


def _session_out(session: Session, current_id: str) -> SessionOut:
    ip = session.ip
    if ip and "." in ip:
        ip = ".".join(ip.split(".")[:2]) + ".*.*"
    elif ip and ":" in ip:
        ip = ":".join(ip.split(":")[:3]) + ":*"
    return SessionOut(
        session_id=session.id,
        audience=session.audience.value,
        created_at=session.created_at,
        last_seen_at=session.last_seen_at,
        expires_at=session.expires_at,
        current=session.id == current_id,
        device=session.device,
        ip=ip,
    )


def _identity_out(identity: Identity) -> IdentityOut:
    return IdentityOut(provider=identity.provider.value, app_id=identity.app_id)


# ---------------------------------------------------------------- resident logins


@post("/wechat/login", operation_id="authWechatLogin", summary="WeChat mini-program login (wx.login code)")
async def wechat_login(state: State, request: Request[Any, Any, Any], data: JSONBody[WechatLoginIn]) -> TokensOut:
    await enforce(state, request, "login-ip", 60, 60)
    result = await account_service(state).login_wechat(appid=data.appid, code=data.code, ctx=client_context(request))
    return tokens_out(state, result)


@post(
    "/wechat/phone",
    operation_id="authWechatBindPhone",
    summary="Bind the phone behind a getPhoneNumber button code",
    guards=[require_resident],
    security=[{"bearer": []}],
)
async def wechat_phone(state: State, request: Request[Any, Any, Any], data: JSONBody[WechatPhoneIn]) -> PhoneBindOut:
    session = current_session(request)
    if session.audience is not Audience.WECHAT_MP:
        raise ForbiddenError("WeChat sessions only", code="auth.wrong_audience")
    result = await account_service(state).bind_wechat_phone(
        session, appid=data.appid, code=data.code, ctx=client_context(request)
    )
    if result is None:
        return PhoneBindOut(joined=False)
    return PhoneBindOut(joined=True, tokens=tokens_out(state, result))


@post("/alipay/login", operation_id="authAlipayLogin", summary="Alipay mini-program login (my.getAuthCode)")
async def alipay_login(state: State, request: Request[Any, Any, Any], data: JSONBody[AlipayLoginIn]) -> TokensOut:
    await enforce(state, request, "login-ip", 60, 60)
    result = await account_service(state).login_alipay(
        app_id=data.app_id, auth_code=data.auth_code, ctx=client_context(request)
    )
    return tokens_out(state, result)


@post("/sms/code", operation_id="authSmsSendCode", summary="Send a login code by SMS (patient app)")
async def sms_code(state: State, request: Request[Any, Any, Any], data: JSONBody[SmsCodeIn]) -> SmsCodeOut:
    service = account_service(state)
    expires = await service.send_sms_code(
        phone=data.phone, ctx=client_context(request), captcha_token=data.captcha_token
    )
    return SmsCodeOut(expires_at=expires, resend_after_seconds=int(service.d.sms_codes.resend_after.total_seconds()))


@post("/sms/login", operation_id="authSmsLogin", summary="Log in with the SMS code (patient app)")
async def sms_login(state: State, request: Request[Any, Any, Any], data: JSONBody[SmsLoginIn]) -> TokensOut:
    await enforce(state, request, "login-ip", 60, 60)
    result = await account_service(state).login_sms(phone=data.phone, code=data.code, ctx=client_context(request))
    return tokens_out(state, result)


# ---------------------------------------------------------------- staff


@post("/staff/login", operation_id="authStaffLogin", summary="Staff login: password and TOTP")
async def staff_login(state: State, request: Request[Any, Any, Any], data: JSONBody[StaffLoginIn]) -> TokensOut:
    await enforce(state, request, "staff-login-ip", 20, 60)
    result = await account_service(state).staff_login(
        login_name=data.login_name, password=data.password, totp_code=data.totp, ctx=client_context(request)
    )
    return tokens_out(state, result)


@post(
    "/staff/password",
    operation_id="authStaffChangePassword",
    summary="Change a staff password (also when it expired); ends every session",
    status_code=204,
)
async def staff_password(state: State, request: Request[Any, Any, Any], data: JSONBody[StaffPasswordIn]) -> None:
    await enforce(state, request, "staff-login-ip", 20, 60)
    await account_service(state).change_staff_password(
        login_name=data.login_name,
        password=data.password,
        totp_code=data.totp,
        new_password=data.new_password,
        ctx=client_context(request),
    )


@post(
    "/staff/activate",
    operation_id="authStaffActivate",
    summary="Activate a staff account: choose the password, receive the TOTP secret",
)
async def staff_activate(
    state: State, request: Request[Any, Any, Any], data: JSONBody[StaffActivateIn]
) -> StaffActivateOut:
    await enforce(state, request, "staff-login-ip", 20, 60)
    enrolment = await account_service(state).start_staff_activation(
        login_name=data.login_name,
        token=data.activation_token,
        new_password=data.new_password,
        ctx=client_context(request),
    )
    return StaffActivateOut(totp_secret=enrolment.secret, otpauth_uri=enrolment.uri)


@post(
    "/staff/activate/confirm",
    operation_id="authStaffActivateConfirm",
    summary="Confirm TOTP enrolment with a first code",
    status_code=204,
)
async def staff_activate_confirm(
    state: State, request: Request[Any, Any, Any], data: JSONBody[StaffActivateConfirmIn]
) -> None:
    await enforce(state, request, "staff-login-ip", 20, 60)
    await account_service(state).finish_staff_activation(
        login_name=data.login_name, token=data.activation_token, totp_code=data.totp, ctx=client_context(request)
    )


# ---------------------------------------------------------------- sessions


@post("/refresh", operation_id="authRefresh", summary="Rotate the refresh token; a reused one ends the session")
async def refresh(state: State, request: Request[Any, Any, Any], data: JSONBody[RefreshIn]) -> TokensOut:
    await enforce(state, request, "refresh-ip", 120, 60)
    result = await account_service(state).refresh(refresh_token=data.refresh_token, ctx=client_context(request))
    return tokens_out(state, result)


@post("/logout", operation_id="authLogout", summary="End this session", status_code=204, security=[{"bearer": []}])
async def logout(state: State, request: Request[Any, Any, Any]) -> None:
    current_principal(request)
    await account_service(state).logout(current_session(request), ctx=client_context(request))


@post(
    "/logout-all",
    operation_id="authLogoutAll",
    summary="End every session of this account (all devices)",
    security=[{"bearer": []}],
)
async def logout_all(state: State, request: Request[Any, Any, Any]) -> RevokedOut:
    count = await account_service(state).logout_all(current_session(request), ctx=client_context(request))
    return RevokedOut(revoked=count)


@get("/sessions", operation_id="authSessions", summary="Active sessions of this account", security=[{"bearer": []}])
async def sessions(state: State, request: Request[Any, Any, Any]) -> SessionsOut:
    session = current_session(request)
    live = await account_service(state).live_sessions(session)
    return SessionsOut(items=[_session_out(s, session.id) for s in live])


@delete(
    "/sessions/{session_id:str}",
    operation_id="authRevokeSession",
    summary="End one session of this account",
    status_code=204,
    security=[{"bearer": []}],
)
async def revoke_session(state: State, request: Request[Any, Any, Any], session_id: FromPath[str]) -> None:
    await account_service(state).revoke_session(current_session(request), session_id, ctx=client_context(request))


auth_router = Router(
    path="/api/v1/auth",
    tags=["auth"],
    route_handlers=[
        wechat_login,
        wechat_phone,
        alipay_login,
        sms_code,
        sms_login,
        staff_login,
        staff_password,
        staff_activate,
        staff_activate_confirm,
        refresh,
        logout,
        logout_all,
        sessions,
        revoke_session,
    ],
)


# ---------------------------------------------------------------- me


@get(
    "/api/v1/patient/me",
    operation_id="patientMe",
    summary="The resident's own account",
    tags=["patient"],
    guards=[require_resident],
    security=[{"bearer": []}],
)
async def patient_me(state: State, request: Request[Any, Any, Any]) -> ResidentMeOut:
    session = current_session(request)
    profile = await account_service(state).resident_profile(session)
    return ResidentMeOut(
        account_id=profile.account.id,
        identities=[_identity_out(i) for i in profile.identities],
        created_at=profile.account.created_at,
        phone_masked=profile.phone_masked,
        restricted=session.restriction is not None,
        restriction=session.restriction.value if session.restriction else None,
    )


@get(
    "/api/v1/staff/me",
    operation_id="staffMe",
    summary="The staff member's own account",
    tags=["auth"],
    guards=[require_staff()],
    security=[{"bearer": []}],
)
async def staff_me(state: State, request: Request[Any, Any, Any]) -> StaffMeOut:
    staff = await account_service(state).staff_profile(current_session(request))
    return StaffMeOut(
        account_id=staff.id,
        login_name=staff.login_name,
        display_name=staff.display_name,
        roles=sorted(r.value for r in staff.roles),
        links=[
            LinkOut(
                hospital_code=link.hospital_code,
                practitioner_id=link.practitioner_id,
                roles=sorted(r.value for r in link.roles),
            )
            for link in staff.links
        ],
        password_changed_at=staff.password_changed_at,
    )


AUTH_HANDLERS: list[Any] = [auth_router, patient_me, staff_me]
