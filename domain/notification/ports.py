"""Ports of the notification service: its store, and one sender per channel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from domain.kernel.errors import UpstreamError, ValidationError
from domain.notification.model import Channel, DeliveryState
from domain.notification.templates import Rendered


@dataclass(frozen=True, slots=True)
class Address:
    """Where one channel reaches a resident. ``value`` is an openid, an Alipay user id, a phone number or a
    push token; ``app_id`` the mini-program or the push provider."""

    channel: Channel
    app_id: str
    value: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    event_id: str
    event_type: str
    account_id: str
    channel: Channel
    state: DeliveryState
    values: Mapping[str, str] = field(repr=False)
    send_after: datetime
    attempts: int
    created_at: datetime
    sent_at: datetime | None = None
    failure: str | None = None
    provider: str | None = None


class ChannelFinalError(ValidationError):
    """The channel refused this message for good (no quota: 43101, a dead token, an invalid number)."""

    code = "notification.refused"


TOKEN_INVALID = "notification.token_invalid"  # noqa: S105 - an error code, not a secret
"""Code of the final error a push channel raises for a device token the provider no longer knows."""


class ChannelQuotaError(ChannelFinalError):
    """No remaining one-time authorisation (WeChat 43101): the message is skipped, not failed."""

    code = "notification.no_quota"


class ChannelTransientError(UpstreamError):
    code = "notification.transient"


class ChannelSender(Protocol):
    channel: Channel

    async def send(self, address: Address, template: str | None, rendered: Rendered) -> tuple[str, str]:
        """Send; returns (provider, provider message id). Raises ChannelFinalError or ChannelTransientError."""
        ...


class NotificationRepository(Protocol):
    async def preferences(self, account_id: str) -> Mapping[tuple[str, Channel], bool]: ...

    async def set_preference(
        self, account_id: str, event_type: str, channel: Channel, enabled: bool, *, now: datetime
    ) -> None: ...

    async def grant(
        self, account_id: str, appid: str, openid: str, template: str, count: int, *, now: datetime
    ) -> int: ...

    async def use_grant(self, appid: str, openid: str, template: str, *, now: datetime) -> bool:
        """Take one authorisation; False when none is left."""
        ...

    async def return_grant(self, appid: str, openid: str, template: str, *, now: datetime) -> None: ...

    async def add_push_device(self, account_id: str, provider: str, token: str, *, now: datetime) -> None: ...

    async def drop_push_device(self, provider: str, token: str) -> None: ...

    async def push_devices(self, account_id: str) -> Sequence[tuple[str, str]]: ...

    async def add_delivery(
        self,
        *,
        event_id: str,
        event_type: str,
        account_id: str,
        channel: Channel,
        values: Mapping[str, str],
        send_after: datetime,
        now: datetime,
    ) -> int | None:
        """Create the delivery once per (event, recipient, channel); None when it exists already."""
        ...

    async def claim(self, delivery_id: int, *, now: datetime, lease_until: datetime) -> Delivery | None:
        """Take a due delivery (PENDING or FAILED_RETRYABLE or DEFERRED, send_after reached, lease free)."""
        ...

    async def settle(
        self,
        delivery_id: int,
        state: DeliveryState,
        *,
        now: datetime,
        failure: str | None = None,
        provider: str | None = None,
        message_id: str | None = None,
        retry_at: datetime | None = None,
    ) -> None: ...

    async def due(self, *, now: datetime, limit: int) -> Sequence[int]: ...

    async def deliveries(
        self, *, account_id: str | None, state: DeliveryState | None, before: int | None, limit: int
    ) -> Sequence[Delivery]: ...
