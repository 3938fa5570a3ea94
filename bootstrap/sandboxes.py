"""The simulators of outside systems: mounted in the app process (demo, test) or served standalone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bootstrap.clock import LocalOffsetStore, OffsetClock
from domain.kernel.clock import ClockControl
from sandbox.alipay import AlipaySimulator
from sandbox.echo import EchoSimulator
from sandbox.framework import SandboxContext, Simulator, build_sandbox_app, sandbox_route_handlers
from sandbox.healthcard import healthcard_simulator
from sandbox.his import HisSimulator
from sandbox.push import ApnsSimulator, JpushSimulator
from sandbox.sms import AliyunSmsSimulator, TencentSmsSimulator
from sandbox.verification import faceid_simulator
from sandbox.wechat import WechatSimulator
from sandbox.wechatpay import SimulatedMerchant, WechatPaySimulator

if TYPE_CHECKING:
    from bootstrap.container import Container


def simulators(callback_base_url: str | None = None) -> list[Simulator]:
    """Every simulator. Feature work adds its own here (HIS, WeChat, WeChat Pay, Alipay, SMS, push, card)."""
    from bootstrap import sandbox_accounts as demo

    return [
        EchoSimulator(),
        WechatSimulator(),
        ApnsSimulator(
            team_id=demo.APNS_TEAM_ID,
            keys={demo.APNS_KEY_ID: demo.public_pem(demo.apns_private_key())},
            topics=[demo.APNS_TOPIC],
        ),
        JpushSimulator(apps={demo.JPUSH_APP_KEY: demo.JPUSH_MASTER_SECRET}),
        AlipaySimulator(
            apps={demo.ALIPAY_APP_ID: demo.public_pem(demo.alipay_app_private_key())},
            alipay_private_key_pem=demo.alipay_platform_private_key(),
            seller_id=demo.ALIPAY_SELLER_ID,
        ),
        WechatPaySimulator(
            merchants=[
                SimulatedMerchant(
                    mchid=demo.WECHATPAY_MCHID,
                    public_key_pem=demo.public_pem(demo.wechatpay_merchant_private_key()),
                    serial_no=demo.WECHATPAY_MERCHANT_SERIAL,
                    api_v3_key=demo.WECHATPAY_API_V3_KEY.encode(),
                )
            ],
            platform_private_key_pem=demo.wechatpay_platform_private_key(),
            public_key_private_pem=demo.wechatpay_public_key_private_key(),
            relay_base_url=f"{callback_base_url}/sandbox/wechatpay" if callback_base_url else None,
        ),
        AliyunSmsSimulator(
            access_key_id=demo.ALIYUN_KEY_ID,
            access_key_secret=demo.ALIYUN_KEY_SECRET,
            sign_names=[demo.SMS_SIGN_NAME],
            templates=demo.ALIYUN_TEMPLATES,
        ),
        HisSimulator(
            subscription_secrets={code: info["secret"] for code, info in demo.HIS_HOSPITALS.items()},
            callback_base_url=callback_base_url,
            lock_minutes=20,  # longer than the 15-minute payment deadline (APT-009)
        ),
        TencentSmsSimulator(
            secret_id=demo.TENCENT_SECRET_ID,
            secret_key=demo.TENCENT_SECRET_KEY,
            sdk_app_id=demo.TENCENT_SDK_APP_ID,
            sign_names=[demo.SMS_SIGN_NAME],
            templates=demo.TENCENT_TEMPLATES,
        ),
        faceid_simulator(secret_id=demo.TENCENT_SECRET_ID, secret_key=demo.TENCENT_SECRET_KEY),
        healthcard_simulator(),
    ]


Hook = Callable[[], Awaitable[Any]]


def sandbox_mount(container: Container) -> tuple[list[Any], list[Hook], list[Hook]]:
    """Routers to mount on the public app, and the sandbox's start and stop hooks."""
    settings = container.settings
    if settings.env not in ("demo", "test"):
        raise RuntimeError("sandboxes are mounted only with HSP_ENV=demo or test")
    if container.clock_control is None:
        raise RuntimeError("sandboxes need the shared offset clock (HSP_CLOCK__MODE=offset)")
    ctx = SandboxContext(container.clock_control)
    sims = simulators(settings.http.public_base_url.rstrip("/"))
    for sim in sims:
        ctx.register(sim)
    container.runtime.services["sandbox"] = ctx
    pump: dict[str, asyncio.Task[None]] = {}

    async def start() -> None:
        pump["task"] = asyncio.get_running_loop().create_task(ctx.pump_periodically(1.0))

    async def stop() -> None:
        task = pump.pop("task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await ctx.aclose()

    return list(sandbox_route_handlers(sims, ctx)), [start], [stop]


def run_sandboxes(*, host: str, port: int, clock: ClockControl | None = None) -> int:
    """``bff sandbox``: every simulator on one standalone server with its own offset clock."""
    import uvicorn

    ctx = SandboxContext(clock or OffsetClock(LocalOffsetStore()))
    sims = simulators()
    for sim in sims:
        ctx.register(sim)
    app = build_sandbox_app(sims, ctx)
    print(f"sandboxes on http://{host}:{port}/sandbox/ ({', '.join(s.name for s in sims)})", flush=True)  # noqa: T201
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
