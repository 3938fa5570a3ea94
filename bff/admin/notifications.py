"""Operators: the delivery log, and running (or dry-running) the due scheduled messages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Router, get, post
from litestar.datastructures import State
from litestar.params import FromQuery, QueryParameter

from bff.auth.guards import require_staff
from bff.services import notification_service
from domain.notification.model import DeliveryState


class DeliveryOut(msgspec.Struct, rename="camel"):
    id: int
    event_type: str
    account_id: str
    channel: str
    state: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None = None
    failure: str | None = None
    provider: str | None = None


class DeliveryLogOut(msgspec.Struct, rename="camel"):
    items: list[DeliveryOut]
    next_cursor: int | None = None


class RunOut(msgspec.Struct, rename="camel"):
    sent: int
    skipped: int
    failed: int
    expired: int
    would_send: list[str]


@get("/deliveries", operation_id="adminNotificationDeliveries", summary="The delivery log (no message content)")
async def deliveries(
    state: State,
    account_id: FromQuery[str | None] = None,
    delivery_state: Annotated[DeliveryState | None, QueryParameter(name="state")] = None,
    cursor: Annotated[int | None, QueryParameter(ge=1)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
) -> DeliveryLogOut:
    rows = await notification_service(state).log(
        account_id=account_id, state=delivery_state, before=cursor, limit=limit
    )
    items = [
        DeliveryOut(
            id=d.id,
            event_type=d.event_type,
            account_id=d.account_id,
            channel=d.channel.value,
            state=d.state.value,
            attempts=d.attempts,
            created_at=d.created_at,
            sent_at=d.sent_at,
            failure=d.failure,
            provider=d.provider,
        )
        for d in rows
    ]
    return DeliveryLogOut(items=items, next_cursor=items[-1].id if items and len(items) == limit else None)


@post(
    "/scheduled/run", operation_id="adminRunScheduled", summary="Send the due scheduled messages now", status_code=200
)
async def run_scheduled(state: State, dry_run: Annotated[bool, QueryParameter(name="dryRun")] = True) -> RunOut:
    report = await notification_service(state).run_due(dry_run=dry_run)
    return RunOut(
        sent=report.sent,
        skipped=report.skipped,
        failed=report.failed,
        expired=report.expired,
        would_send=list(report.would_send),
    )


notifications_admin_router = Router(
    path="/api/v1/admin/notifications",
    tags=["admin"],
    guards=[require_staff("operator", "sysadmin")],
    security=[{"bearer": []}],
    route_handlers=[deliveries, run_scheduled],
)
