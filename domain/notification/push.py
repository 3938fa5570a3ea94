"""The app push port: one notification to one device token, through one provider (APNs, JPush ...)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from domain.kernel.errors import UpstreamError, ValidationError


@dataclass(frozen=True)
class PushMessage:
    """What the patient sees (``title``, ``body``) plus string ``data`` for the app.

    ``collapse_id`` lets a newer message replace an older one with the same id on the device; ``urgent``
    asks for immediate delivery (APNs priority 10) instead of power-friendly delivery.
    """

    title: str
    body: str
    data: Mapping[str, str] = field(default_factory=dict)
    collapse_id: str | None = None
    urgent: bool = False


@dataclass(frozen=True)
class PushReceipt:
    """The provider's id for an accepted message (APNs ``apns-id``, JPush ``msg_id``)."""

    provider: str
    message_id: str


class PushTokenInvalidError(ValidationError):
    """The device token is gone for good (APNs 400 BadDeviceToken / 410 Unregistered, JPush 1011): the caller
    must drop it and not retry."""

    code = "push.token_invalid"
    message = "推送设备已失效"


class PushUnavailableError(UpstreamError):
    """The provider refused for now (throttled, down) or is misconfigured (code ``push.misconfigured``);
    ``retry_after`` in seconds when the provider said."""

    code = "push.unavailable"
    message = "推送服务暂时不可用，请稍后再试"


class PushSender(Protocol):
    """One push provider."""

    provider: str

    async def send(self, device_token: str, message: PushMessage) -> PushReceipt:
        """Deliver ``message`` to ``device_token``; raises ``PushTokenInvalidError`` or
        ``PushUnavailableError``."""
        ...
