"""Task and topic registries. A task is an async function of the worker runtime and JSON-safe keyword
arguments; it must be idempotent. Topic handlers act on relayed outbox messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from notifications.runtime import WorkerRuntime

TaskFn = Callable[..., Awaitable[Any]]
TopicHandler = Callable[["WorkerRuntime", Mapping[str, Any], str], Awaitable[None]]


@dataclass
class Registry:
    tasks: dict[str, TaskFn] = field(default_factory=dict)
    topics: dict[str, list[TopicHandler]] = field(default_factory=dict)

    def task(self, name: str) -> Callable[[TaskFn], TaskFn]:
        def register(fn: TaskFn) -> TaskFn:
            if name in self.tasks:
                raise ValueError(f"task {name} registered twice")
            self.tasks[name] = fn
            return fn

        return register

    def on_topic(self, topic: str) -> Callable[[TopicHandler], TopicHandler]:
        def register(fn: TopicHandler) -> TopicHandler:
            self.topics.setdefault(topic, []).append(fn)
            return fn

        return register


registry = Registry()
