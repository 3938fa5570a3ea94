"""structlog configuration: JSON lines with request ids; every event scrubbed of personal data."""

from __future__ import annotations

import io
import logging
import sys
from typing import Any

import structlog

from domain.privacy.scrub import scrub_event


def _scrub(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return scrub_event(event_dict)


def configure_logging(*, level: str = "INFO", json: bool = True) -> None:
    # One event per line, written when it happens (stdout to a file or a pipe is block-buffered otherwise).
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _scrub,
    ]
    renderer: Any = structlog.processors.JSONRenderer(ensure_ascii=False) if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=getattr(logging, level), stream=sys.stdout, format="%(levelname)s %(name)s %(message)s")
    for noisy in ("httpx", "httpcore", "uvicorn.access", "aiobotocore", "botocore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
