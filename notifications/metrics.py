"""Worker metrics: task outcomes and outbox lag (Prometheus)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TASK_RUNS = Counter("hsp_task_runs_total", "Background task runs by task and outcome", ["task", "outcome"])
TASK_SECONDS = Histogram("hsp_task_seconds", "Background task duration", ["task"])
OUTBOX_LAG = Gauge("hsp_outbox_lag_seconds", "Age of the oldest unrelayed outbox message (0 when empty)")
OUTBOX_RELAYED = Counter("hsp_outbox_relayed_total", "Outbox messages relayed")
DELIVERIES = Counter(
    "hsp_notification_deliveries_total",
    "Notification deliveries settled, by channel and outcome",
    ["channel", "outcome"],
)
