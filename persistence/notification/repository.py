"""The notification store: preferences, grants, push devices, deliveries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.notification.model import Channel, DeliveryState
from domain.notification.ports import Delivery
from domain.notification.schedule import ScheduledMessage, ScheduleState
from persistence.notification.tables import (
    notification_deliveries as nd,
)
from persistence.notification.tables import (
    notification_preferences,
    push_devices,
    scheduled_messages,
    subscribe_grants,
)

_CLAIMABLE = (DeliveryState.PENDING.value, DeliveryState.FAILED_RETRYABLE.value, DeliveryState.DEFERRED.value)


def _delivery(r: RowMapping) -> Delivery:
    return Delivery(
        id=r["id"],
        event_id=r["event_id"],
        event_type=r["event_type"],
        account_id=r["account_id"],
        channel=Channel(r["channel"]),
        state=DeliveryState(r["state"]),
        values={"sealed": r["values_cipher"]},
        send_after=r["send_after"],
        attempts=r["attempts"],
        created_at=r["created_at"],
        sent_at=r["sent_at"],
        failure=r["failure"],
        provider=r["provider"],
    )


class SqlNotificationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    async def preferences(self, account_id: str) -> Mapping[tuple[str, Channel], bool]:
        rows = (
            await self._c.execute(
                sa.select(notification_preferences).where(notification_preferences.c.account_id == account_id)
            )
        ).mappings()
        return {(r["event_type"], Channel(r["channel"])): bool(r["enabled"]) for r in rows}

    async def set_preference(
        self, account_id: str, event_type: str, channel: Channel, enabled: bool, *, now: datetime
    ) -> None:
        t = notification_preferences
        match = sa.and_(t.c.account_id == account_id, t.c.event_type == event_type, t.c.channel == channel.value)
        updated = await self._c.execute(t.update().where(match).values(enabled=enabled, updated_at=now))
        if not updated.rowcount:
            await self._c.execute(
                t.insert().values(
                    account_id=account_id, event_type=event_type, channel=channel.value, enabled=enabled, updated_at=now
                )
            )

    async def grant(self, account_id: str, appid: str, openid: str, template: str, count: int, *, now: datetime) -> int:
        t = subscribe_grants
        match = sa.and_(t.c.appid == appid, t.c.openid == openid, t.c.template == template)
        remaining = await self._c.scalar(
            t.update().where(match).values(remaining=t.c.remaining + count, updated_at=now).returning(t.c.remaining)
        )
        if remaining is None:
            await self._c.execute(
                t.insert().values(
                    appid=appid,
                    openid=openid,
                    template=template,
                    account_id=account_id,
                    remaining=count,
                    updated_at=now,
                )
            )
            return count
        return int(remaining)

    async def use_grant(self, appid: str, openid: str, template: str, *, now: datetime) -> bool:
        t = subscribe_grants
        result = await self._c.execute(
            t.update()
            .where(t.c.appid == appid, t.c.openid == openid, t.c.template == template, t.c.remaining > 0)
            .values(remaining=t.c.remaining - 1, updated_at=now)
        )
        return bool(result.rowcount)

    async def return_grant(self, appid: str, openid: str, template: str, *, now: datetime) -> None:
        t = subscribe_grants
        await self._c.execute(
            t.update()
            .where(t.c.appid == appid, t.c.openid == openid, t.c.template == template)
            .values(remaining=t.c.remaining + 1, updated_at=now)
        )

    async def add_push_device(self, account_id: str, provider: str, token: str, *, now: datetime) -> None:
        await self._c.execute(
            push_devices.delete().where(push_devices.c.provider == provider, push_devices.c.token == token)
        )
        await self._c.execute(
            push_devices.insert().values(provider=provider, token=token, account_id=account_id, registered_at=now)
        )

    async def drop_push_device(self, provider: str, token: str) -> None:
        await self._c.execute(
            push_devices.delete().where(push_devices.c.provider == provider, push_devices.c.token == token)
        )

    async def push_devices(self, account_id: str) -> Sequence[tuple[str, str]]:
        rows = await self._c.execute(
            sa.select(push_devices.c.provider, push_devices.c.token)
            .where(push_devices.c.account_id == account_id)
            .order_by(push_devices.c.registered_at.desc())
        )
        return [(r[0], r[1]) for r in rows]

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
        try:
            async with self._c.begin_nested():
                new_id = await self._c.scalar(
                    nd.insert()
                    .values(
                        event_id=event_id,
                        event_type=event_type,
                        account_id=account_id,
                        channel=channel.value,
                        state=DeliveryState.PENDING.value,
                        values_cipher=values["sealed"],
                        send_after=send_after,
                        attempts=0,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(nd.c.id)
                )
        except IntegrityError:
            return None  # this (event, recipient, channel) has its delivery already
        return int(new_id) if new_id is not None else None

    async def claim(self, delivery_id: int, *, now: datetime, lease_until: datetime) -> Delivery | None:
        row = (
            (
                await self._c.execute(
                    nd.update()
                    .where(
                        nd.c.id == delivery_id,
                        nd.c.state.in_(_CLAIMABLE),
                        nd.c.send_after <= now,
                        sa.or_(nd.c.claimed_until.is_(None), nd.c.claimed_until < now),
                    )
                    .values(claimed_until=lease_until, attempts=nd.c.attempts + 1, updated_at=now)
                    .returning(*nd.c)
                )
            )
            .mappings()
            .first()
        )
        return _delivery(row) if row else None

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
    ) -> None:
        values: dict[str, object] = {"state": state.value, "updated_at": now, "claimed_until": None, "failure": failure}
        if state is DeliveryState.SENT:
            values.update(sent_at=now, provider=provider, provider_message_id=message_id)
        if retry_at is not None:
            values["send_after"] = retry_at
        await self._c.execute(nd.update().where(nd.c.id == delivery_id).values(**values))

    async def due(self, *, now: datetime, limit: int) -> Sequence[int]:
        rows = await self._c.execute(
            sa.select(nd.c.id)
            .where(
                nd.c.state.in_(_CLAIMABLE),
                nd.c.send_after <= now,
                sa.or_(nd.c.claimed_until.is_(None), nd.c.claimed_until < now),
            )
            .order_by(nd.c.send_after)
            .limit(limit)
        )
        return [int(r[0]) for r in rows]

    async def deliveries(
        self, *, account_id: str | None, state: DeliveryState | None, before: int | None, limit: int
    ) -> Sequence[Delivery]:
        query = sa.select(nd).order_by(nd.c.id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(nd.c.account_id == account_id)
        if state is not None:
            query = query.where(nd.c.state == state.value)
        if before is not None:
            query = query.where(nd.c.id < before)
        return [_delivery(r) for r in (await self._c.execute(query)).mappings()]


class SqlScheduleRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    async def upsert(self, item: ScheduledMessage, *, now: datetime) -> int:
        t = scheduled_messages
        existing = (await self._c.execute(sa.select(t.c.id, t.c.state, t.c.due_at).where(t.c.key == item.key))).first()
        values = {
            "event_type": item.event_type,
            "account_id": item.account_id,
            "subject_type": item.subject_type,
            "subject_id": item.subject_id,
            "values_cipher": item.values["sealed"],
            "due_at": item.due_at,
            "updated_at": now,
        }
        if existing is None:
            new_id = await self._c.scalar(
                t.insert()
                .values(key=item.key, state=ScheduleState.PENDING.value, created_at=now, **values)
                .returning(t.c.id)
            )
            return int(new_id)
        if existing[1] == ScheduleState.PENDING.value:  # rebuilt when its subject changed
            await self._c.execute(t.update().where(t.c.id == existing[0]).values(**values))
            return int(existing[0])
        if existing[2] == item.due_at:  # finished for this very moment: scheduling again changes nothing
            return int(existing[0])
        # Finished, and now wanted for another moment (an appointment moved after its reminder went out): the
        # old row keeps its history under a suffixed key, a new row (a new id, so a new delivery) takes the key.
        await self._c.execute(
            t.update().where(t.c.id == existing[0]).values(key=f"{item.key}#{existing[0]}"[:160], updated_at=now)
        )
        new_id = await self._c.scalar(
            t.insert()
            .values(key=item.key, state=ScheduleState.PENDING.value, created_at=now, **values)
            .returning(t.c.id)
        )
        return int(new_id)

    async def cancel(self, key: str, *, now: datetime) -> bool:
        t = scheduled_messages
        result = await self._c.execute(
            t.update()
            .where(t.c.key == key, t.c.state == ScheduleState.PENDING.value)
            .values(state=ScheduleState.CANCELLED.value, updated_at=now)
        )
        return bool(result.rowcount)

    async def cancel_subject(self, subject_type: str, subject_id: str, *, now: datetime) -> int:
        t = scheduled_messages
        result = await self._c.execute(
            t.update()
            .where(t.c.subject_type == subject_type, t.c.subject_id == subject_id, t.c.state == "pending")
            .values(state=ScheduleState.CANCELLED.value, updated_at=now)
        )
        return int(result.rowcount or 0)

    async def due(self, *, now: datetime, since: datetime, limit: int, lock: bool) -> Sequence[ScheduledMessage]:
        t = scheduled_messages
        query = (
            sa.select(t)
            .where(t.c.state == ScheduleState.PENDING.value, t.c.due_at <= now, t.c.due_at >= since)
            .order_by(t.c.due_at, t.c.id)
            .limit(limit)
        )
        if lock:
            query = query.with_for_update(skip_locked=True)
        return [
            ScheduledMessage(
                id=r["id"],
                key=r["key"],
                event_type=r["event_type"],
                account_id=r["account_id"],
                subject_type=r["subject_type"],
                subject_id=r["subject_id"],
                values={"sealed": r["values_cipher"]},
                due_at=r["due_at"],
                state=ScheduleState(r["state"]),
            )
            for r in (await self._c.execute(query)).mappings()
        ]

    async def expire_older_than(self, since: datetime, *, now: datetime) -> int:
        t = scheduled_messages
        result = await self._c.execute(
            t.update()
            .where(t.c.state == ScheduleState.PENDING.value, t.c.due_at < since)
            .values(state=ScheduleState.EXPIRED.value, outcome="missed_window", updated_at=now)
        )
        return int(result.rowcount or 0)

    async def finish(self, item_id: int, state: ScheduleState, *, outcome: str | None, now: datetime) -> None:
        t = scheduled_messages
        await self._c.execute(
            t.update().where(t.c.id == item_id).values(state=state.value, outcome=outcome, updated_at=now)
        )
