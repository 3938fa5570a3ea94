"""The notification service (issue: notifications): from a domain event to one delivery per recipient and
channel, each sent at most once and recorded.

Exactly once: a delivery row is unique per (event, recipient, channel), so a relay that runs twice creates it
once; a worker claims it with a lease before sending and settles it after, so two workers never send it at the
same time. A worker killed between the provider's acceptance and the settle leaves the lease to expire and the
message is sent again: that window is the only duplicate, and channels with an idempotency key close it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self

from domain.account.model import Provider
from domain.account.ports import AccountRepository
from domain.kernel.clock import Clock
from domain.kernel.crypto import FieldCipher
from domain.kernel.tasks import TaskRunner
from domain.notification.model import Channel, DeliveryState, EventClass
from domain.notification.ports import (
    TOKEN_INVALID,
    Address,
    ChannelFinalError,
    ChannelQuotaError,
    ChannelSender,
    ChannelTransientError,
    Delivery,
    NotificationRepository,
)
from domain.notification.schedule import (
    CATCH_UP,
    RunReport,
    ScheduledMessage,
    ScheduleRepository,
    ScheduleState,
    SubjectCheck,
)
from domain.notification.templates import REGISTRY, Rendered, TemplateRegistry, TemplateValueError
from domain.notification.timing import QuietHours, plan_reminder, send_at

_VALUES_CONTEXT = "notification.values"
PRIMARY_CHANNELS = frozenset({Channel.WECHAT_SUBSCRIBE, Channel.ALIPAY_MESSAGE, Channel.APP_PUSH})


class NotificationUnitOfWork(Protocol):
    @property
    def notifications(self) -> NotificationRepository: ...

    @property
    def schedule(self) -> ScheduleRepository: ...

    @property
    def accounts(self) -> AccountRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def commit(self) -> None: ...


@dataclass
class NotificationDeps:
    uow_factory: Callable[[], NotificationUnitOfWork]
    clock: Clock
    cipher: FieldCipher
    runner: TaskRunner
    senders: Mapping[Channel, ChannelSender] = field(default_factory=dict)
    registry: TemplateRegistry = REGISTRY
    quiet: QuietHours = field(default_factory=QuietHours)
    lease: timedelta = timedelta(seconds=60)
    wechat_template_ids: Mapping[str, str] = field(default_factory=dict)
    """Our subscribe-template names -> the mini-program's template ids (as the front end knows them)."""
    backoff: tuple[int, ...] = (30, 120, 600, 1800, 3600)
    subject_checks: dict[str, SubjectCheck] = field(default_factory=dict)
    """Per subject type: is a reminder's subject still valid? Features register theirs."""
    catch_up: timedelta = CATCH_UP
    """Seconds before each retry of a transient failure; after the last, the delivery fails for good."""


class NotificationService:
    def __init__(self, deps: NotificationDeps) -> None:
        self.d = deps

    # ------------------------------------------------------------------ fan-out

    async def on_event(self, topic: str, payload: Mapping[str, Any], event_id: str) -> list[int]:
        """Create this event's deliveries (once) and queue them. Returns the new delivery ids."""
        try:
            template = self.d.registry.get(topic)
        except KeyError:
            return []
        account_id = payload.get("accountId")
        if not isinstance(account_id, str) or payload.get("notify") is False:
            return []
        values = {str(k): str(v) for k, v in (payload.get("values") or {}).items()}
        now = self.d.clock.now()
        created: list[int] = []
        async with self.d.uow_factory() as uow:
            preferences = await uow.notifications.preferences(account_id)
            reachable = {a.channel for a in await self._addresses(uow, account_id)}
            wanted = {c for c in template.channels & reachable if preferences.get((topic, c), True)}
            primary = wanted & PRIMARY_CHANNELS
            # SMS is for residents no other channel reaches, and the failover of the others (below).
            for channel in sorted(primary or wanted, key=lambda c: c.value):
                when = send_at(template.event_class, now=now, quiet=self.d.quiet)
                delivery_id = await uow.notifications.add_delivery(
                    event_id=event_id,
                    event_type=topic,
                    account_id=account_id,
                    channel=channel,
                    values=self._seal(values),
                    send_after=when,
                    now=now,
                )
                if delivery_id is not None:
                    created.append(delivery_id)
            await uow.commit()
        for delivery_id in created:
            await self.d.runner.enqueue("notification.deliver", {"delivery_id": delivery_id})
        return created

    def _seal(self, values: Mapping[str, str]) -> Mapping[str, str]:
        return {
            "sealed": self.d.cipher.encrypt(json.dumps(values, ensure_ascii=False).encode(), context=_VALUES_CONTEXT)
        }

    def _open(self, sealed: Mapping[str, str]) -> dict[str, str]:
        token = sealed.get("sealed")
        if not token:
            return dict(sealed)
        opened: dict[str, str] = json.loads(self.d.cipher.decrypt(token, context=_VALUES_CONTEXT))
        return opened

    async def _addresses(self, uow: NotificationUnitOfWork, account_id: str) -> list[Address]:
        found: list[Address] = []
        for identity in await uow.accounts.identities(account_id):
            if identity.provider is Provider.WECHAT:
                found.append(Address(Channel.WECHAT_SUBSCRIBE, identity.app_id, identity.subject))
            elif identity.provider is Provider.ALIPAY:
                found.append(Address(Channel.ALIPAY_MESSAGE, identity.app_id, identity.subject))
        account = await uow.accounts.resident(account_id)
        if account is not None and account.phone_cipher:
            phone = self.d.cipher.decrypt(account.phone_cipher, context="account.phone").decode()
            found.append(Address(Channel.SMS, "", phone))
        for provider, token in await uow.notifications.push_devices(account_id):
            found.append(Address(Channel.APP_PUSH, provider, token))
        return [a for a in found if a.channel in self.d.senders]

    # ------------------------------------------------------------------ delivery

    async def deliver(self, delivery_id: int) -> DeliveryState | None:
        """Claim, send and settle one delivery. None when it was not due or another worker holds it."""
        now = self.d.clock.now()
        async with self.d.uow_factory() as uow:
            delivery = await uow.notifications.claim(delivery_id, now=now, lease_until=now + self.d.lease)
            if delivery is None:
                return None
            addresses = [a for a in await self._addresses(uow, delivery.account_id) if a.channel is delivery.channel]
            await uow.commit()
        template = self.d.registry.get(delivery.event_type)
        when = send_at(template.event_class, now=now, quiet=self.d.quiet)
        if when > now:
            return await self._settle(delivery, DeliveryState.DEFERRED, retry_at=when)
        if not addresses:
            return await self._settle(delivery, DeliveryState.SKIPPED, failure="no_address")
        values = self._open(delivery.values)
        try:
            rendered = self.d.registry.render(delivery.event_type, delivery.channel, values)
        except TemplateValueError:
            return await self._settle(delivery, DeliveryState.FAILED_FINAL, failure="template_values")
        sender = self.d.senders[delivery.channel]
        template_name = (
            template.wechat_template
            if delivery.channel is Channel.WECHAT_SUBSCRIBE
            else (template.sms_template if delivery.channel is Channel.SMS else None)
        )
        address = addresses[0]
        if delivery.channel is Channel.WECHAT_SUBSCRIBE and template_name:
            async with self.d.uow_factory() as uow:
                granted = await uow.notifications.use_grant(address.app_id, address.value, template_name, now=now)
                await uow.commit()
            if not granted:
                state = await self._settle(delivery, DeliveryState.SKIPPED, failure="no_quota")
                await self._failover(delivery, template.event_class)
                return state
        try:
            provider, message_id = await self._send(delivery, sender, addresses, template_name, rendered)
        except ChannelQuotaError:
            state = await self._settle(delivery, DeliveryState.SKIPPED, failure="no_quota")
            await self._failover(delivery, template.event_class)
            return state
        except ChannelFinalError as exc:
            state = await self._settle(delivery, DeliveryState.FAILED_FINAL, failure=exc.code[:64])
            await self._failover(delivery, template.event_class)
            return state
        except ChannelTransientError as exc:
            if delivery.attempts >= len(self.d.backoff):
                state = await self._settle(delivery, DeliveryState.FAILED_FINAL, failure=exc.code[:64])
                await self._failover(delivery, template.event_class)
                return state
            retry_at = now + timedelta(seconds=self.d.backoff[delivery.attempts - 1])
            return await self._settle(
                delivery, DeliveryState.FAILED_RETRYABLE, failure=exc.code[:64], retry_at=retry_at
            )
        return await self._settle(delivery, DeliveryState.SENT, provider=provider, message_id=message_id)

    async def _send(
        self,
        delivery: Delivery,
        sender: ChannelSender,
        addresses: Sequence[Address],
        template_name: str | None,
        rendered: Rendered,
    ) -> tuple[str, str]:
        """Send to the first address that takes it. A phone whose push token the provider calls gone (APNs 410,
        JPush 1011) is forgotten and the next registered phone is tried."""
        for index, address in enumerate(addresses):
            try:
                return await sender.send(address, template_name, rendered)
            except ChannelFinalError as exc:
                if delivery.channel is not Channel.APP_PUSH or exc.code != TOKEN_INVALID:
                    raise
                async with self.d.uow_factory() as uow:
                    await uow.notifications.drop_push_device(address.app_id, address.value)
                    await uow.commit()
                if index == len(addresses) - 1:
                    raise
        raise ChannelFinalError("no address", code="notification.no_address")

    async def _settle(self, delivery: Delivery, state: DeliveryState, **kwargs: Any) -> DeliveryState:
        async with self.d.uow_factory() as uow:
            await uow.notifications.settle(delivery.id, state, now=self.d.clock.now(), **kwargs)
            await uow.commit()
        return state

    async def _failover(self, delivery: Delivery, event_class: EventClass) -> None:
        """A transactional or urgent message that could not go by subscribe message goes by SMS instead."""
        if delivery.channel is Channel.SMS or event_class is EventClass.NORMAL or Channel.SMS not in self.d.senders:
            return
        template = self.d.registry.get(delivery.event_type)
        if not template.sms_template:
            return
        now = self.d.clock.now()
        async with self.d.uow_factory() as uow:
            reachable = {a.channel for a in await self._addresses(uow, delivery.account_id)}
            allowed = (await uow.notifications.preferences(delivery.account_id)).get(
                (delivery.event_type, Channel.SMS), True
            )
            new_id = None
            if Channel.SMS in reachable and allowed:
                new_id = await uow.notifications.add_delivery(
                    event_id=delivery.event_id,
                    event_type=delivery.event_type,
                    account_id=delivery.account_id,
                    channel=Channel.SMS,
                    values=delivery.values,
                    send_after=now,
                    now=now,
                )
            await uow.commit()
        if new_id is not None:
            await self.d.runner.enqueue("notification.deliver", {"delivery_id": new_id})

    async def channel_of(self, delivery_id: int) -> str | None:
        async with self.d.uow_factory() as uow:
            rows = await uow.notifications.deliveries(account_id=None, state=None, before=delivery_id + 1, limit=1)
        return rows[0].channel.value if rows and rows[0].id == delivery_id else None

    async def sweep(self, *, limit: int = 500) -> int:
        """Queue every due delivery: retries whose time came, deferred ones after quiet hours, lost tasks."""
        async with self.d.uow_factory() as uow:
            due = await uow.notifications.due(now=self.d.clock.now(), limit=limit)
        for delivery_id in due:
            await self.d.runner.enqueue("notification.deliver", {"delivery_id": delivery_id})
        return len(due)

    # ------------------------------------------------------------------ residents

    async def preferences(self, account_id: str) -> Mapping[tuple[str, Channel], bool]:
        async with self.d.uow_factory() as uow:
            return await uow.notifications.preferences(account_id)

    async def set_preference(self, account_id: str, event_type: str, channel: Channel, enabled: bool) -> None:
        self.d.registry.get(event_type)
        async with self.d.uow_factory() as uow:
            await uow.notifications.set_preference(account_id, event_type, channel, enabled, now=self.d.clock.now())
            await uow.commit()

    async def record_subscriptions(self, account_id: str, appid: str, template_ids: Sequence[str]) -> int:
        """After ``wx.requestSubscribeMessage`` the mini-program reports which template ids the resident accepted:
        each acceptance is one send (one-time authorisation). Unknown ids are ignored."""
        names = {v: k for k, v in self.d.wechat_template_ids.items()}
        templates = [names[t] for t in template_ids if t in names]
        async with self.d.uow_factory() as uow:
            openid = next(
                (
                    i.subject
                    for i in await uow.accounts.identities(account_id)
                    if i.provider is Provider.WECHAT and i.app_id == appid
                ),
                None,
            )
            if openid is None:
                return 0
            for template in templates:
                await uow.notifications.grant(account_id, appid, openid, template, 1, now=self.d.clock.now())
            await uow.commit()
        return len(templates)

    async def register_push_device(self, account_id: str, provider: str, token: str) -> None:
        async with self.d.uow_factory() as uow:
            await uow.notifications.add_push_device(account_id, provider, token, now=self.d.clock.now())
            await uow.commit()

    async def messages(self, account_id: str, *, before: int | None, limit: int) -> list[tuple[Delivery, str, str]]:
        """The resident's message list: what was sent, newest first, with its title and text."""
        async with self.d.uow_factory() as uow:
            rows = await uow.notifications.deliveries(
                account_id=account_id, state=DeliveryState.SENT, before=before, limit=limit
            )
        listed = []
        for row in rows:
            rendered = self.d.registry.render(row.event_type, Channel.APP_PUSH, self._open(row.values))
            listed.append((row, rendered.title, rendered.body))
        return listed

    async def log(
        self, *, account_id: str | None, state: DeliveryState | None, before: int | None, limit: int
    ) -> Sequence[Delivery]:
        async with self.d.uow_factory() as uow:
            return await uow.notifications.deliveries(account_id=account_id, state=state, before=before, limit=limit)

    # ------------------------------------------------------------------ scheduled messages

    async def schedule(
        self,
        *,
        key: str,
        event_type: str,
        account_id: str,
        subject_type: str,
        subject_id: str,
        values: Mapping[str, str],
        due_at: datetime,
    ) -> int:
        """Schedule (or rebuild, under the same key) one reminder. Normal reminders meant for quiet hours are
        moved before they begin."""
        item = self.reminder(
            key=key,
            event_type=event_type,
            account_id=account_id,
            subject_type=subject_type,
            subject_id=subject_id,
            values=values,
            due_at=due_at,
        )
        async with self.d.uow_factory() as uow:
            item_id = await uow.schedule.upsert(item, now=self.d.clock.now())
            await uow.commit()
        return item_id

    def reminder(
        self,
        *,
        key: str,
        event_type: str,
        account_id: str,
        subject_type: str,
        subject_id: str,
        values: Mapping[str, str],
        due_at: datetime,
    ) -> ScheduledMessage:
        """The row ``schedule`` writes (values sealed, a normal reminder meant for quiet hours moved before they
        begin), for a feature that writes it with ``ScheduleRepository.upsert`` in its own transaction (a booking's
        reminders change with the booking)."""
        template = self.d.registry.get(event_type)
        when = due_at if template.event_class is not EventClass.NORMAL else plan_reminder(due_at, quiet=self.d.quiet)
        return ScheduledMessage(
            key=key,
            event_type=event_type,
            account_id=account_id,
            subject_type=subject_type,
            subject_id=subject_id,
            values=self._seal(values),
            due_at=when,
        )

    async def cancel_subject(self, subject_type: str, subject_id: str) -> int:
        async with self.d.uow_factory() as uow:
            count = await uow.schedule.cancel_subject(subject_type, subject_id, now=self.d.clock.now())
            await uow.commit()
        return count

    async def run_due(self, *, dry_run: bool = False, limit: int = 500) -> RunReport:
        """Send the due reminders within the catch-up window; skip those whose subject went away; expire those
        older than the window. Each row is settled on its own, so one failure never stops the batch."""
        now = self.d.clock.now()
        since = now - self.d.catch_up
        async with self.d.uow_factory() as uow:
            expired = 0 if dry_run else await uow.schedule.expire_older_than(since, now=now)
            due = await uow.schedule.due(now=now, since=since, limit=limit, lock=False)
            await uow.commit()
        sent = skipped = failed = 0
        would: list[str] = []
        for item in due:
            check = self.d.subject_checks.get(item.subject_type)
            valid = True if check is None else await check(item.subject_id)
            if dry_run:
                if valid:
                    would.append(item.key)
                continue
            try:
                if not valid:
                    await self._finish(item, ScheduleState.SKIPPED, "subject_gone")
                    skipped += 1
                    continue
                await self.on_event(
                    item.event_type,
                    {"accountId": item.account_id, "values": self._open(item.values)},
                    f"sched:{item.id}",
                )
                await self._finish(item, ScheduleState.SENT, None)
                sent += 1
            except Exception as exc:  # noqa: BLE001  (one failing recipient must not stop the batch)
                failed += 1
                await self._finish(item, ScheduleState.FAILED, type(exc).__name__[:64])
        return RunReport(sent=sent, skipped=skipped, failed=failed, expired=expired, would_send=tuple(would))

    async def _finish(self, item: ScheduledMessage, state: ScheduleState, outcome: str | None) -> None:
        async with self.d.uow_factory() as uow:
            await uow.schedule.finish(item.id, state, outcome=outcome, now=self.d.clock.now())
            await uow.commit()
