"""The task-runner port: use cases enqueue background work by task name with JSON-safe arguments (D10).

Celery serves it in production; the demo runs tasks in process on the app's loop. Tasks take ids and are
idempotent: running one twice must have the effect of running it once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class TaskRunner(Protocol):
    async def enqueue(
        self,
        task: str,
        kwargs: Mapping[str, Any],
        *,
        countdown_seconds: float | None = None,
    ) -> None: ...
