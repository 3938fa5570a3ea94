"""What the HTTP edge receives from the composition root."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from litestar.types import ControllerRouterHandler

from bff.auth.tokens import AccessTokens
from domain.account.use_cases import AccountService
from domain.billing.use_cases import BillingService
from domain.booking.use_cases import BookingService
from domain.catalogue.ports import HisPushReader
from domain.catalogue.use_cases import CatalogueService
from domain.kernel.clock import Clock, ClockControl
from domain.kernel.idempotency import IdempotencyStore
from domain.kernel.principal import Authenticator
from domain.kernel.ratelimit import RateLimiter
from domain.kernel.tasks import TaskRunner
from domain.kernel.uow import UnitOfWorkFactory
from domain.notification.use_cases import NotificationService
from domain.patient.use_cases import PatientService
from domain.payment.use_cases import PaymentService

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ReadinessCheck = Callable[[], Awaitable[None]]
"""Raises (anything) when not ready; the message is shown to operators on the admin listener only."""


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    env: str = "prod"
    version: str = "0.1.0"
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_body_bytes: int = 1_048_576
    rate_limit_enabled: bool = True
    per_account_per_minute: int = 600
    per_ip_per_minute: int = 1200
    idempotency_lease_seconds: int = 60
    idempotency_retain_seconds: int = 24 * 3600
    docs: bool = False

    @staticmethod
    def parse_proxies(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@dataclass(slots=True)
class BffDeps:
    config: EdgeConfig
    clock: Clock
    uow_factory: UnitOfWorkFactory
    idempotency: IdempotencyStore
    rate_limiter: RateLimiter | None = None
    authenticator: Authenticator | None = None
    clock_control: ClockControl | None = None
    """Set in offset mode: each request first reloads the shared offset."""
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    metrics_refresh: Callable[[], Awaitable[None]] | None = None
    public_handlers: Sequence[ControllerRouterHandler] = ()
    """Extra routers on the public listener (the sandboxes in demo and test)."""
    admin_handlers: Sequence[ControllerRouterHandler] = ()
    accounts: AccountService | None = None
    catalogue: CatalogueService | None = None
    notifications: NotificationService | None = None
    patients: PatientService | None = None
    payments: PaymentService | None = None
    billing: BillingService | None = None
    bookings: BookingService | None = None
    his_push: HisPushReader | None = None
    runner: TaskRunner | None = None
    on_hospital_changed: Callable[[str], Awaitable[None]] | None = None
    """Rebuilds the hospital's HIS adapter after its registry entry changed."""
    tokens: AccessTokens | None = None
    on_startup: Sequence[Callable[[], Awaitable[Any]]] = ()
    on_shutdown: Sequence[Callable[[], Awaitable[Any]]] = ()
