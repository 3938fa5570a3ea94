"""Starting Celery workers and beat with the composition root's adapters (D10)."""

from __future__ import annotations

import os
from pathlib import Path

from bootstrap.container import build_container
from bootstrap.logs import configure_logging
from bootstrap.settings import Settings
from notifications import runtime as rt
from notifications.runtime import WorkerRuntime


def _celery(settings: Settings) -> object:
    if settings.broker_url is None:
        raise SystemExit("bff worker needs HSP_BROKER__URL or HSP_REDIS__URL")
    container = build_container(settings, role="worker", in_process_tasks=False)

    def factory() -> WorkerRuntime:
        # A fresh container per worker process: engines and clients are never shared across a fork.
        return build_container(settings, role="worker", in_process_tasks=False).runtime

    rt.install_factory(factory)
    return container.celery


def serve_worker_metrics(bind: str) -> None:
    """Serve /metrics for this worker: with ``PROMETHEUS_MULTIPROC_DIR`` set, the sum over its pool processes."""
    from celery.signals import worker_process_shutdown
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

    host, _, port = bind.rpartition(":")
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]

        @worker_process_shutdown.connect(weak=False)
        def _forget(pid: int | None = None, **_: object) -> None:
            multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]

    start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)


def run_worker(settings: Settings, *, concurrency: int = 2, pool: str = "prefork") -> int:
    configure_logging(level=settings.log.level, json=settings.log.json)
    app = _celery(settings)
    if settings.broker.worker_metrics_bind:
        serve_worker_metrics(settings.broker.worker_metrics_bind)
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--queues={settings.broker.task_default_queue}",
        f"--loglevel={settings.log.level}",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)  # type: ignore[attr-defined]
    return 0


def run_beat(settings: Settings) -> int:
    configure_logging(level=settings.log.level, json=settings.log.json)
    app = _celery(settings)
    Path(settings.broker.beat_schedule_path).parent.mkdir(parents=True, exist_ok=True)
    app.start(  # type: ignore[attr-defined]
        ["beat", f"--loglevel={settings.log.level}", f"--schedule={settings.broker.beat_schedule_path}"]
    )
    return 0
