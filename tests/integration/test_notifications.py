"""Notifications delivered once, on time, through a channel the resident can receive (issue: notifications),
on the real PostgreSQL; the channel senders are fakes of the port (the vendor channels have their own
contract tests against their simulators)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.account.model import Identity, Provider, ResidentAccount
from domain.kernel.ids import new_id
from domain.notification.model import Channel, DeliveryState, EventClass
from domain.notification.ports import (
    TOKEN_INVALID,
    Address,
    ChannelFinalError,
    ChannelQuotaError,
    ChannelTransientError,
)
from domain.notification.templates import (
    FieldKind,
    NotificationTemplate,
    Rendered,
    TemplateRegistry,
    WechatField,
)
from domain.notification.timing import QuietHours
from domain.notification.use_cases import NotificationDeps, NotificationService
from integrations.crypto.keys import Keyring, generate_keyring_config
from integrations.crypto.suite import build_suite
from persistence.db import ConnectionSource
from persistence.uow import SqlUnitOfWork, unit_of_work_factory
from tests.support.app import FixedClock

APPID = "wx-notify"
TEMPLATE_IDS = {"notice": "tmpl-notice"}


@dataclass
class FakeChannel:
    channel: Channel
    sent: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    fail_with: Exception | None = None
    fail_for: set[str] = field(default_factory=set)
    delay: float = 0.0
    dead_tokens: set[str] = field(default_factory=set)

    async def send(self, address: Address, template: str | None, rendered: Rendered) -> tuple[str, str]:
        if self.delay:
            await asyncio.sleep(self.delay)
        if address.value in self.dead_tokens:
            raise ChannelFinalError("gone", code=TOKEN_INVALID)
        if self.fail_with is not None or address.value in self.fail_for:
            raise self.fail_with or ChannelTransientError("down")
        self.sent.append((address.value, dict(rendered.fields) or {"body": rendered.body}))
        return "fake", str(len(self.sent))


@dataclass
class Queue:
    tasks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def enqueue(self, task: str, kwargs: Mapping[str, Any], *, countdown_seconds: float | None = None) -> None:
        self.tasks.append((task, dict(kwargs)))

    def take(self) -> list[int]:
        ids = [int(k["delivery_id"]) for t, k in self.tasks if t == "notification.deliver"]
        self.tasks.clear()
        return ids


def registry() -> TemplateRegistry:
    reg = TemplateRegistry()
    fields = (WechatField("thing1", FieldKind.THING, "what"), WechatField("time2", FieldKind.TIME, "time"))
    for event, event_class in (("test.urgent", EventClass.URGENT), ("test.reminder", EventClass.NORMAL)):
        reg.register(
            NotificationTemplate(
                event=event,
                event_class=event_class,
                variables=("what", "time"),
                title="通知",
                body="{what}，时间{time}",
                sms_template="notice",
                wechat_template="notice",
                wechat_fields=fields,
            )
        )
    return reg


@dataclass
class Harness:
    service: NotificationService
    wechat: FakeChannel
    sms: FakeChannel
    push: FakeChannel
    queue: Queue
    clock: FixedClock
    source: ConnectionSource

    async def resident(self, *, phone: str | None = "13900001111", wechat: bool = True) -> str:
        account_id = new_id()
        now = self.clock.now()
        cipher = self.service.d.cipher
        async with SqlUnitOfWork(self.source) as uow:
            await uow.accounts.add_resident(
                ResidentAccount(
                    id=account_id,
                    created_at=now,
                    last_active_at=now,
                    phone_index=new_id() if phone else None,
                    phone_cipher=cipher.encrypt(phone.encode(), context="account.phone") if phone else None,
                )
            )
            if wechat:
                await uow.accounts.add_identity(
                    account_id, Identity(Provider.WECHAT, APPID, "o-" + account_id), now=now
                )
            await uow.commit()
        return account_id

    async def grant(self, account_id: str, count: int = 1) -> None:
        await self.service.record_subscriptions(account_id, APPID, ["tmpl-notice"] * count)

    async def run(self) -> list[DeliveryState | None]:
        return [await self.service.deliver(i) for i in self.queue.take()]


@pytest.fixture
def h(committed_source: ConnectionSource) -> Harness:
    cfg = generate_keyring_config()
    suite = build_suite("intl", Keyring.from_config(cfg["active_kid"], cfg["keys"], cfg["index_key"]))
    clock = FixedClock(datetime(2026, 11, 22, 2, 0, tzinfo=UTC))  # 10:00 in Shanghai
    wechat, sms, queue = FakeChannel(Channel.WECHAT_SUBSCRIBE), FakeChannel(Channel.SMS), Queue()
    push = FakeChannel(Channel.APP_PUSH)
    service = NotificationService(
        NotificationDeps(
            uow_factory=unit_of_work_factory(committed_source, cipher=suite.cipher),
            clock=clock,
            cipher=suite.cipher,
            runner=queue,
            senders={Channel.WECHAT_SUBSCRIBE: wechat, Channel.SMS: sms, Channel.APP_PUSH: push},
            registry=registry(),
            quiet=QuietHours(),
            wechat_template_ids=TEMPLATE_IDS,
        )
    )
    return Harness(service, wechat, sms, push, queue, clock, committed_source)


def event(account_id: str, what: str = "停诊通知") -> dict[str, Any]:
    return {"accountId": account_id, "values": {"what": what, "time": "2026-11-23 09:00"}}


async def test_a_double_relay_sends_each_message_once(h: Harness) -> None:
    account = await h.resident()
    await h.grant(account)
    first = await h.service.on_event("test.urgent", event(account), "evt-1")
    again = await h.service.on_event("test.urgent", event(account), "evt-1")
    assert len(first) == 1, "the subscribe message; SMS only as its failover"
    assert again == [], "the same event makes no second delivery"
    ids = h.queue.take()
    results = await asyncio.gather(*(h.service.deliver(i) for i in ids + ids))  # two workers, same tasks
    assert [r.value for r in results if r] == ["sent"]
    assert len(h.wechat.sent) == 1
    assert h.sms.sent == []


async def test_a_claimed_delivery_is_not_sent_by_another_worker_until_its_lease_ends(h: Harness) -> None:
    account = await h.resident(wechat=False)
    [delivery_id] = await h.service.on_event("test.urgent", event(account), "evt-lease")
    h.queue.take()  # that task was lost with the worker
    async with SqlUnitOfWork(h.source) as uow:  # a worker claimed it, then died before settling
        await uow.notifications.claim(delivery_id, now=h.clock.now(), lease_until=h.clock.now() + timedelta(seconds=60))
        await uow.commit()
    assert await h.service.deliver(delivery_id) is None
    h.clock.advance(61)
    assert await h.service.sweep() == 1
    assert await h.run() == [DeliveryState.SENT]
    assert len(h.sms.sent) == 1


async def test_43101_is_final_and_a_transactional_or_urgent_message_falls_over_to_sms(h: Harness) -> None:
    account = await h.resident()
    h.wechat.fail_with = ChannelQuotaError("43101")
    await h.grant(account)
    await h.service.on_event("test.urgent", event(account), "evt-2")
    h.queue.take()
    log = await h.service.log(account_id=account, state=None, before=None, limit=10)
    wechat_id = next(d.id for d in log if d.channel is Channel.WECHAT_SUBSCRIBE)
    assert await h.service.deliver(wechat_id) is DeliveryState.SKIPPED
    assert await h.run() == [DeliveryState.SENT], "the SMS failover"
    log = await h.service.log(account_id=account, state=None, before=None, limit=10)
    assert {(d.channel, d.state) for d in log} == {
        (Channel.WECHAT_SUBSCRIBE, DeliveryState.SKIPPED),
        (Channel.SMS, DeliveryState.SENT),
    }
    assert len(h.sms.sent) == 1


async def test_a_normal_message_does_not_fall_over_to_sms(h: Harness) -> None:
    account = await h.resident()
    await h.service.on_event("test.reminder", event(account), "evt-normal")
    assert await h.run() == [DeliveryState.SKIPPED], "no authorisation left"
    assert h.queue.take() == []
    assert h.sms.sent == []


async def test_no_remaining_authorisation_skips_without_calling_wechat(h: Harness) -> None:
    account = await h.resident(phone=None)
    await h.service.on_event("test.urgent", event(account), "evt-3")
    assert await h.run() == [DeliveryState.SKIPPED]
    assert h.wechat.sent == []


async def test_transient_failures_retry_with_backoff_until_final(h: Harness) -> None:
    account = await h.resident(wechat=False)
    h.sms.fail_with = ChannelTransientError("provider down")
    await h.service.on_event("test.urgent", event(account), "evt-4")
    assert await h.run() == [DeliveryState.FAILED_RETRYABLE]
    assert await h.service.sweep() == 0, "not before its backoff"
    h.clock.advance(31)
    assert await h.service.sweep() == 1
    h.sms.fail_with = None
    assert await h.run() == [DeliveryState.SENT]
    assert len(h.sms.sent) == 1


async def test_quiet_hours_defer_normal_messages_only(h: Harness) -> None:
    h.clock.current = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai
    account = await h.resident(wechat=False)
    await h.service.on_event("test.reminder", event(account, "复诊提醒"), "evt-5")
    await h.service.on_event("test.urgent", event(account, "危急值"), "evt-6")
    assert [r for r in await h.run() if r] == [DeliveryState.SENT], "the urgent one now; the reminder is not due"
    assert [s[1]["what"] for s in h.sms.sent] == ["危急值"]
    h.clock.current = datetime(2026, 11, 23, 0, 1, tzinfo=UTC)  # 08:01 the next morning
    assert await h.service.sweep() == 1
    assert await h.run() == [DeliveryState.SENT]
    assert [s[1]["what"] for s in h.sms.sent] == ["危急值", "复诊提醒"]


async def test_nothing_goes_to_an_unsubscribed_channel(h: Harness) -> None:
    account = await h.resident()
    await h.service.set_preference(account, "test.urgent", Channel.WECHAT_SUBSCRIBE, False)
    await h.service.set_preference(account, "test.urgent", Channel.SMS, False)
    created = await h.service.on_event("test.urgent", event(account), "evt-7")
    assert created == []


async def test_a_batch_with_failing_recipients_settles_every_other_recipient(h: Harness) -> None:
    accounts = [await h.resident(wechat=False, phone=f"1390000{i:04d}") for i in range(20)]
    h.sms.fail_for = {"13900000003", "13900000011"}
    for i, account in enumerate(accounts):
        await h.service.on_event("test.urgent", event(account), f"evt-batch-{i}")
    results = await h.run()
    assert results.count(DeliveryState.SENT) == 18
    assert results.count(DeliveryState.FAILED_RETRYABLE) == 2


async def test_the_message_list_shows_what_was_sent_newest_first(h: Harness) -> None:
    account = await h.resident(wechat=False)
    await h.service.on_event("test.urgent", event(account, "第一条"), "evt-8")
    await h.service.on_event("test.urgent", event(account, "第二条"), "evt-9")
    await h.run()
    listed = await h.service.messages(account, before=None, limit=10)
    assert [body for _, _, body in listed] == ["第二条，时间2026-11-23 09:00", "第一条，时间2026-11-23 09:00"]


async def test_scheduled_messages_fire_once_when_due_and_a_missed_run_catches_up(h: Harness) -> None:
    account = await h.resident(wechat=False)
    due = h.clock.now() + timedelta(minutes=30)
    await h.service.schedule(
        key="r:1",
        event_type="test.urgent",
        account_id=account,
        subject_type="account",
        subject_id=account,
        values={"what": "复诊", "time": "09:00"},
        due_at=due,
    )
    assert (await h.service.run_due()).sent == 0, "not yet due"
    h.clock.advance(3 * 3600)  # the beat missed several runs
    first = await h.service.run_due()
    second = await h.service.run_due()
    assert (first.sent, second.sent) == (1, 0)
    assert await h.run() == [DeliveryState.SENT]
    assert len(h.sms.sent) == 1


async def test_a_reminder_whose_subject_was_cancelled_is_not_sent(h: Harness) -> None:
    account = await h.resident(wechat=False)
    valid = {"b-1": True, "b-2": False}

    async def still_booked(subject_id: str) -> bool:
        return valid[subject_id]

    h.service.d.subject_checks["booking"] = still_booked
    now = h.clock.now()
    for subject in ("b-1", "b-2"):
        await h.service.schedule(
            key=f"booking:{subject}",
            event_type="test.urgent",
            account_id=account,
            subject_type="booking",
            subject_id=subject,
            values={"what": subject, "time": "09:00"},
            due_at=now + timedelta(minutes=1),
        )
    await h.service.schedule(
        key="booking:b-3",
        event_type="test.urgent",
        account_id=account,
        subject_type="booking",
        subject_id="b-1",
        values={"what": "b-3", "time": "09:00"},
        due_at=now + timedelta(minutes=1),
    )
    assert await h.service.cancel_subject("booking", "b-1") == 2
    h.clock.advance(120)
    report = await h.service.run_due()
    assert (report.sent, report.skipped) == (0, 1)


async def test_rescheduling_under_the_same_key_rebuilds_the_reminder(h: Harness) -> None:
    account = await h.resident(wechat=False)
    now = h.clock.now()
    await h.service.schedule(
        key="r:move",
        event_type="test.urgent",
        account_id=account,
        subject_type="account",
        subject_id=account,
        values={"what": "旧时间", "time": "09:00"},
        due_at=now + timedelta(minutes=5),
    )
    await h.service.schedule(
        key="r:move",
        event_type="test.urgent",
        account_id=account,
        subject_type="account",
        subject_id=account,
        values={"what": "新时间", "time": "10:00"},
        due_at=now + timedelta(hours=2),
    )
    h.clock.advance(600)
    assert (await h.service.run_due()).sent == 0
    h.clock.advance(2 * 3600)
    assert (await h.service.run_due(dry_run=True)).would_send == ("r:move",)
    assert (await h.service.run_due()).sent == 1
    await h.run()
    assert [s[1]["what"] for s in h.sms.sent] == ["新时间"]


async def test_a_reminder_older_than_the_catch_up_window_expires_unsent(h: Harness) -> None:
    account = await h.resident(wechat=False)
    await h.service.schedule(
        key="r:old",
        event_type="test.urgent",
        account_id=account,
        subject_type="account",
        subject_id=account,
        values={"what": "过期", "time": "09:00"},
        due_at=h.clock.now() + timedelta(minutes=1),
    )
    h.clock.advance(25 * 3600)
    report = await h.service.run_due()
    assert (report.sent, report.expired) == (0, 1)


async def test_a_dead_push_token_is_forgotten_and_the_next_phone_gets_the_message(h: Harness) -> None:
    """APNs 410 / JPush 1011 reach the service as a final token_invalid error from the push channel."""
    account = await h.resident(phone=None, wechat=False)
    async with SqlUnitOfWork(h.source) as uow:
        await uow.notifications.add_push_device(account, "jpush", "dead-token", now=h.clock.now())
        await uow.notifications.add_push_device(account, "apns", "live-token", now=h.clock.now())
        await uow.commit()
    h.push.dead_tokens = {"dead-token"}
    await h.service.on_event("test.urgent", event(account), "evt-push")
    assert await h.run() == [DeliveryState.SENT]
    assert [value for value, _ in h.push.sent] == ["live-token"]
    async with SqlUnitOfWork(h.source) as uow:
        assert await uow.notifications.push_devices(account) == [("apns", "live-token")]

    h.push.dead_tokens = {"live-token"}
    await h.service.on_event("test.urgent", event(account), "evt-push-2")
    assert await h.run() == [DeliveryState.FAILED_FINAL], "no phone left"
    async with SqlUnitOfWork(h.source) as uow:
        assert list(await uow.notifications.push_devices(account)) == []
