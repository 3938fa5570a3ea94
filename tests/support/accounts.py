"""The real account service and edge around real PostgreSQL, with fakes of the outside login providers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from litestar import Litestar

from bff.app import create_admin_app, create_app
from bff.auth.principal import SessionAuthenticator
from bff.auth.tokens import AccessTokens, SigningKeys
from bff.deps import BffDeps, EdgeConfig
from domain.account.ports import AlipayIdentity, LoginCodeError, SmsReceipt, WechatSession
from domain.account.use_cases import AccountDeps, AccountService
from domain.kernel.ephemeral import EphemeralStore
from domain.kernel.ratelimit import RateLimiter
from integrations.crypto.keys import Keyring, generate_keyring_config
from integrations.crypto.passwords import Argon2PasswordHasher
from integrations.crypto.suite import build_suite
from integrations.crypto.totp import PyotpTotp
from persistence.db import ConnectionSource
from persistence.ephemeral.memory_store import InMemoryEphemeralStore
from persistence.ephemeral.ratelimit import LimitsRateLimiter
from persistence.kernel.idempotency import SqlIdempotencyStore
from persistence.uow import unit_of_work_factory
from tests.support.app import FixedClock

WECHAT_APPID = "wx-test-app"
ALIPAY_APPID = "2021000000000001"


class FakeWechat:
    """A fake of the WechatMiniProgram port: codes are minted by the test."""

    def __init__(self) -> None:
        self.codes: dict[str, WechatSession] = {}
        self.phone_codes: dict[str, str] = {}

    @property
    def appid(self) -> str:
        return WECHAT_APPID

    def mint(self, openid: str, unionid: str | None = None) -> str:
        code = f"code-{len(self.codes)}-{openid}"
        self.codes[code] = WechatSession(openid=openid, session_key="sk", unionid=unionid)
        return code

    async def code_to_session(self, code: str) -> WechatSession:
        session = self.codes.pop(code, None)
        if session is None:
            raise LoginCodeError("40163 code been used")
        return session

    async def phone_number(self, code: str, *, openid: str | None = None) -> str:
        phone = self.phone_codes.pop(code, None)
        if phone is None:
            raise LoginCodeError("40029 invalid code")
        return phone


class FakeAlipay:
    def __init__(self) -> None:
        self.codes: dict[str, AlipayIdentity] = {}

    @property
    def app_id(self) -> str:
        return ALIPAY_APPID

    async def exchange_auth_code(self, auth_code: str) -> AlipayIdentity:
        identity = self.codes.pop(auth_code, None)
        if identity is None:
            raise LoginCodeError("isv.code-invalid")
        return identity


@dataclass
class FakeSms:
    sent: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    @property
    def provider(self) -> str:
        return "fake"

    async def send(self, phone: str, template: str, params: Mapping[str, str]) -> SmsReceipt:
        self.sent.append((phone, template, dict(params)))
        return SmsReceipt(provider="fake", message_id=str(len(self.sent)))

    def last_code(self, phone: str) -> str:
        return next(p["code"] for number, _, p in reversed(self.sent) if number == phone)


@dataclass
class AccountHarness:
    public: Litestar
    admin: Litestar
    service: AccountService
    clock: FixedClock
    wechat: FakeWechat
    alipay: FakeAlipay
    sms: FakeSms
    totp: PyotpTotp
    tokens: AccessTokens
    deps: BffDeps


def build_account_harness(
    source: ConnectionSource,
    *,
    store: EphemeralStore | None = None,
    limiter: RateLimiter | None = None,
    extra_deps: dict[str, Any] | None = None,
) -> AccountHarness:
    clock = FixedClock()
    cfg = generate_keyring_config()
    suite = build_suite("intl", Keyring.from_config(cfg["active_kid"], cfg["keys"], cfg["index_key"]))
    wechat, alipay, sms, totp = FakeWechat(), FakeAlipay(), FakeSms(), PyotpTotp()
    store = store if store is not None else InMemoryEphemeralStore()
    limiter = limiter if limiter is not None else LimitsRateLimiter.memory()
    service = AccountService(
        AccountDeps(
            uow_factory=unit_of_work_factory(source),
            clock=clock,
            cipher=suite.cipher,
            blind_index=suite.blind_index,
            mac=suite.mac,
            hasher=Argon2PasswordHasher(memory_cost=8192, time_cost=1, parallelism=1),
            totp=totp,
            rate_limiter=limiter,
            store=store,
            wechat={WECHAT_APPID: wechat},
            alipay={ALIPAY_APPID: alipay},
            sms=sms,
            **(extra_deps or {}),
        )
    )
    tokens = AccessTokens(
        SigningKeys.from_pem("k1", {"k1": SigningKeys.generate_pem()}), clock=clock, ttl=timedelta(minutes=10)
    )
    deps = BffDeps(
        config=EdgeConfig(env="test", docs=True, rate_limit_enabled=False),
        clock=clock,
        uow_factory=unit_of_work_factory(source),
        idempotency=SqlIdempotencyStore(source),
        rate_limiter=limiter,
        authenticator=SessionAuthenticator(tokens, service),
        accounts=service,
        tokens=tokens,
    )
    public = create_app(deps)
    return AccountHarness(
        public=public,
        admin=create_admin_app(deps, public),
        service=service,
        clock=clock,
        wechat=wechat,
        alipay=alipay,
        sms=sms,
        totp=totp,
        tokens=tokens,
        deps=deps,
    )
