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
    ScheduleEntry("catalogue.sync", 86400.0, {"full": True}),
]
