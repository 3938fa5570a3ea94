"""Settings: one msgspec struct tree built from ``HSP_<SECTION>__<KEY>`` environment variables.

An optional ``.env`` file is read for local use (real environment variables win). An unknown ``HSP_``
variable or a bad value stops the process at start with a message naming the variable. Secrets are
:class:`Secret` strings whose ``repr`` hides them, so a settings object can be logged safely.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

Environment = Literal["prod", "staging", "test", "demo"]


class Secret(str):
    """A string whose repr and str-in-containers never show the value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('**********')"

    def reveal(self) -> str:
        return str.__str__(self)


class SettingsError(Exception):
    """A setting is unknown, malformed or not allowed in this environment."""


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class HttpSettings(_Base):
    bind: str = "127.0.0.1:8000"
    """The public listener (residents and staff apps, callbacks)."""
    admin_bind: str = "127.0.0.1:8001"
    """The admin listener: /healthz, /readyz, /metrics, /docs and /api/v1/admin. A private address."""
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    """CIDRs of reverse proxies whose X-Forwarded-For is believed."""
    max_body_bytes: int = 1_048_576
    docs: bool = False
    """Serve the docs UI on the admin listener (never on in prod unless set)."""
    public_base_url: str = "http://127.0.0.1:8000"
    request_timeout_seconds: float = 30.0


class DbSettings(_Base):
    url: Secret | None = None
    """The application's connection (a role with only the rights it needs). None: embedded SQLite."""
    owner_url: Secret | None = None
    """The schema owner's connection, used by migrations only. Defaults to ``url``."""
    app_role: str = "hsp_app"
    """The role migrations grant the application's rights to (PostgreSQL)."""
    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout_seconds: float = 10.0
    statement_timeout_ms: int = 15_000
    echo: bool = False


class RedisSettings(_Base):
    url: Secret | None = None
    """None: the in-process store (demo only)."""
    prefix: str = "hsp:"
    socket_timeout_seconds: float = 2.0


class BrokerSettings(_Base):
    url: Secret | None = None
    """Celery broker: defaults to the Redis URL; an amqp:// URL selects RabbitMQ."""
    visibility_timeout_seconds: int = 3600
    task_default_queue: str = "hsp"
    beat_schedule_path: str = ".data/celerybeat-schedule"
    """Where ``bff beat`` keeps its last-run times."""
    worker_metrics_bind: str | None = None
    """``host:port`` where ``bff worker`` serves Prometheus metrics summed over its processes (a private
    address; unset: no listener)."""


class ClockSettings(_Base):
    mode: Literal["system", "offset"] = "system"


class CryptoSettings(_Base):
    suite: Literal["intl", "sm"] = "intl"
    active_kid: str = ""
    keys: dict[str, Secret] = msgspec.field(default_factory=dict)
    """Key id -> base64 of 32 bytes. Keep retired keys until every token written with them is rotated."""
    index_key: Secret | None = None
    """Base64 of 32 bytes for blind indexes; stable across rotations."""
    demo_keys: bool = False
    """Generated demo keys (refused in prod)."""


class BlobSettings(_Base):
    backend: Literal["filesystem", "s3"] = "filesystem"
    root: str = ".data/blobs"
    s3_endpoint_url: str | None = None
    s3_bucket: str = "hsp-blobs"
    s3_region: str = "cn-north-1"
    s3_access_key_id: Secret | None = None
    s3_secret_access_key: Secret | None = None
    link_ttl_seconds: int = 300


class RateLimitSettings(_Base):
    enabled: bool = True
    per_account_per_minute: int = 600
    per_ip_per_minute: int = 1200


class IdempotencySettings(_Base):
    lease_seconds: int = 60
    """How long an in-progress record blocks retries before it may be taken over."""
    retain_hours: int = 24


class AuthSettings(_Base):
    """Sessions and logins (SEC-A-02..05). Every number is a configurable convention."""

    signing_keys: dict[str, Secret] = msgspec.field(default_factory=dict)
    """Key id -> PEM of an EC P-256 private key for access tokens (ES256). Keep old ids while tokens live."""
    active_kid: str = ""
    access_token_minutes: int = 10
    resident_idle_minutes: int = 30
    resident_absolute_days: int = 30
    staff_idle_minutes: int = 15
    staff_absolute_hours: int = 12
    password_min_length: int = 12
    password_max_age_days: int = 90
    password_history: int = 5
    lockout_failures: int = 5
    lockout_window_minutes: int = 15
    lockout_minutes: int = 30
    sms_code_ttl_seconds: int = 300
    sms_code_attempts: int = 5
    sms_resend_seconds: int = 60
    sms_daily_per_phone: int = 10
    sms_daily_per_ip: int = 50
    sms_captcha_after: int = 3
    dormant_days: int = 180
    argon2_memory_kib: int = 65536
    argon2_time_cost: int = 3


class WechatSettings(_Base):
    base_url: str = "https://api.weixin.qq.com"
    apps: dict[str, Secret] = msgspec.field(default_factory=dict)
    """Mini-program appid -> AppSecret."""
    templates: dict[str, str] = msgspec.field(default_factory=dict)
    """Our subscribe-template names (e.g. security_notice) -> the template ids approved for the mini-program."""
    message_state: Literal["developer", "trial", "formal"] = "formal"


class AlipayAppSettings(_Base):
    private_key: Secret
    """PEM of the application's RSA private key."""
    alipay_public_key: str
    """PEM of Alipay's public key for this application."""


class AlipaySettings(_Base):
    gateway_url: str = "https://openapi.alipay.com/gateway.do"
    apps: dict[str, AlipayAppSettings] = msgspec.field(default_factory=dict)
    message_templates: dict[str, str] = msgspec.field(default_factory=dict)
    """Mini-program app id -> its service-notice subscribe template id (two keywords: title and body)."""


class WechatPaySettings(_Base):
    """One direct merchant of WeChat Pay API v3 (protocols §2)."""

    base_url: str = "https://api.mch.weixin.qq.com"
    mchid: str | None = None
    merchant_private_key: Secret | None = None
    """PEM of the merchant API certificate's private key."""
    merchant_serial_no: str | None = None
    api_v3_key: Secret | None = None
    """The APIv3 key: exactly 32 bytes."""
    platform_public_key_id: str | None = None
    """Public-key mode: the ``PUB_KEY_ID_...`` of WeChat Pay's public key; unset: platform-certificate mode."""
    platform_public_key: str | None = None
    """Public-key mode: the PEM of WeChat Pay's public key."""
    app_appid: str | None = None
    """The patient app's open-platform app id, for APP payments."""


class PaymentSettings(_Base):
    alipay_seller_id: str | None = None
    """The merchant's ``2088`` partner id, checked on every Alipay notification."""
    alipay_app_id: str | None = None
    """Which configured Alipay app takes payments (default: the first of HSP_ALIPAY__APPS)."""


class BookingSettings(_Base):
    """Platform-wide booking rules (per-hospital ones are each hospital's ``rules``)."""

    per_department_day: int = 1
    """APT-005 [C]: bookings per person, visit day, hospital and department."""
    per_day: int = 2
    """APT-005 [C]: bookings per person and visit day."""
    short_window_days: int = 7
    short_window_max: int = 3
    """APT-005 [C]: at most this many in any ``short_window_days`` days."""
    long_window_months: int = 3
    long_window_max: int = 5
    """APT-005 [C]: at most this many in any ``long_window_months`` months."""
    max_holds_in_flight: int = 16
    """Holds one app process runs at once (each needs a database connection: keep it below the pool size);
    beyond it residents get 429 with Retry-After at once instead of waiting for a connection."""
    ban_no_shows: int = 3
    ban_window_days: int = 90
    ban_days: int = 90
    """APT-008 [C]: ``ban_no_shows`` no-shows within ``ban_window_days`` suspend online booking for ``ban_days``."""
    reminder_evening_time: str = "20:00"
    """Appointment reminders: the evening before the visit at this time (HH:MM, Beijing time; moved before quiet
    hours when it falls inside them) ..."""
    reminder_before_minutes: int = 120
    """... and this many minutes before the slot (1 to 1440)."""
    waitlist_offer_minutes: int = 30
    """The waitlist (候补): how long a freed number is held for the person offered it, counted from the delivery
    of the offer's message ..."""
    waitlist_delivery_grace_minutes: int = 10
    """... which counts at the latest this long after the offer, delivered or not."""


class SmsSettings(_Base):
    providers: list[Literal["aliyun", "tencent"]] = msgspec.field(default_factory=list)
    """In failover order."""
    aliyun_endpoint: str = "https://dysmsapi.aliyuncs.com"
    aliyun_access_key_id: str = ""
    aliyun_access_key_secret: Secret | None = None
    aliyun_sign_name: str = ""
    aliyun_templates: dict[str, str] = msgspec.field(default_factory=dict)
    tencent_endpoint: str = "https://sms.tencentcloudapi.com"
    tencent_region: str = "ap-guangzhou"
    tencent_secret_id: str = ""
    tencent_secret_key: Secret | None = None
    tencent_sdk_app_id: str = ""
    tencent_sign_name: str = ""
    tencent_templates: dict[str, str] = msgspec.field(default_factory=dict)


class PushSettings(_Base):
    apns_base_url: str = "https://api.push.apple.com"
    apns_team_id: str = ""
    apns_key_id: str = ""
    apns_private_key: Secret | None = None
    """PEM of the APNs auth key (.p8, EC P-256)."""
    apns_topic: str = ""
    """The app's bundle id."""
    jpush_base_url: str = "https://api.jpush.cn"
    jpush_app_key: str = ""
    jpush_master_secret: Secret | None = None
    jpush_production: bool = False


class VerificationSettings(_Base):
    """Real-name verification (Tencent Cloud FaceID). Unset: adding patients is unavailable outside the sandbox."""

    provider: Literal["tencent"] | None = None
    endpoint: str = "https://faceid.tencentcloudapi.com"
    secret_id: str = ""
    secret_key: Secret | None = None
    rule_id: str = ""
    """The RuleId of the face-check flow configured in the FaceID console."""


class HealthCardSettings(_Base):
    """The national e-health card platform (protocols §6). Scene and channel codes are the platform's code
    tables for this deployment."""

    base_url: str = "https://p-healthopen.tengmed.com"
    app_id: str = ""
    app_secret: Secret | None = None
    hospital_id: str = ""
    relate_app_id: str = ""
    dynamic_code_seconds: int = 300
    scenes: dict[str, str] = msgspec.field(
        default_factory=lambda: {"booking": "010101", "payment": "010102", "report": "010105"}
    )
    department: str = "0301"
    card_type: str = "11"
    card_channel: str = "0401"
    cost_types: str = "0100"


class PatientSettings(_Base):
    """Patient rules that are platform policy [C] (docs/patients.md)."""

    max_patients: int = 5
    adult_age: int = 14
    consent_version: str = "2026-11"
    step_up_minutes: int = 5
    verification_cache_days: int = 30
    verifications_per_account_day: int = 20


class LogSettings(_Base):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json: bool = True


class SandboxSettings(_Base):
    mount: bool = False
    """Mount the simulators in the app process (demo and test only)."""


class DemoSettings(_Base):
    data_dir: str = ".data"


class Settings(_Base):
    env: Environment = "prod"
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    db: DbSettings = msgspec.field(default_factory=DbSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    broker: BrokerSettings = msgspec.field(default_factory=BrokerSettings)
    clock: ClockSettings = msgspec.field(default_factory=ClockSettings)
    crypto: CryptoSettings = msgspec.field(default_factory=CryptoSettings)
    blobs: BlobSettings = msgspec.field(default_factory=BlobSettings)
    ratelimit: RateLimitSettings = msgspec.field(default_factory=RateLimitSettings)
    idempotency: IdempotencySettings = msgspec.field(default_factory=IdempotencySettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    wechat: WechatSettings = msgspec.field(default_factory=WechatSettings)
    alipay: AlipaySettings = msgspec.field(default_factory=AlipaySettings)
    wechatpay: WechatPaySettings = msgspec.field(default_factory=WechatPaySettings)
    payments: PaymentSettings = msgspec.field(default_factory=PaymentSettings)
    booking: BookingSettings = msgspec.field(default_factory=BookingSettings)
    sms: SmsSettings = msgspec.field(default_factory=SmsSettings)
    push: PushSettings = msgspec.field(default_factory=PushSettings)
    verification: VerificationSettings = msgspec.field(default_factory=VerificationSettings)
    healthcard: HealthCardSettings = msgspec.field(default_factory=HealthCardSettings)
    patients: PatientSettings = msgspec.field(default_factory=PatientSettings)
    sandbox: SandboxSettings = msgspec.field(default_factory=SandboxSettings)
    demo: DemoSettings = msgspec.field(default_factory=DemoSettings)

    @property
    def db_owner_url(self) -> Secret | None:
        return self.db.owner_url or self.db.url

    @property
    def broker_url(self) -> Secret | None:
        return self.broker.url or self.redis.url


PREFIX = "HSP_"
_HH_MM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_SECTIONS: dict[str, type[_Base]] = {
    name: field.type
    for name, field in ((f.name, f) for f in msgspec.structs.fields(Settings))
    if isinstance(field.type, type) and issubclass(field.type, _Base)
}


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is Secret and isinstance(value, str):
        return Secret(value)
    raise NotImplementedError(f"cannot convert to {kind!r}")


def read_dotenv(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    dotenv: Path | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings from the environment (plus an optional .env and explicit overrides) and validate them."""
    source: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        source.update(read_dotenv(dotenv))
    source.update(os.environ if environ is None else environ)
    if overrides:
        source.update(overrides)

    raw: dict[str, Any] = {}
    for name, value in source.items():
        if not name.startswith(PREFIX):
            continue
        rest = name[len(PREFIX) :].lower()
        if rest == "env":
            raw["env"] = value
            continue
        section, sep, key = rest.partition("__")
        if not sep or section not in _SECTIONS or not key:
            raise SettingsError(f"unknown setting {name}: expected HSP_ENV or HSP_<SECTION>__<KEY>")
        known = {f.name for f in msgspec.structs.fields(_SECTIONS[section])}
        if key not in known:
            raise SettingsError(f"unknown setting {name}: {section} has {', '.join(sorted(known))}")
        raw.setdefault(section, {})[key] = _parse_value(value)
    try:
        settings = msgspec.convert(raw, Settings, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"bad setting: {_env_name(str(exc))}") from None
    check_settings(settings)
    return settings


def _parse_value(value: str) -> Any:
    text = value.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"bad JSON value: {exc.msg}") from None
    return value


def _env_name(message: str) -> str:
    # msgspec says "... - at `$.db.pool_size`"; name the variable instead.
    marker = "at `$."
    if marker in message:
        head, _, path = message.partition(marker)
        parts = path.rstrip("`").split(".")
        var = PREFIX + ("ENV" if parts == ["env"] else "__".join(p.upper() for p in parts[:2]))
        return f"{var}: {head.rstrip(' -')}"
    return message


def check_settings(settings: Settings) -> None:
    """Cross-field checks, and what production refuses (DESIGN D11)."""
    crypto = settings.crypto
    if crypto.keys and crypto.active_kid not in crypto.keys:
        raise SettingsError("HSP_CRYPTO__ACTIVE_KID must name one of HSP_CRYPTO__KEYS")
    auth = settings.auth
    if auth.signing_keys and auth.active_kid not in auth.signing_keys:
        raise SettingsError("HSP_AUTH__ACTIVE_KID must name one of HSP_AUTH__SIGNING_KEYS")
    pay = settings.wechatpay
    if pay.api_v3_key is not None and len(pay.api_v3_key.reveal().encode()) != 32:
        raise SettingsError("HSP_WECHATPAY__API_V3_KEY must be exactly 32 bytes (WeChat Pay's APIv3 key)")
    if pay.mchid and not (pay.merchant_private_key and pay.merchant_serial_no and pay.api_v3_key):
        raise SettingsError(
            "HSP_WECHATPAY__MCHID needs HSP_WECHATPAY__MERCHANT_PRIVATE_KEY, __MERCHANT_SERIAL_NO and __API_V3_KEY"
        )
    if bool(pay.platform_public_key_id) != bool(pay.platform_public_key):
        raise SettingsError("HSP_WECHATPAY__PLATFORM_PUBLIC_KEY_ID and __PLATFORM_PUBLIC_KEY go together")
    booking = settings.booking
    if (
        min(booking.per_department_day, booking.per_day, booking.short_window_days, booking.short_window_max) < 1
        or min(booking.long_window_months, booking.long_window_max, booking.ban_no_shows, booking.ban_window_days) < 1
    ):
        raise SettingsError("HSP_BOOKING__* limits must be at least 1")
    if booking.max_holds_in_flight < 1:
        raise SettingsError("HSP_BOOKING__MAX_HOLDS_IN_FLIGHT must be at least 1")
    if not _HH_MM.match(booking.reminder_evening_time):
        raise SettingsError("HSP_BOOKING__REMINDER_EVENING_TIME must be a time HH:MM (00:00 to 23:59)")
    if not 1 <= booking.reminder_before_minutes <= 1440:
        raise SettingsError("HSP_BOOKING__REMINDER_BEFORE_MINUTES must be between 1 and 1440")
    if booking.waitlist_offer_minutes < 1 or booking.waitlist_delivery_grace_minutes < 0:
        raise SettingsError(
            "HSP_BOOKING__WAITLIST_OFFER_MINUTES must be at least 1, __WAITLIST_DELIVERY_GRACE_MINUTES >= 0"
        )
    if settings.env == "prod":
        problems = []
        if settings.db.url is None:
            problems.append("HSP_DB__URL is required (the embedded SQLite database is for the demo)")
        if settings.redis.url is None:
            problems.append("HSP_REDIS__URL is required (the in-process store is for the demo)")
        if settings.sandbox.mount:
            problems.append("HSP_SANDBOX__MOUNT is not allowed")
        if settings.clock.mode != "system":
            problems.append("HSP_CLOCK__MODE must be system")
        if crypto.demo_keys:
            problems.append("HSP_CRYPTO__DEMO_KEYS is not allowed")
        if not settings.auth.signing_keys:
            problems.append("HSP_AUTH__SIGNING_KEYS and HSP_AUTH__ACTIVE_KID are required")
        if not crypto.keys or crypto.index_key is None:
            problems.append("HSP_CRYPTO__KEYS, HSP_CRYPTO__ACTIVE_KID and HSP_CRYPTO__INDEX_KEY are required")
        if problems:
            raise SettingsError("refused in HSP_ENV=prod: " + "; ".join(problems))
