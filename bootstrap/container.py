"""The composition root: the one place that knows which adapter serves which port (DESIGN §2)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from litestar import Litestar

from bff.app import create_admin_app, create_app
from bff.auth.principal import SessionAuthenticator
from bff.auth.tokens import AccessTokens, SigningKeys
from bff.deps import BffDeps, EdgeConfig
from bootstrap.clock import LocalOffsetStore, OffsetClock, SystemClock
from bootstrap.his import RegistryHisGateway
from bootstrap.migrate import current_revision, head_revision
from bootstrap.providers import (
    build_billing,
    build_bookings,
    build_his_adapter,
    build_login_providers,
    build_notifications,
    build_patients,
    build_payment_channels,
    build_payments,
    build_slot_gate,
    build_waitlist,
    his_push_reader,
)
from bootstrap.settings import Secret, Settings
from domain.account.rules import AccountPolicy, LockoutPolicy, PasswordPolicy, SessionPolicy, SmsCodePolicy
from domain.account.use_cases import AccountDeps, AccountService
from domain.catalogue.use_cases import CatalogueDeps, CatalogueService
from domain.kernel.blobs import BlobStore, EncryptedBlobStore, FieldCipherBlobs
from domain.kernel.clock import Clock, ClockControl
from domain.kernel.crypto import CryptoSuite
from domain.kernel.ephemeral import EphemeralStore
from domain.kernel.ratelimit import RateLimiter
from domain.kernel.tasks import TaskRunner
from integrations.crypto.keys import Keyring, generate_keyring_config
from integrations.crypto.passwords import Argon2PasswordHasher
from integrations.crypto.suite import build_suite
from integrations.crypto.totp import PyotpTotp
from integrations.his.gateway import ResilientHisGateway
from integrations.storage.filesystem import FilesystemBlobStore
from notifications.dispatch import InProcessBeat, InProcessTaskRunner, TaskRunnerDispatcher
from notifications.runtime import WorkerRuntime
from notifications.schedule import SCHEDULE
from persistence.db import ConnectionSource, DatabaseConfig, create_engine
from persistence.ephemeral.memory_store import InMemoryEphemeralStore
from persistence.ephemeral.ratelimit import LimitsRateLimiter
from persistence.ephemeral.redis_store import RedisEphemeralStore
from persistence.kernel.clock import SqlOffsetStore
from persistence.kernel.idempotency import SqlIdempotencyStore
from persistence.uow import unit_of_work_factory

VERSION = "0.1.0"
Role = Literal["app", "worker"]


def database_url(settings: Settings) -> str:
    if settings.db.url is not None:
        return settings.db.url.reveal()
    data = Path(settings.demo.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{data.resolve() / 'hsp.db'}"


def owner_database_url(settings: Settings) -> str:
    owner = settings.db_owner_url
    return owner.reveal() if owner is not None else database_url(settings)


def demo_crypto_config(settings: Settings) -> dict[str, Any]:
    """Demo keys, generated once into the data folder so the demo's data stays readable across runs."""
    path = Path(settings.demo.data_dir) / "demo-keys.json"
    if path.is_file():
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = dict(generate_keyring_config())
    path.write_text(json.dumps(fresh))
    os.chmod(path, 0o600)
    return fresh


def demo_signing_keys(settings: Settings) -> dict[str, Any]:
    """Access-token signing keys for the demo and tests, generated once into the data folder."""
    path = Path(settings.demo.data_dir) / "demo-signing-keys.json"
    if path.is_file():
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = {"active_kid": "demo-1", "keys": {"demo-1": SigningKeys.generate_pem().decode()}}
    path.write_text(json.dumps(fresh))
    os.chmod(path, 0o600)
    return fresh


def build_signing_keys(settings: Settings) -> SigningKeys:
    auth = settings.auth
    if auth.signing_keys:
        return SigningKeys.from_pem(auth.active_kid, {k: v.reveal().encode() for k, v in auth.signing_keys.items()})
    if settings.env in ("demo", "test") or settings.crypto.demo_keys:
        cfg = demo_signing_keys(settings)
        return SigningKeys.from_pem(cfg["active_kid"], {k: v.encode() for k, v in cfg["keys"].items()})
    raise RuntimeError("access-token signing keys are not configured (HSP_AUTH__SIGNING_KEYS, HSP_AUTH__ACTIVE_KID)")


def account_deps_policies(settings: Settings) -> dict[str, Any]:
    a = settings.auth
    return {
        "sessions": SessionPolicy(
            resident_idle=timedelta(minutes=a.resident_idle_minutes),
            resident_absolute=timedelta(days=a.resident_absolute_days),
            staff_idle=timedelta(minutes=a.staff_idle_minutes),
            staff_absolute=timedelta(hours=a.staff_absolute_hours),
            access_token_ttl=timedelta(minutes=a.access_token_minutes),
        ),
        "passwords": PasswordPolicy(
            min_length=a.password_min_length,
            history=a.password_history,
            max_age=timedelta(days=a.password_max_age_days),
        ),
        "lockout": LockoutPolicy(
            max_failures=a.lockout_failures,
            window=timedelta(minutes=a.lockout_window_minutes),
            lock_for=timedelta(minutes=a.lockout_minutes),
        ),
        "sms_codes": SmsCodePolicy(
            ttl=timedelta(seconds=a.sms_code_ttl_seconds),
            max_attempts=a.sms_code_attempts,
            resend_after=timedelta(seconds=a.sms_resend_seconds),
            daily_per_phone=a.sms_daily_per_phone,
            daily_per_ip=a.sms_daily_per_ip,
            captcha_after_sends=a.sms_captcha_after,
        ),
        "accounts": AccountPolicy(max_dormant=timedelta(days=a.dormant_days)),
    }


def build_crypto(settings: Settings) -> CryptoSuite:
    crypto = settings.crypto
    if crypto.keys and crypto.index_key is not None:
        keyring = Keyring.from_config(
            crypto.active_kid, {k: v.reveal() for k, v in crypto.keys.items()}, crypto.index_key.reveal()
        )
    elif settings.env in ("demo", "test") or crypto.demo_keys:
        cfg = demo_crypto_config(settings)
        keyring = Keyring.from_config(cfg["active_kid"], cfg["keys"], cfg["index_key"])
    else:
        raise RuntimeError("crypto keys are not configured (HSP_CRYPTO__KEYS, _ACTIVE_KID, _INDEX_KEY)")
    return build_suite(crypto.suite, keyring)


def build_blobs(
    settings: Settings, crypto: CryptoSuite
) -> tuple[BlobStore, Callable[[], Awaitable[Any]] | None, Callable[[], Awaitable[Any]] | None]:
    """The blob store, encrypted with the suite's cipher, and its open and close hooks (S3 only)."""
    inner, opener, closer = _raw_blobs(settings)
    return EncryptedBlobStore(inner, FieldCipherBlobs(crypto.cipher)), opener, closer


def _raw_blobs(
    settings: Settings,
) -> tuple[BlobStore, Callable[[], Awaitable[Any]] | None, Callable[[], Awaitable[Any]] | None]:
    blobs = settings.blobs
    if blobs.backend == "s3":
        from integrations.storage.s3 import S3BlobStore

        def reveal(secret: Secret | None) -> str:
            return secret.reveal() if secret is not None else ""

        s3 = S3BlobStore(
            endpoint_url=blobs.s3_endpoint_url,
            bucket=blobs.s3_bucket,
            region=blobs.s3_region,
            access_key_id=reveal(blobs.s3_access_key_id),
            secret_access_key=reveal(blobs.s3_secret_access_key),
        )
        return s3, s3.open, s3.close
    return FilesystemBlobStore(Path(blobs.root)), None, None


@dataclass
class Container:
    settings: Settings
    source: ConnectionSource
    clock: Clock
    clock_control: ClockControl | None
    store: EphemeralStore
    rate_limiter: RateLimiter
    idempotency: SqlIdempotencyStore
    crypto: CryptoSuite
    blobs: BlobStore
    runner: TaskRunner
    runtime: WorkerRuntime
    beat: InProcessBeat | None = None
    celery: Any = None
    openers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    accounts: AccountService | None = None
    tokens: AccessTokens | None = None
    catalogue: CatalogueService | None = None
    his_gateway: RegistryHisGateway | None = None
    background: set[asyncio.Task[None]] = field(default_factory=set)
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    @property
    def uow_factory(self) -> Any:
        return unit_of_work_factory(self.source)

    async def readiness_database(self) -> None:
        await self.source.ping()

    async def readiness_redis(self) -> None:
        if not await self.store.ping():
            raise RuntimeError("redis did not answer")

    async def readiness_migrations(self) -> None:
        current = await current_revision(self.source.engine)
        head = head_revision()
        if current != head:
            raise RuntimeError(f"database at {current}, code expects {head}")

    async def hospital_changed(self, code: str) -> None:
        if self.his_gateway is not None and self.catalogue is not None:
            await self.his_gateway.reload(self.catalogue, [code])

    async def load_his_adapters(self) -> None:
        if self.his_gateway is not None and self.catalogue is not None:
            await self.his_gateway.reload(self.catalogue)

    async def refresh_metrics(self) -> None:
        from notifications.metrics import OUTBOX_LAG

        async with self.uow_factory() as uow:
            oldest = await uow.outbox.oldest_pending_at()
        OUTBOX_LAG.set(0 if oldest is None else max(0.0, (self.clock.now() - oldest).total_seconds()))

    async def aclose(self) -> None:
        if self.beat is not None:
            await self.beat.stop()
        for closer in reversed(self.closers):
            await closer()
        await self.source.engine.dispose()


def build_container(settings: Settings, *, role: Role = "app", in_process_tasks: bool | None = None) -> Container:
    engine = create_engine(
        DatabaseConfig(
            url=database_url(settings),
            pool_size=settings.db.pool_size,
            max_overflow=settings.db.max_overflow,
            pool_timeout_seconds=settings.db.pool_timeout_seconds,
            statement_timeout_ms=settings.db.statement_timeout_ms,
            echo=settings.db.echo,
        )
    )
    source = ConnectionSource(engine)
    closers: list[Callable[[], Awaitable[Any]]] = []

    clock: Clock
    clock_control: ClockControl | None = None
    if settings.clock.mode == "offset":
        offset_store = SqlOffsetStore(source) if settings.db.url is not None else LocalOffsetStore()
        clock_control = OffsetClock(offset_store)
        clock = clock_control
    else:
        clock = SystemClock()

    store: EphemeralStore
    if settings.redis.url is not None:
        redis_store = RedisEphemeralStore.from_url(
            settings.redis.url.reveal(),
            prefix=settings.redis.prefix,
            socket_timeout=settings.redis.socket_timeout_seconds,
        )
        store = redis_store
        closers.append(redis_store.close)
        rate_limiter = LimitsRateLimiter.redis(settings.redis.url.reveal(), prefix=settings.redis.prefix)
    else:
        store = InMemoryEphemeralStore()
        rate_limiter = LimitsRateLimiter.memory()

    crypto = build_crypto(settings)
    blobs, blobs_open, blobs_close = build_blobs(settings, crypto)
    openers: list[Callable[[], Awaitable[Any]]] = [blobs_open] if blobs_open else []
    if blobs_close:
        closers.append(blobs_close)
    idempotency = SqlIdempotencyStore(source)
    uow_factory = unit_of_work_factory(source)

    holder: dict[str, WorkerRuntime] = {}
    use_in_process = settings.broker_url is None if in_process_tasks is None else in_process_tasks
    celery_app = None
    runner: TaskRunner
    if use_in_process:
        runner = InProcessTaskRunner(lambda: holder["runtime"])
    else:
        from notifications.celery_app import CeleryTaskRunner, create_celery

        broker = settings.broker_url
        assert broker is not None
        celery_app = create_celery(
            broker.reveal(),
            default_queue=settings.broker.task_default_queue,
            visibility_timeout_seconds=settings.broker.visibility_timeout_seconds,
        )
        runner = CeleryTaskRunner(celery_app)

    runtime = WorkerRuntime(
        clock=clock,
        uow_factory=uow_factory,
        dispatcher=TaskRunnerDispatcher(runner),
        runner=runner,
        digest=crypto.digest,
        clock_control=clock_control,
        idempotency_purge=idempotency.purge_expired,
    )
    runtime.services["blobs"] = blobs
    runtime.services["crypto"] = crypto
    runtime.services["store"] = store
    holder["runtime"] = runtime

    beat = InProcessBeat(SCHEDULE, runner, clock) if use_in_process and role == "app" else None
    http = httpx.AsyncClient(timeout=10.0, trust_env=False)
    closers.append(http.aclose)
    providers = build_login_providers(settings, http=http, store=store, clock=clock)
    accounts = AccountService(
        AccountDeps(
            uow_factory=uow_factory,
            clock=clock,
            cipher=crypto.cipher,
            blind_index=crypto.blind_index,
            mac=crypto.mac,
            hasher=Argon2PasswordHasher(
                memory_cost=settings.auth.argon2_memory_kib, time_cost=settings.auth.argon2_time_cost
            ),
            totp=PyotpTotp(),
            rate_limiter=rate_limiter,
            store=store,
            wechat=providers.wechat,
            alipay=providers.alipay,
            sms=providers.sms,
            **account_deps_policies(settings),
        )
    )
    runtime.services["accounts"] = accounts
    his_gateway = RegistryHisGateway(
        build_his_adapter(settings, http=http, clock=clock), ResilientHisGateway(clock=clock)
    )
    catalogue = CatalogueService(
        CatalogueDeps(
            uow_factory=unit_of_work_factory(source, cipher=crypto.cipher),
            clock=clock,
            gateway=his_gateway,
            store=store,
            health=his_gateway.health,
        )
    )
    runtime.services["catalogue"] = catalogue
    runtime.services["notifications"] = build_notifications(
        settings,
        providers,
        uow_factory=unit_of_work_factory(source, cipher=crypto.cipher),
        clock=clock,
        cipher=crypto.cipher,
        runner=runner,
    )
    runtime.services["his_gateway"] = his_gateway
    patients = build_patients(
        settings,
        providers,
        uow_factory=unit_of_work_factory(source, cipher=crypto.cipher),
        clock=clock,
        crypto=crypto,
        store=store,
        rate_limiter=rate_limiter,
        http=http,
        his=his_gateway,
        runner=runner,
    )
    runtime.services["patients"] = patients
    runtime.services["payments"] = build_payments(
        settings,
        uow_factory=unit_of_work_factory(source, cipher=crypto.cipher),
        clock=clock,
        runner=runner,
        channels=build_payment_channels(settings, http=http, clock=clock, providers=providers),
    )
    runtime.services["billing"] = build_billing(
        uow_factory=unit_of_work_factory(source, cipher=crypto.cipher),
        clock=clock,
        his=his_gateway,
        patients=patients,
        payments=runtime.services["payments"],
    )
    gate, gate_close = build_slot_gate(settings)
    if gate_close is not None:
        closers.append(gate_close)
    runtime.services["bookings"] = build_bookings(
        settings,
        uow_factory=unit_of_work_factory(source, cipher=crypto.cipher),
        clock=clock,
        his=his_gateway,
        patients=patients,
        payments=runtime.services["payments"],
        gate=gate,
        gate_rebuild=_gate_rebuild(source),
        notifications=runtime.services["notifications"],
    )
    runtime.services["waitlist"] = build_waitlist(
        settings, uow_factory=unit_of_work_factory(source, cipher=crypto.cipher), bookings=runtime.services["bookings"]
    )
    tokens = AccessTokens(
        build_signing_keys(settings), clock=clock, ttl=timedelta(minutes=settings.auth.access_token_minutes)
    )
    return Container(
        settings=settings,
        source=source,
        clock=clock,
        clock_control=clock_control,
        store=store,
        rate_limiter=rate_limiter,
        idempotency=idempotency,
        crypto=crypto,
        blobs=blobs,
        runner=runner,
        runtime=runtime,
        beat=beat,
        celery=celery_app,
        closers=closers,
        openers=openers,
        accounts=accounts,
        tokens=tokens,
        catalogue=catalogue,
        his_gateway=his_gateway,
    )


def edge_config(settings: Settings) -> EdgeConfig:
    http = settings.http
    return EdgeConfig(
        env=settings.env,
        version=VERSION,
        trusted_proxies=EdgeConfig.parse_proxies(http.trusted_proxies),
        max_body_bytes=http.max_body_bytes,
        rate_limit_enabled=settings.ratelimit.enabled,
        per_account_per_minute=settings.ratelimit.per_account_per_minute,
        per_ip_per_minute=settings.ratelimit.per_ip_per_minute,
        idempotency_lease_seconds=settings.idempotency.lease_seconds,
        idempotency_retain_seconds=settings.idempotency.retain_hours * 3600,
        docs=http.docs or settings.env in ("demo", "test"),
    )


def build_apps(container: Container, *, extra_public: list[Any] | None = None) -> tuple[Litestar, Litestar]:
    settings = container.settings
    public_handlers: list[Any] = list(extra_public or [])
    startup: list[Callable[[], Awaitable[Any]]] = [*container.openers, container.load_his_adapters]
    shutdown: list[Callable[[], Awaitable[Any]]] = []
    if settings.sandbox.mount:
        from bootstrap.demo_seed import register_sandbox_hospitals, start_initial_sync
        from bootstrap.sandboxes import sandbox_mount

        routers, sandbox_start, sandbox_stop = sandbox_mount(container)
        public_handlers.extend(routers)
        startup.extend(sandbox_start)
        shutdown.extend(sandbox_stop)

        async def seed() -> None:
            await register_sandbox_hospitals(container)
            await container.load_his_adapters()
            start_initial_sync(container)

        startup.append(seed)
    bookings = container.runtime.services.get("bookings")
    if bookings is not None:

        async def rebuild_gate() -> None:
            # The gate is a cache of PostgreSQL's counts: filled at start, then by the periodic task.
            await bookings.rebuild_gate()

        startup.append(rebuild_gate)
    if container.beat is not None:
        startup.append(container.beat.start)
    readiness: dict[str, Callable[[], Awaitable[None]]] = {
        "database": container.readiness_database,
        "migrations": container.readiness_migrations,
    }
    if settings.redis.url is not None:
        readiness["redis"] = container.readiness_redis
    deps = BffDeps(
        config=edge_config(settings),
        clock=container.clock,
        uow_factory=container.uow_factory,
        idempotency=container.idempotency,
        rate_limiter=container.rate_limiter,
        authenticator=(
            SessionAuthenticator(container.tokens, container.accounts)
            if container.tokens is not None and container.accounts is not None
            else None
        ),
        accounts=container.accounts,
        tokens=container.tokens,
        catalogue=container.catalogue,
        notifications=container.runtime.services.get("notifications"),
        patients=container.runtime.services.get("patients"),
        payments=container.runtime.services.get("payments"),
        billing=container.runtime.services.get("billing"),
        bookings=container.runtime.services.get("bookings"),
        runner=container.runner,
        his_push=his_push_reader(),
        on_hospital_changed=container.hospital_changed,
        clock_control=container.clock_control,
        readiness=readiness,
        metrics_refresh=container.refresh_metrics,
        public_handlers=public_handlers,
        on_startup=startup,
        on_shutdown=[*shutdown, container.aclose],
    )
    public = create_app(deps)
    admin = create_admin_app(deps, public)
    return public, admin


def _gate_rebuild(source: ConnectionSource) -> Callable[[Any, date, date], Awaitable[int]]:
    """The gate's rebuild from PostgreSQL, paged in short transactions (persistence/ephemeral/slot_gate.py)."""
    from persistence.ephemeral.slot_gate import rebuild_gate

    async def rebuild(gate: Any, first_day: date, last_day: date) -> int:
        return await rebuild_gate(gate, source, first_day=first_day, last_day=last_day)

    return rebuild
