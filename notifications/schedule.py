"""The beat schedule, shared by Celery beat and the demo's in-process beat."""

from __future__ import annotations

from notifications.dispatch import ScheduleEntry

SCHEDULE: list[ScheduleEntry] = [
    ScheduleEntry("outbox.relay", 2.0, {}),
    ScheduleEntry("audit.seal", 60.0, {}),
    ScheduleEntry("idempotency.purge", 3600.0, {}),
    ScheduleEntry("catalogue.sync", 300.0, {}),
    ScheduleEntry("notification.sweep", 30.0, {}),
    ScheduleEntry("notification.scheduled", 60.0, {}),
    ScheduleEntry("payment.sweep", 30.0, {}),
    # Daily reconciliation at 10:30 Beijing time (WeChat Pay's bills are ready from 10:00 the next day): the
    # beat only knows periods, so the task is called every 15 minutes and reconciles a day only once it is
    # 10:30 and that day has no completed report yet (a bill not ready is tried again 15 minutes later).
    ScheduleEntry("payment.reconcile", 900.0, {"not_before": "10:30"}),
    ScheduleEntry("billing.sweep", 60.0, {}),
    ScheduleEntry("booking.sweep", 30.0, {}),
    ScheduleEntry("booking.rebuild_gate", 60.0, {}),
    ScheduleEntry("booking.waitlist_sweep", 30.0, {}),
    ScheduleEntry("booking.no_shows", 300.0, {}),
    ScheduleEntry("catalogue.sync", 86400.0, {"full": True}),
]
