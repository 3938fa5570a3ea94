"""The payment service (issue: payments): one service, two channels, for every self-pay fee in the product.

Every change goes through ``machine.apply`` under a row lock, and its effects are carried out after the commit:
closing other attempts at their channels, submitting refunds (same refund number on every retry), and outbox
messages ``payment.<what>`` that the payable (booking, bill, consult...) acts on. No channel call happens inside
a database transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self

from domain.account.model import Provider
from domain.account.ports import AccountRepository
from domain.kernel.audit import AuditEvent, AuditRepository, Outcome
from domain.kernel.clock import Clock
from domain.kernel.errors import DomainError, ForbiddenError, NotFoundError, UnavailableError, ValidationError
from domain.kernel.ids import new_id
from domain.kernel.money import Amount
from domain.kernel.outbox import OutboxRepository
from domain.kernel.tasks import TaskRunner
from domain.payment.machine import (
    AttemptClosed,
    Close,
    CloseAttempt,
    Effect,
    Event,
    KeepLate,
    NotifyPayable,
    OrderAlreadyPaidError,
    OrderState,
    PaymentOrder,
    Prepaid,
    Refund,
    RefundFailed,
    RefundRetried,
    RefundState,
    RefundSubmitted,
    RefundSucceeded,
    RequestRefund,
    SubmitRefund,
    Succeeded,
    apply,
)
from domain.payment.ports import (
    ChannelEvent,
    ChannelNotice,
    ChannelRefundState,
    ChannelTrade,
    ChannelTradeState,
    NoticeReader,
    Payer,
    PaymentChannel,
    PaymentRepository,
)

log = logging.getLogger(__name__)

PAYMENT_TOPIC_PREFIX = "payment."
"""Outbox topics ``payment.paid``, ``payment.paid_late``, ``payment.closed``, ``payment.refunded``,
``payment.refund_failed``; payload: orderId, payableType, payableId."""


class OrderNotFoundError(NotFoundError):
    code = "payment.order_not_found"
    message = "未找到该支付订单"


class UnknownChannelError(ValidationError):
    code = "payment.unknown_channel"
    message = "不支持的支付方式"


class OrderExpiredError(ValidationError):
    code = "payment.expired"
    message = "订单已超时，请重新下单"


class NoticeMismatchError(ValidationError):
    code = "payment.notice_mismatch"
    message = "通知与订单不符"


class PayerRequiredError(ForbiddenError):
    code = "payment.payer_required"
    message = "请在小程序中完成登录后再支付"


class PaymentUnitOfWork(Protocol):
    @property
    def payments(self) -> PaymentRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    @property
    def accounts(self) -> AccountRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def commit(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PaymentPolicy:
    query_after: timedelta = timedelta(minutes=1)
    """An order paying for this long without a notification is queried at its channel, then again after twice
    as long each time."""
    query_cap: timedelta = timedelta(minutes=8)
    """The longest wait between two queries of one order."""
    refund_backoff: tuple[int, ...] = (30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600)
    """Seconds between tries of a refund still processing or failing transiently; after the last, it fails
    for good and waits in the operators' queue."""


@dataclass(slots=True)
class PaymentDeps:
    uow_factory: Callable[[], PaymentUnitOfWork]
    clock: Clock
    channels: Mapping[str, PaymentChannel] = field(default_factory=dict)
    runner: TaskRunner | None = None
    notify_urls: Mapping[str, str] = field(default_factory=dict)
    """Channel -> our callback URL (``/callbacks/wechat-pay``, ``/callbacks/alipay``)."""
    policy: PaymentPolicy = field(default_factory=PaymentPolicy)
    notice_readers: Mapping[str, NoticeReader] = field(default_factory=dict)
    """Channel -> what verifies its notifications (the same adapters as ``channels``)."""


def new_out_trade_no() -> str:
    """32 characters of [0-9A-Z]: within WeChat Pay's 32 and Alipay's 64."""
    return "P" + new_id()[:31].upper()


class PaymentService:
    def __init__(self, deps: PaymentDeps) -> None:
        self.d = deps

    def _now(self) -> datetime:
        return self.d.clock.now()

    def channel(self, name: str) -> PaymentChannel:
        channel = self.d.channels.get(name)
        if channel is None:
            raise UnknownChannelError(f"channel {name[:16]!r} is not configured")
        return channel

    # ------------------------------------------------------------------ creating (inside the payable's unit)

    async def create_order(
        self,
        uow: PaymentUnitOfWork,
        *,
        payable_type: str,
        payable_id: str,
        account_id: str,
        description: str,
        amount: Amount,
        expires_at: datetime,
        order_id: str | None = None,
    ) -> PaymentOrder:
        """Add an order in the payable's own transaction (a booking's hold, a bill's payment); ``order_id`` when
        the payable chose it beforehand."""
        order = PaymentOrder(
            id=order_id or new_id(),
            payable_type=payable_type,
            payable_id=payable_id,
            account_id=account_id,
            description=description[:64],
            self_pay_fen=amount.self_pay_fen,
            insured_fen=amount.insured_fen,
            created_at=self._now(),
            expires_at=expires_at,
        )
        await uow.payments.add(order)
        return order

    async def order_for(self, account_id: str, order_id: str) -> PaymentOrder:
        async with self.d.uow_factory() as uow:
            order = await uow.payments.get(order_id)
        if order is None or order.account_id != account_id:
            raise OrderNotFoundError("no such order for this account")
        return order

    # ------------------------------------------------------------------ applying events

    async def _transition(
        self,
        uow: PaymentUnitOfWork,
        order: PaymentOrder,
        event: Event,
        *,
        now: datetime,
    ) -> tuple[PaymentOrder, tuple[Effect, ...]]:
        outcome = apply(order, event)
        if not outcome.changed:
            return order, ()
        await uow.payments.save(order, outcome.order, now=now)
        for effect in outcome.effects:
            if isinstance(effect, NotifyPayable):
                await uow.outbox.add(
                    PAYMENT_TOPIC_PREFIX + effect.what,
                    {"orderId": order.id, "payableType": order.payable_type, "payableId": order.payable_id},
                    now=now,
                    key=f"{order.id}:{effect.what}:{outcome.order.version}",
                )
        return outcome.order, outcome.effects

    async def _after_commit(self, order: PaymentOrder, effects: Sequence[Effect]) -> None:
        """Carry out what the machine asked for, now that it is committed."""
        for effect in effects:
            if isinstance(effect, CloseAttempt):
                try:
                    trade = await self.channel(effect.channel).close(effect.out_trade_no)
                except DomainError as exc:
                    # The sweeper queries this attempt later; a success found then is applied as usual.
                    log.warning("payment_close_failed", extra={"order": order.id, "code": exc.code})
                    continue
                if trade.state is ChannelTradeState.PAID:
                    await self.apply_trade(effect.channel, trade)
            elif isinstance(effect, SubmitRefund):
                if self.d.runner is not None:
                    await self.d.runner.enqueue("payment.submit_refund", {"refund_id": effect.refund_id})
                else:
                    await self.submit_refund(effect.refund_id)

    async def apply_trade(self, channel: str, trade: ChannelTrade, *, event: ChannelEvent | None = None) -> bool:
        """Apply what a verified notification or a query says of one attempt. A notification is stored once
        first; a repeated one changes nothing. Returns False when the event was seen before."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            if event is not None and not await uow.payments.record_event(event):
                await uow.commit()
                return False
            order = await uow.payments.by_out_trade_no(trade.out_trade_no, lock=True)
            if order is None:
                raise OrderNotFoundError("no attempt with this out_trade_no")
            attempt = order.attempt(trade.out_trade_no)
            assert attempt is not None
            if attempt.channel != channel:
                raise ValidationError("attempt of another channel", code="payment.channel_mismatch")
            effects: tuple[Effect, ...] = ()
            if trade.state is ChannelTradeState.PAID:
                assert trade.transaction_id is not None
                order, effects = await self._transition(
                    uow,
                    order,
                    Succeeded(trade.out_trade_no, trade.transaction_id, trade.amount_fen or 0, trade.paid_at or now),
                    now=now,
                )
            elif trade.state in (ChannelTradeState.CLOSED, ChannelTradeState.NOT_FOUND):
                order, effects = await self._transition(uow, order, AttemptClosed(trade.out_trade_no), now=now)
            if event is not None:
                await uow.payments.mark_event_applied(event.channel, event.event_key, now=now)
            await uow.commit()
        await self._after_commit(order, effects)
        return True

    # ------------------------------------------------------------------ notifications

    def notice_reader(self, name: str) -> NoticeReader:
        reader = self.d.notice_readers.get(name)
        if reader is None:
            raise UnavailableError(f"channel {name[:16]!r} takes no notifications here", code="payment.not_configured")
        return reader

    async def receive_notice(
        self, channel: str, headers: Mapping[str, str], body: bytes, *, source_ip: str | None
    ) -> bool:
        """A notification as it came over HTTP: verified, stored once, applied at most once. Returns False for a
        repeat. Anything forged, stale, probing, foreign or not matching its order changes nothing and is
        audited (then re-raised: the channel tries again later, which a genuine notification survives)."""
        try:
            notice = await self.notice_reader(channel).read_notice(headers, body)
            return await self.handle_notice(channel, notice)
        except DomainError as exc:
            if exc.status < 500:
                await self._audit_rejected_notice(channel, exc, source_ip=source_ip)
            raise

    async def handle_notice(self, channel: str, notice: ChannelNotice) -> bool:
        if notice.trade is not None:
            return await self.apply_trade(channel, notice.trade, event=notice.event)
        assert notice.refund_out_trade_no is not None
        async with self.d.uow_factory() as uow:
            seen = not await uow.payments.record_event(notice.event)
            # Not committed yet: the event is stored only once the refunds it speaks of are confirmed.
            if seen:
                await uow.commit()
                return False
        await self.confirm_refunds(channel, notice.refund_out_trade_no, notice.out_refund_no)
        async with self.d.uow_factory() as uow:
            stored = await uow.payments.record_event(notice.event)
            await uow.payments.mark_event_applied(notice.event.channel, notice.event.event_key, now=self._now())
            await uow.commit()
        return stored

    async def confirm_refunds(self, channel: str, out_trade_no: str, out_refund_no: str | None) -> int:
        """Ask the channel about refunds in flight of one attempt (one refund, or all of them) and apply final
        answers: a refund notification is a hint, the refund query the proof."""
        async with self.d.uow_factory() as uow:
            order = await uow.payments.by_out_trade_no(out_trade_no)
        if order is None:
            raise OrderNotFoundError("no attempt with this out_trade_no")
        attempt = order.attempt(out_trade_no)
        if attempt is None or attempt.channel != channel:
            raise ValidationError("attempt of another channel", code="payment.channel_mismatch")
        ours = [r for r in order.refunds_of(out_trade_no) if out_refund_no is None or r.out_refund_no == out_refund_no]
        if out_refund_no is not None and not ours:
            raise NoticeMismatchError("a refund number we never sent")
        applied = 0
        for refund in ours:
            if refund.state is not RefundState.PROCESSING:
                continue
            answer = await self.channel(channel).query_refund(out_trade_no, refund.out_refund_no)
            if answer.state is ChannelRefundState.PROCESSING:
                continue
            event: Event = (
                RefundSucceeded(refund.id)
                if answer.state is ChannelRefundState.SUCCEEDED
                else RefundFailed(refund.id, answer.failure or "refused")
            )
            async with self.d.uow_factory() as uow:
                current = await uow.payments.by_refund(refund.id, lock=True)
                assert current is not None
                current, effects = await self._transition(uow, current, event, now=self._now())
                await uow.payments.set_refund_retry(
                    refund.id, next_try_at=None, tries=await uow.payments.refund_tries(refund.id)
                )
                await uow.commit()
            await self._after_commit(current, effects)
            applied += 1
        return applied

    async def _audit_rejected_notice(self, channel: str, exc: DomainError, *, source_ip: str | None) -> None:
        async with self.d.uow_factory() as uow:
            await uow.audit.record(
                AuditEvent(
                    action="payment.notification_rejected",
                    outcome=Outcome.FAILURE,
                    object_type="payment_channel",
                    object_id=channel,
                    source_ip=source_ip,
                    reason=exc.code,
                ),
                now=self._now(),
            )
            await uow.commit()

    # ------------------------------------------------------------------ paying

    async def payer(self, account_id: str, channel: str, *, app_id: str | None, app: bool) -> Payer:
        """Who pays: in a mini-program, the account's openid (WeChat) or user id / open id (Alipay) in that
        mini-program; from the patient app, nobody in particular (APP pay)."""
        if app:
            return Payer(app=True)
        provider = {"wechat": Provider.WECHAT, "alipay": Provider.ALIPAY}.get(channel)
        if provider is None:
            raise UnknownChannelError(f"channel {channel[:16]!r}")
        async with self.d.uow_factory() as uow:
            identities = await uow.accounts.identities(account_id)
        for identity in identities:
            if identity.provider is provider and (app_id is None or identity.app_id == app_id):
                return Payer(app_id=identity.app_id, user_id=identity.subject)
        raise PayerRequiredError("no identity of this account in that mini-program")

    async def pay(self, account_id: str, order_id: str, channel_name: str, payer: Payer) -> Mapping[str, Any]:
        """Start (or restart) paying with a channel: the signed parameters for the front end. A new attempt is
        recorded before the channel is called (outside the transaction); another channel's open attempt is
        closed so that the resident cannot pay twice."""
        channel = self.channel(channel_name)
        if not payer.app and not payer.user_id:
            raise PayerRequiredError("no payer identity for a mini-program payment")
        now = self._now()
        out_trade_no = new_out_trade_no()
        async with self.d.uow_factory() as uow:
            order = await uow.payments.get(order_id, lock=True)
            if order is None or order.account_id != account_id:
                raise OrderNotFoundError("no such order for this account")
            if order.expires_at <= now and order.state in (OrderState.CREATED, OrderState.PAYING):
                raise OrderExpiredError("the order expired")
            order, effects = await self._transition(uow, order, Prepaid(out_trade_no, channel_name), now=now)
            await uow.commit()
        await self._after_commit(order, effects)
        if any(isinstance(e, CloseAttempt) for e in effects):
            # Closing the other attempt may have found it paid: then this one must not be created at all.
            async with self.d.uow_factory() as uow:
                current = await uow.payments.get(order_id)
            assert current is not None
            attempt = current.attempt(out_trade_no)
            if current.paid_out_trade_no is not None or attempt is None or attempt.state.value != "open":
                raise OrderAlreadyPaidError("paid through the previous channel")
        return await channel.prepay(order, out_trade_no, payer, notify_url=self.d.notify_urls.get(channel_name, ""))

    # ------------------------------------------------------------------ expiry and active query

    async def expire(self, order_id: str) -> OrderState | None:
        """Close an unpaid order after its deadline: at each channel first (a payment found there wins), then
        here."""
        async with self.d.uow_factory() as uow:
            order = await uow.payments.get(order_id)
        if order is None or order.state not in (OrderState.CREATED, OrderState.PAYING):
            return order.state if order else None
        for attempt in order.attempts:
            if attempt.state.value != "open":
                continue
            trade = await self.channel(attempt.channel).close(attempt.out_trade_no)
            if trade.state is ChannelTradeState.PAID:
                await self.apply_trade(attempt.channel, trade)
                return OrderState.PAID
        now = self._now()
        async with self.d.uow_factory() as uow:
            current = await uow.payments.get(order_id, lock=True)
            assert current is not None
            if current.state not in (OrderState.CREATED, OrderState.PAYING):
                await uow.commit()
                return current.state
            if any(
                a.state.value == "open" and a.out_trade_no not in {x.out_trade_no for x in order.attempts}
                for a in current.attempts
            ):
                await uow.commit()
                return current.state  # a new attempt started meanwhile; the next sweep looks again
            current, effects = await self._transition(uow, current, Close(now), now=now)
            await uow.commit()
        # The attempts were closed at their channels above: nothing to close again.
        await self._after_commit(current, [e for e in effects if not isinstance(e, CloseAttempt)])
        return current.state

    async def expire_due(self, *, limit: int = 200) -> int:
        async with self.d.uow_factory() as uow:
            due = await uow.payments.due_for_expiry(now=self._now(), limit=limit)
        done = 0
        for order_id in due:
            try:
                await self.expire(order_id)
                done += 1
            except DomainError as exc:
                log.warning("payment_expire_failed", extra={"order": order_id, "code": exc.code})
        return done

    async def query_pending(self, *, limit: int = 200) -> int:
        """Orders paying without a notification are asked about at their channels."""
        now = self._now()
        policy = self.d.policy
        async with self.d.uow_factory() as uow:
            pending = await uow.payments.awaiting_payment(now=now, older_than=now - policy.query_after, limit=limit)
            # Backoff: the next query of each comes later and later (1, 2, 4, 8 ... minutes, at most query_cap).
            for order_id, tries in pending:
                delay = min(policy.query_after * 2**tries, policy.query_cap)
                await uow.payments.postpone_query(order_id, next_query_at=now + delay, tries=tries + 1)
            await uow.commit()
        found = 0
        for order_id, _ in pending:
            async with self.d.uow_factory() as uow:
                order = await uow.payments.get(order_id)
            if order is None:
                continue
            for attempt in order.attempts:
                if attempt.state.value != "open":
                    continue
                try:
                    trade = await self.channel(attempt.channel).query(attempt.out_trade_no)
                except DomainError as exc:
                    log.warning("payment_query_failed", extra={"order": order_id, "code": exc.code})
                    continue
                if trade.state is ChannelTradeState.PAID:
                    await self.apply_trade(attempt.channel, trade)
                    found += 1
        return found

    # ------------------------------------------------------------------ refunds

    async def request_refund(self, order_id: str, *, amount_fen: int | None, reason: str, key: str) -> Refund:
        """Refund (all that is left, by default). ``key`` makes the request idempotent: the same key returns
        the same refund."""
        now = self._now()
        refund_id = f"{order_id}-{key}"[:80]
        async with self.d.uow_factory() as uow:
            order = await uow.payments.get(order_id, lock=True)
            if order is None:
                raise OrderNotFoundError("no such order")
            existing = order.refund(refund_id)
            if existing is not None:
                await uow.commit()
                return existing
            amount = order.refundable_fen if amount_fen is None else amount_fen
            order, effects = await self._transition(
                uow,
                order,
                RequestRefund(refund_id, "R" + new_id()[:31].upper(), amount, reason[:64]),
                now=now,
            )
            await uow.audit.record(
                AuditEvent(
                    action="payment.refund_requested",
                    outcome=Outcome.SUCCESS,
                    actor="system",
                    object_type="payment_order",
                    object_id=order_id,
                    reason=reason[:64],
                    details={"amountFen": str(amount)},
                ),
                now=now,
            )
            await uow.commit()
        await self._after_commit(order, effects)
        async with self.d.uow_factory() as uow:
            current = await uow.payments.get(order_id)
        refund = current.refund(refund_id) if current else None
        assert refund is not None
        return refund

    async def submit_refund(self, refund_id: str) -> RefundState | None:
        """Send a refund to its channel, with its own refund number every time (idempotent at the channel),
        and record the answer. Processing refunds and transient failures are tried again with backoff; a
        refusal, or the last try, ends FAILED in the operators' queue."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            order = await uow.payments.by_refund(refund_id, lock=True)
            if order is None:
                return None
            refund = order.refund(refund_id)
            assert refund is not None
            if refund.state in (RefundState.SUCCEEDED, RefundState.FAILED):
                await uow.commit()
                return refund.state
            order, _ = await self._transition(uow, order, RefundSubmitted(refund_id), now=now)
            tries = await uow.payments.refund_tries(refund_id) + 1
            await uow.payments.set_refund_retry(refund_id, next_try_at=self._next_try(now, tries), tries=tries)
            await uow.commit()
        attempt = order.attempt(refund.out_trade_no)
        assert attempt is not None
        channel = self.channel(attempt.channel)
        try:
            answer = await channel.refund(
                refund.out_trade_no,
                refund.out_refund_no,
                amount_fen=refund.amount_fen,
                total_fen=order.self_pay_fen,
                reason=refund.reason,
            )
        except DomainError as exc:
            if exc.status >= 500 and self._next_try(now, tries) is not None:
                return RefundState.PROCESSING  # transient: tried again at next_try_at
            answer_state, failure = ChannelRefundState.FAILED, str(exc.code)
        else:
            answer_state, failure = answer.state, answer.failure or ""
        if answer_state is ChannelRefundState.PROCESSING:
            if self._next_try(now, tries) is not None:
                return RefundState.PROCESSING
            answer_state, failure = ChannelRefundState.FAILED, "still_processing"
        event: Event = (
            RefundSucceeded(refund_id)
            if answer_state is ChannelRefundState.SUCCEEDED
            else RefundFailed(refund_id, failure or "refused")
        )
        async with self.d.uow_factory() as uow:
            current = await uow.payments.by_refund(refund_id, lock=True)
            assert current is not None
            current, effects = await self._transition(uow, current, event, now=self._now())
            if answer_state is ChannelRefundState.SUCCEEDED or isinstance(event, RefundFailed):
                await uow.payments.set_refund_retry(refund_id, next_try_at=None, tries=tries)
            await uow.commit()
        await self._after_commit(current, effects)
        final = current.refund(refund_id)
        return final.state if final else None

    def _next_try(self, now: datetime, tries: int) -> datetime | None:
        backoff = self.d.policy.refund_backoff
        if tries > len(backoff):
            return None
        return now + timedelta(seconds=backoff[tries - 1])

    async def submit_due_refunds(self, *, limit: int = 200) -> int:
        async with self.d.uow_factory() as uow:
            due = await uow.payments.refunds_to_submit(now=self._now(), limit=limit)
        for refund_id in due:
            try:
                await self.submit_refund(refund_id)
            except DomainError as exc:
                log.warning("payment_refund_failed", extra={"refund": refund_id, "code": exc.code})
        return len(due)

    async def failed_refunds(self, *, limit: int = 100) -> Sequence[tuple[PaymentOrder, Refund]]:
        async with self.d.uow_factory() as uow:
            rows = await uow.payments.failed_refunds(limit=limit)
            found: list[tuple[PaymentOrder, Refund]] = []
            for order_id, refund_id in rows:
                order = await uow.payments.get(order_id)
                refund = order.refund(refund_id) if order else None
                if order is not None and refund is not None:
                    found.append((order, refund))
        return found

    async def retry_refund(self, staff: str, refund_id: str) -> Refund:
        """An operator sends a failed refund again, with the same refund number."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            order = await uow.payments.by_refund(refund_id, lock=True)
            if order is None:
                raise OrderNotFoundError("no such refund")
            order, effects = await self._transition(uow, order, RefundRetried(refund_id), now=now)
            await uow.payments.set_refund_retry(refund_id, next_try_at=now, tries=0)
            await uow.audit.record(
                AuditEvent(
                    action="payment.refund_retried",
                    outcome=Outcome.SUCCESS,
                    actor=staff,
                    actor_role="operator",
                    object_type="payment_refund",
                    object_id=refund_id,
                ),
                now=now,
            )
            await uow.commit()
        await self._after_commit(order, effects)
        refund = order.refund(refund_id)
        assert refund is not None
        return refund

    async def reconcile_refund(
        self, channel: str, out_trade_no: str, out_refund_no: str
    ) -> tuple[ChannelRefundState, bool]:
        """Ask the channel about one refund of ours, whatever its state here (processing, or failed after the last
        try), and apply a success through the machine (reconciliation found it on the channel's bill). Other
        answers change nothing here: the refund's own retries and the operators' queue deal with them. Returns the
        channel's answer and whether the ledger changed; a success the machine refuses raises its ConflictError."""
        async with self.d.uow_factory() as uow:
            order = await uow.payments.by_out_trade_no(out_trade_no)
        if order is None:
            raise OrderNotFoundError("no attempt with this out_trade_no")
        attempt = order.attempt(out_trade_no)
        if attempt is None or attempt.channel != channel:
            raise ValidationError("attempt of another channel", code="payment.channel_mismatch")
        refund = next((r for r in order.refunds_of(out_trade_no) if r.out_refund_no == out_refund_no), None)
        if refund is None:
            raise NotFoundError("a refund number we never sent", code="payment.refund_not_found")
        answer = await self.channel(channel).query_refund(out_trade_no, out_refund_no)
        if answer.state is not ChannelRefundState.SUCCEEDED or refund.state is RefundState.SUCCEEDED:
            return answer.state, False
        async with self.d.uow_factory() as uow:
            current = await uow.payments.by_refund(refund.id, lock=True)
            assert current is not None
            version = current.version
            current, effects = await self._transition(uow, current, RefundSucceeded(refund.id), now=self._now())
            await uow.payments.set_refund_retry(
                refund.id, next_try_at=None, tries=await uow.payments.refund_tries(refund.id)
            )
            await uow.commit()
        await self._after_commit(current, effects)
        return answer.state, current.version != version

    async def keep_late(self, order_id: str) -> PaymentOrder:
        """The payable kept a late payment."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            order = await uow.payments.get(order_id, lock=True)
            if order is None:
                raise OrderNotFoundError("no such order")
            order, effects = await self._transition(uow, order, KeepLate(), now=now)
            await uow.commit()
        await self._after_commit(order, effects)
        return order

    def require_channels(self) -> None:
        if not self.d.channels:
            raise UnavailableError("no payment channel configured", code="payment.not_configured")
