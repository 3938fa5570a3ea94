"""The kernel's tasks: outbox relay and dispatch, idempotency-record purge. Features register theirs."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import structlog

from domain.kernel.audit_chain import seal_audit
from domain.kernel.errors import DomainError
from domain.kernel.relay import relay_outbox
from domain.patient.use_cases import CARD_USE_TOPIC
from notifications.metrics import DELIVERIES, OUTBOX_LAG, OUTBOX_RELAYED, TASK_RUNS, TASK_SECONDS
from notifications.registry import registry
from notifications.runtime import WorkerRuntime

log = structlog.get_logger("worker")


async def run_task(runtime: WorkerRuntime, name: str, kwargs: Mapping[str, Any]) -> Any:
    """Run one registered task with metrics and a log line (no arguments logged: they may identify people)."""
    fn = registry.tasks.get(name)
    if fn is None:
        TASK_RUNS.labels(task=name, outcome="unknown").inc()
        raise LookupError(f"no task named {name}")
    if runtime.clock_control is not None:
        await runtime.clock_control.sync()
    await _load_his_adapters(runtime)
    started = time.perf_counter()
    try:
        try:
            result = await fn(runtime, **kwargs)
        except DomainError as exc:
            # A hospital registered since this process loaded its adapters: load them and run the task again
            # (every task is idempotent).
            if exc.code != "his.not_configured" or not await _load_his_adapters(runtime):
                raise
            result = await fn(runtime, **kwargs)
    except Exception as exc:
        TASK_RUNS.labels(task=name, outcome="error").inc()
        log.warning("task_failed", task=name, error_type=type(exc).__name__)
        raise
    TASK_RUNS.labels(task=name, outcome="ok").inc()
    TASK_SECONDS.labels(task=name).observe(time.perf_counter() - started)
    return result


async def _load_his_adapters(runtime: WorkerRuntime) -> bool:
    """Before a worker process's first task (and the first after a hospital was missing): the HIS adapters of the
    registered hospitals. The web process loads them at start; a worker process starts with none, and without
    this only its first ``catalogue.sync`` (every few minutes) loaded them: settling a paid bill, or any other
    HIS call of a task, failed with ``his.not_configured`` until then."""
    gateway = runtime.services.get("his_gateway")
    catalogue = runtime.services.get("catalogue")
    if gateway is not None and catalogue is not None and not getattr(gateway, "loaded", True):
        await gateway.reload(catalogue)
        return True
    return False


@registry.task("outbox.relay")
async def outbox_relay(runtime: WorkerRuntime, batch_size: int = 200, max_batches: int = 20) -> int:
    """Relay until the outbox is empty or ``max_batches`` batches went out."""
    total = 0
    for _ in range(max_batches):
        count = await relay_outbox(runtime.uow_factory, runtime.dispatcher, runtime.clock.now(), batch_size=batch_size)
        total += count
        if count < batch_size:
            break
    OUTBOX_RELAYED.inc(total)
    async with runtime.uow_factory() as uow:
        oldest = await uow.outbox.oldest_pending_at()
    OUTBOX_LAG.set(0 if oldest is None else max(0.0, (runtime.clock.now() - oldest).total_seconds()))
    return total


@registry.task("outbox.dispatch")
async def outbox_dispatch(
    runtime: WorkerRuntime, message_id: str, topic: str, payload: Mapping[str, Any], key: str | None = None
) -> int:
    """Hand one relayed message to every handler of its topic. Handlers deduplicate on ``message_id``."""
    handlers = registry.topics.get(topic, [])
    if not handlers:
        log.info("outbox_topic_without_handler", topic=topic, message_id=message_id)
    for handler in handlers:
        await handler(runtime, payload, message_id)
    return len(handlers)


@registry.task("idempotency.purge")
async def idempotency_purge(runtime: WorkerRuntime) -> int:
    if runtime.idempotency_purge is None:
        return 0
    return int(await runtime.idempotency_purge(now=runtime.clock.now()))


@registry.task("audit.seal")
async def audit_seal(runtime: WorkerRuntime, batch: int = 1000) -> int:
    """Chain committed audit records with the suite's hash (DESIGN D13). One sealer at a time."""
    return await seal_audit(
        runtime.uow_factory,
        runtime.digest,
        now=runtime.clock.now(),
        grace_seconds=runtime.audit_grace_seconds,
        batch=batch,
    )


@registry.task("catalogue.sync")
async def catalogue_sync(runtime: WorkerRuntime, hospital_code: str | None = None, full: bool = False) -> int:
    """Sync every active hospital (or one). One hospital that is down does not stop the others."""
    from domain.catalogue.use_cases import CatalogueService
    from domain.kernel.errors import DomainError

    service: CatalogueService | None = runtime.services.get("catalogue")
    if service is None:
        return 0
    gateway = runtime.services.get("his_gateway")
    if gateway is not None:
        await gateway.reload(service)  # hospitals added or changed since this process started
    codes = [hospital_code] if hospital_code else [h.code for h in await service.hospitals(limit=1000)]
    synced = 0
    for code in codes:
        try:
            await service.sync_hospital(code, full=full)
            synced += 1
        except DomainError as exc:
            log.warning("catalogue_sync_failed", hospital=code, error_code=exc.code)
    return synced


@registry.task("catalogue.refresh_sessions")
async def catalogue_refresh_sessions(runtime: WorkerRuntime, hospital_code: str, session_ids: list[str]) -> int:
    from domain.catalogue.use_cases import CatalogueService

    service: CatalogueService | None = runtime.services.get("catalogue")
    if service is None:
        return 0
    gateway = runtime.services.get("his_gateway")
    if gateway is not None:
        await gateway.reload(service, [hospital_code])
    report = await service.refresh_sessions(hospital_code, session_ids)
    return report.sessions_seen


def _notifications(runtime: WorkerRuntime) -> Any:
    return runtime.services.get("notifications")


@registry.task("notification.deliver")
async def notification_deliver(runtime: WorkerRuntime, delivery_id: int) -> str | None:
    """Claim, send and settle one delivery (safe to run twice: the claim lets one run send)."""
    service = _notifications(runtime)
    if service is None:
        return None
    state = await service.deliver(delivery_id)
    if state is None:
        return None
    channel = await service.channel_of(delivery_id)
    DELIVERIES.labels(channel=channel or "unknown", outcome=state.value).inc()
    waitlist = runtime.services.get("waitlist")
    if waitlist is not None and state.value == "sent":
        # A waitlist offer's hold time counts from its delivery (the waitlist sweep catches a missed call).
        try:
            await waitlist.on_delivered(delivery_id)
        except DomainError as exc:
            log.warning("waitlist_delivery_not_recorded", error_code=exc.code)
    return str(state.value)


@registry.task("notification.sweep")
async def notification_sweep(runtime: WorkerRuntime) -> int:
    """Queue due retries, deliveries deferred past quiet hours, and any whose task was lost."""
    service = _notifications(runtime)
    return 0 if service is None else int(await service.sweep())


def _register_template_topics() -> None:
    from domain.notification.templates import REGISTRY

    for event in REGISTRY.events():

        async def handler(
            runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str, _event: str = event
        ) -> None:
            service = _notifications(runtime)
            if service is not None:
                await service.on_event(_event, payload, message_id)

        registry.on_topic(event)(handler)


_register_template_topics()


@registry.task("notification.scheduled")
async def notification_scheduled(runtime: WorkerRuntime) -> int:
    """Send the reminders that fell due (within the catch-up window)."""
    service = _notifications(runtime)
    if service is None:
        return 0
    report = await service.run_due()
    return int(report.sent)


@registry.on_topic(CARD_USE_TOPIC)
async def healthcard_used(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    """Report one e-health card use to the card platform (once per outbox message)."""
    service = runtime.services.get("patients")
    if service is None:
        return
    await service.report_card_use(
        str(payload["accountId"]),
        str(payload["personId"]),
        str(payload["hospitalCode"]),
        str(payload["scene"]),
        key=message_id,
    )


def _payments(runtime: WorkerRuntime) -> Any:
    return runtime.services.get("payments")


@registry.task("payment.submit_refund")
async def payment_submit_refund(runtime: WorkerRuntime, refund_id: str) -> str | None:
    """Send one refund to its channel with its own refund number (safe to repeat)."""
    service = _payments(runtime)
    if service is None:
        return None
    state = await service.submit_refund(refund_id)
    return None if state is None else str(state.value)


@registry.task("payment.sweep")
async def payment_sweep(runtime: WorkerRuntime) -> int:
    """Close expired unpaid orders (at the channel first), query orders whose notification is missing, and
    retry refunds that are due."""
    service = _payments(runtime)
    if service is None:
        return 0
    closed = await service.expire_due()
    found = await service.query_pending()
    retried = await service.submit_due_refunds()
    return int(closed + found + retried)


def _reconciliation(runtime: WorkerRuntime) -> Any:
    """The reconciliation service: wired by bootstrap when it is, else built on the payment service and the worker's
    unit of work (the persistence unit of work implements every feature's protocol)."""
    from collections.abc import Callable
    from typing import cast

    from domain.payment.reconciliation_service import ReconciliationService, ReconciliationUnitOfWork

    service = runtime.services.get("reconciliation")
    payments = _payments(runtime)
    if service is None and payments is not None:
        service = ReconciliationService(payments, cast(Callable[[], ReconciliationUnitOfWork], runtime.uow_factory))
    return service


@registry.task("payment.reconcile")
async def payment_reconcile(
    runtime: WorkerRuntime,
    day: str | None = None,
    channels: list[str] | None = None,
    not_before: str = "10:30",
    lookback_days: int = 2,
) -> dict[str, str]:
    """Daily reconciliation (对账) of each configured channel, each on its own (one failing does not stop the
    others). Without ``day``: the days whose bills are ready (yesterday, Beijing, once it is ``not_before``
    there; WeChat Pay's bills are ready from 10:00) that have no completed report yet, so that the beat may call
    it often and a bill not ready yet is tried again. With ``day`` (YYYY-MM-DD): that day again, replacing its
    reports."""
    from datetime import date
    from datetime import time as clock_time

    service = _reconciliation(runtime)
    if service is None:
        return {}
    if day is not None:
        return dict(await service.reconcile_day(date.fromisoformat(day), channels))
    return dict(
        await service.reconcile_due(not_before=clock_time.fromisoformat(not_before), lookback_days=lookback_days)
    )


def _register_bill_payment_topics() -> None:
    """Outpatient bills act on their payment orders' outcomes (other payables have their own handlers)."""
    for what in ("paid", "paid_late", "closed", "refunded", "refund_failed"):

        async def handler(
            runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str, _what: str = what
        ) -> None:
            service = runtime.services.get("billing")
            if service is not None:
                await service.on_payment_event(_what, payload)

        registry.on_topic(f"payment.{what}")(handler)


_register_bill_payment_topics()


@registry.task("billing.sweep")
async def billing_sweep(runtime: WorkerRuntime) -> int:
    """Settle (or refund) paid bills whose outbox handler could not finish (the HIS was down)."""
    service = runtime.services.get("billing")
    return 0 if service is None else int(await service.settle_due())


# --- bookings ----------------------------------------------------------------------------------------------------


def _bookings(runtime: WorkerRuntime) -> Any:
    return runtime.services.get("bookings")


def _register_booking_topics() -> None:
    """Bookings act on their payment orders' outcomes (each payable ignores the others' orders)."""
    for what in ("paid", "paid_late", "closed"):

        async def handler(
            runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str, _what: str = what
        ) -> None:
            service = _bookings(runtime)
            if service is not None:
                await service.on_payment_event(_what, payload)

        registry.on_topic(f"payment.{what}")(handler)


_register_booking_topics()


@registry.on_topic("booking.confirm")
async def booking_confirm(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    service = _bookings(runtime)
    if service is not None:
        await service.confirm(str(payload["bookingId"]))


@registry.on_topic("booking.close_order")
async def booking_close_order(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    service = _bookings(runtime)
    if service is not None:
        await service.close_order(str(payload["orderId"]))


@registry.on_topic("booking.refund")
async def booking_refund(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    service = _bookings(runtime)
    if service is not None:
        await service.refund(str(payload["orderId"]), int(payload["amountFen"]), str(payload["reason"]))


@registry.on_topic("booking.keep_late")
async def booking_keep_late(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    service = _bookings(runtime)
    if service is not None:
        await service.keep_late(str(payload["orderId"]))


@registry.on_topic("booking.his_cancel")
async def booking_his_cancel(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    service = _bookings(runtime)
    if service is not None:
        await service.cancel_at_his(
            str(payload["hospitalCode"]), str(payload["registrationId"]), str(payload["bookingId"])
        )


@registry.on_topic("booking.his_lock")
async def booking_his_lock(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    service = _bookings(runtime)
    if service is not None:
        await service.lock_at_his(str(payload["bookingId"]))


@registry.on_topic("booking.his_unlock")
async def booking_his_unlock(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    service = _bookings(runtime)
    if service is not None:
        await service.unlock_at_his(str(payload["hospitalCode"]), str(payload["lockId"]))


@registry.on_topic("catalogue.session_stopped")
async def booking_session_stopped(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    """停诊 (the HIS sync or the doctor app): every upcoming booking of the session is stopped, refunded and told
    (domain/booking/stops.py); a second delivery changes nothing."""
    from domain.booking.stops import on_session_stopped

    service = _bookings(runtime)
    if service is not None:
        await on_session_stopped(service, payload)


@registry.task("booking.sweep")
async def booking_sweep(runtime: WorkerRuntime) -> dict[str, int]:
    """Expire unpaid holds (closing their orders at the channel first) and confirm paid bookings again."""
    service = _bookings(runtime)
    return {} if service is None else dict(await service.sweep())


@registry.task("booking.rebuild_gate")
async def booking_rebuild_gate(runtime: WorkerRuntime) -> int:
    """The gate is a cache of PostgreSQL's counts: rebuilt periodically (and on start)."""
    service = _bookings(runtime)
    return 0 if service is None else int(await service.rebuild_gate())


# --- bookings: rescheduling, arrival, no-shows (domain/booking/visits.py) -----------------------------------------


def _visits(runtime: WorkerRuntime) -> Any:
    from domain.booking.visits import VisitService

    service = _bookings(runtime)
    return None if service is None else VisitService(service)


@registry.on_topic("booking.his_move")
async def booking_his_move(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    """A reschedule at the HIS: confirm on the new slot, then cancel the old registration (idempotent keys)."""
    visits = _visits(runtime)
    if visits is not None:
        await visits.move_at_his(
            str(payload["bookingId"]), str(payload["registrationId"]), str(payload["toSlotId"]), int(payload["move"])
        )


@registry.on_topic("booking.his_check_in")
async def booking_his_check_in(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    visits = _visits(runtime)
    if visits is not None:
        await visits.check_in_at_his(
            str(payload["bookingId"]), str(payload["hospitalCode"]), str(payload["registrationId"])
        )


@registry.task("booking.no_shows")
async def booking_no_shows(runtime: WorkerRuntime, limit: int = 200) -> dict[str, int]:
    """Confirmed bookings whose check-in window closed become no-shows (APT-007), one at a time."""
    visits = _visits(runtime)
    return {} if visits is None else dict(await visits.mark_no_shows(limit=limit))


# --- bookings: the waitlist (domain/booking/waitlist_service.py) ----------------------------------------------------


def _waitlist(runtime: WorkerRuntime) -> Any:
    return runtime.services.get("waitlist")


@registry.on_topic("booking.waitlist_offer")
async def booking_waitlist_offer(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    """A freed number held for a session's line: offered to the first person in line who may have it, or given
    back to the pool (a second delivery finds the number handled)."""
    service = _waitlist(runtime)
    if service is not None:
        await service.offer_number(str(payload["numberId"]))


@registry.on_topic("catalogue.session_stopped")
async def booking_waitlist_session_stopped(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    """停诊: the session's line ends and the numbers offered from it go back (a second delivery changes nothing)."""
    service = _waitlist(runtime)
    if service is not None:
        await service.close_session(str(payload["hospitalCode"]), str(payload["sessionId"]))


@registry.task("booking.waitlist_sweep")
async def booking_waitlist_sweep(runtime: WorkerRuntime) -> dict[str, int]:
    """Record offers' deliveries, lapse offers whose time passed (the number passes on), close lines of sessions
    stopped or over, and offer numbers left free in sessions with a line."""
    service = _waitlist(runtime)
    return {} if service is None else dict(await service.sweep())
