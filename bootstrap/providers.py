"""Login providers (WeChat, Alipay, SMS): real endpoints from settings, or the mounted sandboxes in demo/test."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from bootstrap.settings import Settings
from domain.account.ports import AlipayMiniProgram, SmsSender, WechatMiniProgram
from domain.kernel.clock import Clock
from domain.kernel.ephemeral import EphemeralStore


@dataclass
class LoginProviders:
    wechat: dict[str, WechatMiniProgram] = field(default_factory=dict)
    alipay: dict[str, AlipayMiniProgram] = field(default_factory=dict)
    sms: SmsSender | None = None


def build_login_providers(
    settings: Settings, *, http: httpx.AsyncClient, store: EphemeralStore, clock: Clock
) -> LoginProviders:
    return LoginProviders()
