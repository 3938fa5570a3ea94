"""A resident's notification preferences, subscribe-message authorisations, push devices and message list."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post, put
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter

from bff.auth.guards import current_principal, require_resident
from bff.services import notification_service
from domain.kernel.errors import ValidationError
from domain.notification.model import Channel
from domain.notification.templates import REGISTRY


class PreferenceIO(msgspec.Struct, rename="camel"):
    event_type: str
    channel: Channel
    enabled: bool


class PreferencesOut(msgspec.Struct, rename="camel"):
    items: list[PreferenceIO]


class PreferencesIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    items: list[PreferenceIO]


class SubscriptionsIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    appid: Annotated[str, msgspec.Meta(examples=["wx0000000000demo1"])] = msgspec.field(name="appid")
    template_ids: Annotated[list[str], msgspec.Meta(max_length=20, examples=[["tmpl-security-notice-demo"]])] = (
        msgspec.field(default_factory=list)
    )


class SubscriptionsOut(msgspec.Struct, rename="camel"):
    recorded: int


class PushDeviceIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    provider: Annotated[str, msgspec.Meta(pattern="^(apns|jpush)$", examples=["jpush"])]
    token: Annotated[str, msgspec.Meta(min_length=8, max_length=255, examples=["1a0018970a4c7b8d5e1"])]


class MessageOut(msgspec.Struct, rename="camel"):
    id: int
    event_type: str
    title: str
    body: str
    channel: str
    sent_at: datetime | None


class MessagesOut(msgspec.Struct, rename="camel"):
    items: list[MessageOut]
    next_cursor: int | None = None


@get(
    "/notification-preferences",
    operation_id="patientNotificationPreferences",
    summary="Which messages I receive on which channel",
)
async def preferences(state: State, request: Request[Any, Any, Any]) -> PreferencesOut:
    return await _preferences(state, current_principal(request).subject)


async def _preferences(state: State, account_id: str) -> PreferencesOut:
    stored = await notification_service(state).preferences(account_id)
    items = [
        PreferenceIO(event_type=event, channel=channel, enabled=stored.get((event, channel), True))
        for event in REGISTRY.events()
        for channel in sorted(REGISTRY.get(event).channels, key=lambda c: c.value)
    ]
    return PreferencesOut(items=items)


@put(
    "/notification-preferences",
    operation_id="patientSetNotificationPreferences",
    summary="Turn messages on or off per event and channel",
)
async def set_preferences(
    state: State, request: Request[Any, Any, Any], data: JSONBody[PreferencesIn]
) -> PreferencesOut:
    account_id = current_principal(request).subject
    service = notification_service(state)
    for item in data.items:
        try:
            await service.set_preference(account_id, item.event_type, item.channel, item.enabled)
        except KeyError:
            raise ValidationError(
                "unknown event type", code="notification.event_unknown", message="不存在的消息类型"
            ) from None
    return await _preferences(state, account_id)


@post(
    "/notification-subscriptions",
    operation_id="patientRecordSubscriptions",
    summary="Report the subscribe templates accepted in wx.requestSubscribeMessage",
)
async def subscriptions(
    state: State, request: Request[Any, Any, Any], data: JSONBody[SubscriptionsIn]
) -> SubscriptionsOut:
    count = await notification_service(state).record_subscriptions(
        current_principal(request).subject, data.appid, data.template_ids
    )
    return SubscriptionsOut(recorded=count)


@post(
    "/push-devices",
    operation_id="patientRegisterPushDevice",
    summary="Register this phone for app push",
    status_code=204,
)
async def push_device(state: State, request: Request[Any, Any, Any], data: JSONBody[PushDeviceIn]) -> None:
    await notification_service(state).register_push_device(
        current_principal(request).subject, data.provider, data.token
    )


@get("/messages", operation_id="patientMessages", summary="My messages, newest first")
async def messages(
    state: State,
    request: Request[Any, Any, Any],
    cursor: Annotated[int | None, QueryParameter(ge=1)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
) -> MessagesOut:
    listed = await notification_service(state).messages(current_principal(request).subject, before=cursor, limit=limit)
    items = [
        MessageOut(id=d.id, event_type=d.event_type, title=title, body=body, channel=d.channel.value, sent_at=d.sent_at)
        for d, title, body in listed
    ]
    return MessagesOut(items=items, next_cursor=items[-1].id if items and len(items) == limit else None)


class TestReminderIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    in_minutes: Annotated[int, msgspec.Meta(ge=1, le=10080, examples=[5])]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=40, examples=["该吃药了"])] = "测试提醒"


class TestReminderOut(msgspec.Struct, rename="camel"):
    id: int
    due_at: datetime


@post(
    "/notification-test-reminders",
    operation_id="patientScheduleTestReminder",
    summary="Schedule a test reminder to myself (it fires when the clock passes its time)",
)
async def test_reminder(
    state: State, request: Request[Any, Any, Any], data: JSONBody[TestReminderIn]
) -> TestReminderOut:
    from domain.kernel.clock import to_shanghai
    from domain.kernel.ids import new_id

    service = notification_service(state)
    account_id = current_principal(request).subject
    due = service.d.clock.now() + timedelta(minutes=data.in_minutes)
    item_id = await service.schedule(
        key=f"test:{account_id}:{new_id()}",
        event_type="notification.test",
        account_id=account_id,
        subject_type="account",
        subject_id=account_id,
        values={"time": to_shanghai(due).strftime("%Y-%m-%d %H:%M"), "text": data.text},
        due_at=due,
    )
    return TestReminderOut(id=item_id, due_at=due)


notifications_router = Router(
    path="/api/v1/patient",
    tags=["patient"],
    guards=[require_resident],
    security=[{"bearer": []}],
    route_handlers=[preferences, set_preferences, subscriptions, push_device, messages, test_reminder],
)
