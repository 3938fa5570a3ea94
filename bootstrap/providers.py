"""Login providers (WeChat, Alipay, SMS): the real endpoints from settings, or, with the sandboxes mounted
(demo, test), the simulators served by this same process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bootstrap.his import AdapterBuilder
from bootstrap.settings import Settings
from domain.account.ports import AlipayMiniProgram, SmsSender, WechatMiniProgram
from domain.catalogue.model import Hospital
from domain.catalogue.ports import HisAdapter, HisPushReader
from domain.kernel.clock import Clock
from domain.kernel.crypto import FieldCipher
from domain.kernel.ephemeral import EphemeralStore
from domain.kernel.tasks import TaskRunner
from domain.notification.model import Channel
from domain.notification.ports import ChannelSender
from domain.notification.push import PushSender
from domain.notification.use_cases import NotificationDeps, NotificationService
from domain.patient.use_cases import PatientService
from domain.payment.ports import NoticeReader, PaymentChannel
from domain.payment.use_cases import PaymentService
from integrations.alipay.client import AlipayClient, AlipayMiniProgramLogin
from integrations.alipay.messages import AlipayMessageClient
from integrations.channels import AlipayMessageChannel, PushChannel, SmsChannel, WechatSubscribeChannel
from integrations.his.fhir import FhirHisAdapter
from integrations.his.push import FhirPushReader
from integrations.push.apns import ApnsSender
from integrations.push.jpush import JpushSender
from integrations.sms.aliyun import AliyunSmsSender
from integrations.sms.failover import FailoverSmsSender
from integrations.sms.tencent import TencentSmsSender
from integrations.wechat import WechatMiniProgramClient


@dataclass
class LoginProviders:
    wechat: dict[str, WechatMiniProgram] = field(default_factory=dict)
    alipay: dict[str, AlipayMiniProgram] = field(default_factory=dict)
    alipay_clients: dict[str, AlipayClient] = field(default_factory=dict)
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
    alipay_apps = {
        app_id: (app.private_key.reveal().encode(), app.alipay_public_key.encode())
        for app_id, app in settings.alipay.apps.items()
    }
    gateway = settings.alipay.gateway_url
    if sandboxed:
        from bootstrap import sandbox_accounts as demo

        alipay_apps = alipay_apps or {
            demo.ALIPAY_APP_ID: (
                demo.alipay_app_private_key(),
                demo.public_pem(demo.alipay_platform_private_key()),
            )
        }
        gateway = sandbox_base(settings, "alipay") + "/gateway.do"
    for app_id, (private_pem, alipay_public_pem) in alipay_apps.items():
        client = AlipayClient(
            app_id=app_id,
            app_private_key_pem=private_pem,
            alipay_public_key_pem=alipay_public_pem,
            gateway_url=gateway,
            http=http,
            clock=clock,
        )
        providers.alipay[app_id] = AlipayMiniProgramLogin(client)
        providers.alipay_clients[app_id] = client
    providers.sms = _sms(settings, http=http, clock=clock)
    return providers


def _sms(settings: Settings, *, http: httpx.AsyncClient, clock: Clock) -> SmsSender | None:
    cfg = settings.sms
    senders: list[SmsSender] = []
    if settings.sandbox.mount and not cfg.providers:
        from bootstrap import sandbox_accounts as demo

        senders.append(
            AliyunSmsSender(
                access_key_id=demo.ALIYUN_KEY_ID,
                access_key_secret=demo.ALIYUN_KEY_SECRET,
                sign_name=demo.SMS_SIGN_NAME,
                templates=demo.ALIYUN_TEMPLATE_CODES,
                endpoint=sandbox_base(settings, "aliyun-sms") + "/",
                http=http,
                clock=clock,
            )
        )
        senders.append(
            TencentSmsSender(
                secret_id=demo.TENCENT_SECRET_ID,
                secret_key=demo.TENCENT_SECRET_KEY,
                sdk_app_id=demo.TENCENT_SDK_APP_ID,
                sign_name=demo.SMS_SIGN_NAME,
                templates=demo.TENCENT_TEMPLATE_IDS,
                endpoint=sandbox_base(settings, "tencent-sms") + "/",
                http=http,
                clock=clock,
            )
        )
    for name in cfg.providers:
        if name == "aliyun" and cfg.aliyun_access_key_secret is not None:
            senders.append(
                AliyunSmsSender(
                    access_key_id=cfg.aliyun_access_key_id,
                    access_key_secret=cfg.aliyun_access_key_secret.reveal(),
                    sign_name=cfg.aliyun_sign_name,
                    templates=cfg.aliyun_templates,
                    endpoint=cfg.aliyun_endpoint,
                    http=http,
                    clock=clock,
                )
            )
        elif name == "tencent" and cfg.tencent_secret_key is not None:
            senders.append(
                TencentSmsSender(
                    secret_id=cfg.tencent_secret_id,
                    secret_key=cfg.tencent_secret_key.reveal(),
                    sdk_app_id=cfg.tencent_sdk_app_id,
                    sign_name=cfg.tencent_sign_name,
                    templates=cfg.tencent_templates,
                    endpoint=cfg.tencent_endpoint,
                    region=cfg.tencent_region,
                    http=http,
                    clock=clock,
                )
            )
    if not senders:
        return None
    return senders[0] if len(senders) == 1 else FailoverSmsSender(senders)


def build_his_adapter(settings: Settings, *, http: httpx.AsyncClient, clock: Clock) -> AdapterBuilder:
    """How a hospital's registry entry becomes its HIS adapter (FHIR R4 for now)."""

    def build(hospital: Hospital) -> HisAdapter | None:
        if hospital.adapter != "fhir":
            return None
        base_url = hospital.adapter_settings.get("base_url")
        if not base_url:
            return None
        return FhirHisAdapter(hospital_code=hospital.code, base_url=base_url, http=http, clock=clock)

    return build


def his_push_reader() -> HisPushReader:
    return FhirPushReader()


def build_notifications(
    settings: Settings,
    providers: LoginProviders,
    *,
    uow_factory: Callable[[], Any],
    clock: Clock,
    cipher: FieldCipher,
    runner: TaskRunner,
) -> NotificationService:
    """The notification service with the channels this deployment can reach."""
    senders: dict[Channel, ChannelSender] = {}
    clients = {k: v for k, v in providers.wechat.items() if isinstance(v, WechatMiniProgramClient)}
    template_ids = dict(settings.wechat.templates)
    if settings.sandbox.mount and not template_ids:
        from bootstrap import sandbox_accounts as demo

        template_ids = dict(demo.WECHAT_TEMPLATE_IDS)
    if clients and template_ids:
        senders[Channel.WECHAT_SUBSCRIBE] = WechatSubscribeChannel(
            clients, template_ids, state=settings.wechat.message_state
        )
    alipay_templates = dict(settings.alipay.message_templates)
    if settings.sandbox.mount and not alipay_templates:
        from bootstrap import sandbox_accounts as demo

        alipay_templates = dict.fromkeys(providers.alipay_clients, demo.ALIPAY_MESSAGE_TEMPLATE)
    if providers.alipay_clients and alipay_templates:
        senders[Channel.ALIPAY_MESSAGE] = AlipayMessageChannel(
            {k: AlipayMessageClient(v) for k, v in providers.alipay_clients.items()}, alipay_templates
        )
    if providers.sms is not None:
        senders[Channel.SMS] = SmsChannel(providers.sms)
    push = _push_senders(settings, clock=clock)
    if push:
        senders[Channel.APP_PUSH] = PushChannel(push)
    return NotificationService(
        NotificationDeps(
            uow_factory=uow_factory,
            clock=clock,
            cipher=cipher,
            runner=runner,
            senders=senders,
            wechat_template_ids=template_ids,
        )
    )


def _push_senders(settings: Settings, *, clock: Clock) -> dict[str, PushSender]:
    cfg = settings.push
    senders: dict[str, PushSender] = {}
    apns_key = cfg.apns_private_key.reveal().encode() if cfg.apns_private_key else None
    team, key_id, topic, apns_base = cfg.apns_team_id, cfg.apns_key_id, cfg.apns_topic, cfg.apns_base_url
    jpush_key, jpush_secret = cfg.jpush_app_key, cfg.jpush_master_secret.reveal() if cfg.jpush_master_secret else ""
    jpush_base = cfg.jpush_base_url
    if settings.sandbox.mount and apns_key is None:
        from bootstrap import sandbox_accounts as demo

        apns_key, team, key_id, topic = demo.apns_private_key(), demo.APNS_TEAM_ID, demo.APNS_KEY_ID, demo.APNS_TOPIC
        apns_base = sandbox_base(settings, "apns")
        jpush_key, jpush_secret, jpush_base = (
            demo.JPUSH_APP_KEY,
            demo.JPUSH_MASTER_SECRET,
            sandbox_base(settings, "jpush"),
        )
    if apns_key is not None and team and key_id and topic:
        # APNs speaks HTTP/2 only; the demo's in-process simulator answers over HTTP/1.1 as well.
        senders["apns"] = ApnsSender(
            team_id=team,
            key_id=key_id,
            private_key_pem=apns_key,
            topic=topic,
            base_url=apns_base,
            http=httpx.AsyncClient(http2=True, timeout=10.0, trust_env=False),
            clock=clock,
        )
    if jpush_key and jpush_secret:
        senders["jpush"] = JpushSender(
            app_key=jpush_key,
            master_secret=jpush_secret,
            base_url=jpush_base,
            http=httpx.AsyncClient(timeout=10.0, trust_env=False),
            production=cfg.jpush_production,
        )
    return senders


def build_patients(
    settings: Settings,
    providers: LoginProviders,
    *,
    uow_factory: Callable[[], Any],
    clock: Clock,
    crypto: Any,
    store: EphemeralStore,
    rate_limiter: Any,
    http: httpx.AsyncClient,
    his: Any,
    runner: TaskRunner,
) -> PatientService:
    """The patients service with its real-name verifier and card platform: the simulators when the sandbox is
    mounted, else the configured vendors (unset: those steps answer 503 with a stable code)."""
    from datetime import timedelta

    from domain.identity.verification import RealNameVerifier
    from domain.patient.rules import PatientPolicy
    from domain.patient.use_cases import CardUseCodes, PatientDeps
    from integrations.healthcard.client import HealthCardClient
    from integrations.healthcard.platform import HealthCardPlatformAdapter
    from integrations.verification.tencent import TencentFaceIdVerifier

    verifier: RealNameVerifier | None = None
    cards: HealthCardPlatformAdapter | None = None
    vcfg, ccfg = settings.verification, settings.healthcard
    if settings.sandbox.mount:
        from bootstrap import sandbox_accounts as demo
        from sandbox.healthcard import DEMO_APP_ID, DEMO_APP_SECRET, DEMO_HOSPITAL_ID
        from sandbox.verification import DEMO_RULE_ID
        from sandbox.wechat import DEMO_APPID

        verifier = TencentFaceIdVerifier(
            secret_id=demo.TENCENT_SECRET_ID,
            secret_key=demo.TENCENT_SECRET_KEY,
            rule_id=DEMO_RULE_ID,
            http=http,
            clock=clock,
            endpoint=sandbox_base(settings, "tencent-faceid"),
        )
        card_client = HealthCardClient(
            app_id=DEMO_APP_ID,
            app_secret=DEMO_APP_SECRET,
            hospital_id=DEMO_HOSPITAL_ID,
            http=http,
            clock=clock,
            base_url=sandbox_base(settings, "healthcard"),
            relate_app_id=next(iter(settings.wechat.apps), None) or DEMO_APPID,
            token_cache=store,
            dynamic_code_lifetime_seconds=ccfg.dynamic_code_seconds,
        )
        cards = HealthCardPlatformAdapter(card_client)
    else:
        if vcfg.provider == "tencent" and vcfg.secret_key is not None:
            verifier = TencentFaceIdVerifier(
                secret_id=vcfg.secret_id,
                secret_key=vcfg.secret_key.reveal(),
                rule_id=vcfg.rule_id,
                http=http,
                clock=clock,
                endpoint=vcfg.endpoint,
            )
        if ccfg.app_secret is not None and ccfg.app_id:
            cards = HealthCardPlatformAdapter(
                HealthCardClient(
                    app_id=ccfg.app_id,
                    app_secret=ccfg.app_secret.reveal(),
                    hospital_id=ccfg.hospital_id,
                    http=http,
                    clock=clock,
                    base_url=ccfg.base_url,
                    relate_app_id=ccfg.relate_app_id or None,
                    token_cache=store,
                    dynamic_code_lifetime_seconds=ccfg.dynamic_code_seconds,
                )
            )
    pcfg = settings.patients
    return PatientService(
        PatientDeps(
            uow_factory=uow_factory,
            clock=clock,
            cipher=crypto.cipher,
            blind_index=crypto.blind_index,
            mac=crypto.mac,
            policy=PatientPolicy(
                max_patients=pcfg.max_patients,
                adult_age=pcfg.adult_age,
                consent_version=pcfg.consent_version,
                step_up_ttl=timedelta(minutes=pcfg.step_up_minutes),
                verification_cache_ttl=timedelta(days=pcfg.verification_cache_days),
                verifications_per_account_day=pcfg.verifications_per_account_day,
            ),
            verifier=verifier,
            store=store,
            rate_limiter=rate_limiter,
            sms=providers.sms,
            cards=cards,
            his=his,
            runner=runner,
            card_codes=CardUseCodes(
                scenes=dict(ccfg.scenes),
                department=ccfg.department,
                card_type=ccfg.card_type,
                card_channel=ccfg.card_channel,
                cost_types=ccfg.cost_types,
            ),
            # A key of its own for the verification cache, derived from the deployment's MAC key.
            verification_cache_secret=crypto.mac.mac(b"verification-cache", context="patient.verification"),
        )
    )


def build_billing(
    *,
    uow_factory: Callable[[], Any],
    clock: Clock,
    his: Any,
    patients: PatientService,
    payments: PaymentService,
) -> Any:
    """Outpatient bills (诊间支付) over the HIS gateway's billing, the patients and the payment service."""
    from domain.billing.use_cases import BillingDeps, BillingService

    return BillingService(
        BillingDeps(uow_factory=uow_factory, clock=clock, his=his, patients=patients, payments=payments)
    )


def build_bookings(
    settings: Settings,
    *,
    uow_factory: Callable[[], Any],
    clock: Clock,
    his: Any,
    patients: PatientService,
    payments: PaymentService,
    gate: Any,
    gate_rebuild: Any = None,
    notifications: NotificationService | None = None,
) -> Any:
    """Booking against the number-source pool, with the Redis gate in front when Redis is configured. With the
    notification service, confirmed bookings get their reminders (and it learns to skip those of bookings that are
    no longer confirmed)."""
    from datetime import time as clock_time
    from datetime import timedelta

    from domain.booking.reminders import SUBJECT_TYPE, ReminderPolicy, still_confirmed
    from domain.booking.rules import BanRule, BookingPolicy, PersonLimits
    from domain.booking.use_cases import BookingDeps, BookingService

    cfg = settings.booking
    policy = BookingPolicy(
        limits=PersonLimits(
            per_department_day=cfg.per_department_day,
            per_day=cfg.per_day,
            short_window_days=cfg.short_window_days,
            short_window_max=cfg.short_window_max,
            long_window_months=cfg.long_window_months,
            long_window_max=cfg.long_window_max,
        ),
        bans=(BanRule(count=cfg.ban_no_shows, window_days=cfg.ban_window_days, ban_days=cfg.ban_days),),
    )
    service = BookingService(
        BookingDeps(
            uow_factory=uow_factory,
            clock=clock,
            patients=patients,
            payments=payments,
            his=his,
            gate=gate,
            gate_rebuild=gate_rebuild,
            policy=policy,
            max_holds_in_flight=cfg.max_holds_in_flight,
            reminders=notifications,
            reminder_policy=ReminderPolicy(
                evening=clock_time.fromisoformat(cfg.reminder_evening_time),
                before=timedelta(minutes=cfg.reminder_before_minutes),
            ),
        )
    )
    if notifications is not None:
        notifications.d.subject_checks[SUBJECT_TYPE] = still_confirmed(uow_factory)
    return service


def build_waitlist(settings: Settings, *, uow_factory: Callable[[], Any], bookings: Any) -> Any:
    """The waitlist (候补) on top of the booking service, which from now on keeps the numbers its bookings give
    back for the people waiting (``BookingDeps.waitlist``)."""
    from datetime import timedelta

    from domain.booking.waitlist import OfferPolicy
    from domain.booking.waitlist_service import WaitlistDeps, WaitlistService

    cfg = settings.booking
    service = WaitlistService(
        WaitlistDeps(
            uow_factory=uow_factory,
            bookings=bookings,
            policy=OfferPolicy(
                hold=timedelta(minutes=cfg.waitlist_offer_minutes),
                delivery_grace=timedelta(minutes=cfg.waitlist_delivery_grace_minutes),
            ),
        )
    )
    bookings.d.waitlist = service
    return service


def build_slot_gate(settings: Settings) -> tuple[Any, Callable[[], Awaitable[None]] | None]:
    """The sold-out gate (and how to close it): in Redis when configured, shared by every app process, else in
    this process (the demo)."""
    from persistence.ephemeral.slot_gate import MemorySlotGate, RedisSlotGate

    if settings.redis.url is None:
        return MemorySlotGate(), None
    gate = RedisSlotGate.from_url(settings.redis.url.reveal(), prefix=settings.redis.prefix)
    return gate, gate.close


def build_payments(
    settings: Settings,
    *,
    uow_factory: Callable[[], Any],
    clock: Clock,
    runner: TaskRunner,
    channels: Mapping[str, PaymentChannel],
) -> PaymentService:
    """The payment service with the channels this deployment has (WeChat Pay, Alipay)."""
    from domain.payment.use_cases import PaymentDeps

    base = settings.http.public_base_url.rstrip("/")
    return PaymentService(
        PaymentDeps(
            uow_factory=uow_factory,
            clock=clock,
            channels=channels,
            runner=runner,
            notify_urls={"wechat": f"{base}/callbacks/wechat-pay", "alipay": f"{base}/callbacks/alipay"},
            # The adapters verify their own notifications.
            notice_readers={name: c for name, c in channels.items() if isinstance(c, NoticeReader)},
        )
    )


def build_payment_channels(
    settings: Settings, *, http: httpx.AsyncClient, clock: Clock, providers: LoginProviders
) -> dict[str, PaymentChannel]:
    """WeChat Pay and Alipay channels: from settings, or the simulators' demo merchant when the sandbox is
    mounted and nothing is configured. A channel without settings is simply not offered."""
    from integrations.alipay.trade import AlipayTradeClient
    from integrations.payments import AlipayChannel, WechatPayChannel
    from integrations.wechat.pay import PlatformKeyStore, WechatPayClient

    channels: dict[str, PaymentChannel] = {}
    pay = settings.wechatpay
    if pay.mchid and pay.merchant_private_key and pay.merchant_serial_no and pay.api_v3_key:
        wechat = (
            pay.mchid,
            pay.merchant_private_key.reveal().encode(),
            pay.merchant_serial_no,
            pay.api_v3_key.reveal().encode(),
            pay.base_url,
            pay.app_appid,
        )
        platform = (
            PlatformKeyStore.public_key(pay.platform_public_key_id, pay.platform_public_key.encode())
            if pay.platform_public_key_id and pay.platform_public_key
            else PlatformKeyStore.certificates()
        )
    elif settings.sandbox.mount:
        from bootstrap import sandbox_accounts as demo

        wechat = (
            demo.WECHATPAY_MCHID,
            demo.wechatpay_merchant_private_key(),
            demo.WECHATPAY_MERCHANT_SERIAL,
            demo.WECHATPAY_API_V3_KEY.encode(),
            sandbox_base(settings, "wechatpay"),
            demo.WECHATPAY_APP_APPID,
        )
        platform = PlatformKeyStore.certificates()
    else:
        wechat = None
    if wechat is not None:
        mchid, key, serial, api_v3_key, base_url, app_appid = wechat
        client = WechatPayClient(
            mchid=mchid,
            merchant_private_key_pem=key,
            merchant_serial_no=serial,
            api_v3_key=api_v3_key,
            platform=platform,
            http=http,
            clock=clock,
            base_url=base_url,
        )
        app_ids = frozenset(providers.wechat) | ({app_appid} if app_appid else set())
        channels["wechat"] = WechatPayChannel(client, clock, app_appid=app_appid, app_ids=app_ids)

    app_id = settings.payments.alipay_app_id or next(iter(providers.alipay_clients), None)
    alipay_client = providers.alipay_clients.get(app_id) if app_id else None
    if alipay_client is not None:
        seller_id = settings.payments.alipay_seller_id
        if settings.sandbox.mount and not settings.alipay.apps:
            from bootstrap import sandbox_accounts as demo

            seller_id = seller_id or demo.ALIPAY_SELLER_ID
        trades = AlipayTradeClient(
            alipay_client,
            alipay_public_key_pem=alipay_client.alipay_public_key_pem,
            http=http,
            seller_id=seller_id,
        )
        channels["alipay"] = AlipayChannel(trades, clock)
    return channels
