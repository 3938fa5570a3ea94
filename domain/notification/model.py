"""Notification values and the delivery state machine (DESIGN §5)."""

from __future__ import annotations

from enum import StrEnum

from domain.kernel.errors import ConflictError


class EventClass(StrEnum):
    """How soon an event's messages go out."""

    TRANSACTIONAL = "transactional"
    """Sent at once, never deferred (a payment received, a login code)."""
    URGENT = "urgent"
    """Sent at once, bypassing quiet hours (a critical result, a stopped session, a waitlist offer)."""
    NORMAL = "normal"
    """Reminders and service notices: deferred during quiet hours."""


class Channel(StrEnum):
    WECHAT_SUBSCRIBE = "wechat_subscribe"
    ALIPAY_MESSAGE = "alipay_message"
    SMS = "sms"
    APP_PUSH = "app_push"


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED_RETRYABLE = "failed_retryable"
    FAILED_FINAL = "failed_final"
    SKIPPED = "skipped"
    """No consent, no remaining quota, or unsubscribed."""
    DEFERRED = "deferred"
    """Quiet hours (normal class only)."""


class DeliveryEvent(StrEnum):
    SENT = "sent"
    TRANSIENT_FAILURE = "transient_failure"
    FINAL_FAILURE = "final_failure"
    SKIP = "skip"
    DEFER = "defer"
    RETRY_DUE = "retry_due"
    QUIET_HOURS_OVER = "quiet_hours_over"


class IllegalDeliveryTransitionError(ConflictError):
    code = "notification.illegal_transition"
    message = "消息状态不允许此操作"


TRANSITIONS: dict[tuple[DeliveryState, DeliveryEvent], DeliveryState] = {
    (DeliveryState.PENDING, DeliveryEvent.SENT): DeliveryState.SENT,
    (DeliveryState.PENDING, DeliveryEvent.TRANSIENT_FAILURE): DeliveryState.FAILED_RETRYABLE,
    (DeliveryState.PENDING, DeliveryEvent.FINAL_FAILURE): DeliveryState.FAILED_FINAL,
    (DeliveryState.PENDING, DeliveryEvent.SKIP): DeliveryState.SKIPPED,
    (DeliveryState.PENDING, DeliveryEvent.DEFER): DeliveryState.DEFERRED,
    (DeliveryState.FAILED_RETRYABLE, DeliveryEvent.RETRY_DUE): DeliveryState.PENDING,
    (DeliveryState.FAILED_RETRYABLE, DeliveryEvent.FINAL_FAILURE): DeliveryState.FAILED_FINAL,
    (DeliveryState.DEFERRED, DeliveryEvent.QUIET_HOURS_OVER): DeliveryState.PENDING,
    (DeliveryState.DEFERRED, DeliveryEvent.SKIP): DeliveryState.SKIPPED,
}
FINAL_STATES = frozenset({DeliveryState.SENT, DeliveryState.FAILED_FINAL, DeliveryState.SKIPPED})


def next_state(state: DeliveryState, event: DeliveryEvent) -> DeliveryState:
    """The delivery transition table; anything else is an illegal move (a delivery is final once sent)."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalDeliveryTransitionError(f"{event.value} from {state.value}") from None
