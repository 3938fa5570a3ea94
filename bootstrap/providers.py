"""Login providers (WeChat, Alipay, SMS): the real endpoints from settings, or, with the sandboxes mounted
(demo, test), the simulators served by this same process."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from bootstrap.settings import Settings
from domain.account.ports import AlipayMiniProgram, SmsSender, WechatMiniProgram
from domain.kernel.clock import Clock
from domain.kernel.ephemeral import EphemeralStore
from integrations.wechat import WechatMiniProgramClient


@dataclass
class LoginProviders:
    wechat: dict[str, WechatMiniProgram] = field(default_factory=dict)
    alipay: dict[str, AlipayMiniProgram] = field(default_factory=dict)
    sms: SmsSender | None = None


def sandbox_base(settings: Settings, name: str) -> str:
    return f"{settings.http.public_base_url.rstrip('/')}/sandbox/{name}"


def build_login_providers(
    settings: Settings, *, http: httpx.AsyncClient, store: EphemeralStore, clock: Clock
) -> LoginProviders:
    providers = LoginProviders()
    sandboxed = settings.sandbox.mount

    wechat_apps = {appid: secret.reveal() for appid, secret in settings.wechat.apps.items()}
    wechat_base = settings.wechat.base_url
    if sandboxed:
        from sandbox.wechat import DEMO_APPID, DEMO_SECRET

        wechat_apps = wechat_apps or {DEMO_APPID: DEMO_SECRET}
        wechat_base = sandbox_base(settings, "wechat")
    for appid, secret in wechat_apps.items():
        providers.wechat[appid] = WechatMiniProgramClient(
            appid=appid, secret=secret, base_url=wechat_base, store=store, http=http, clock=clock
        )
    return providers
