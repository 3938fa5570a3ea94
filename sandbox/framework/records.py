"""Recording of what reached a simulator and what it sent or delivered, in bounded ring buffers."""

from __future__ import annotations

import base64
import itertools
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec

from domain.kernel.clock import Clock

REQUESTS = "requests"
"""The stream of inbound HTTP requests, filled by the simulator middleware."""
CALLBACKS = "callbacks"
"""The stream of outbound callback attempts, filled by the callback dispatcher."""

BodyEncoding = Literal["text", "base64"]
CallbackOutcome = Literal["delivered", "retrying", "gave-up", "dropped"]


def encode_body(body: bytes) -> tuple[str, BodyEncoding]:
    """The body as text when it is UTF-8, otherwise as base64."""
    try:
        return body.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


class RequestRecord(msgspec.Struct, rename="camel", tag="request", kw_only=True):
    """One inbound request; ``status`` and ``elapsedMs`` are filled in when the response is sent."""

    seq: int
    at: datetime
    method: str
    path: str
    """The vendor's path, relative to the simulator's mount (``/sandbox/echo/echo`` is ``/echo``)."""
    query: str
    headers: dict[str, str]
    body: str
    body_encoding: BodyEncoding
    faults: list[str] = msgspec.field(default_factory=list)
    status: int | None = None
    elapsed_ms: float | None = None


class MessageRecord(msgspec.Struct, rename="camel", tag="message", kw_only=True):
    """Something a simulator delivered on its own terms (an SMS in an inbox, a push message ...)."""

    seq: int
    at: datetime
    data: Any


class CallbackRecord(msgspec.Struct, rename="camel", tag="callback", kw_only=True):
    """One attempt (or the drop) of an outbound callback."""

    seq: int
    at: datetime
    callback_id: str
    copy: int
    attempt: int
    method: str
    url: str
    body: str
    body_encoding: BodyEncoding
    outcome: CallbackOutcome
    status: int | None = None
    error: str | None = None
    response_body: str | None = None
    next_due: datetime | None = None


Record = RequestRecord | MessageRecord | CallbackRecord


class Recorder:
    """Per-simulator recorder: one ring buffer of ``capacity`` entries per named stream."""

    def __init__(self, clock: Clock, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._clock = clock
        self._capacity = capacity
        self._streams: dict[str, deque[Record]] = {}
        self._seq = itertools.count(1)

    def _append(self, stream: str, record: Record) -> None:
        self._streams.setdefault(stream, deque(maxlen=self._capacity)).append(record)

    def next_seq(self) -> int:
        return next(self._seq)

    def now(self) -> datetime:
        return self._clock.now()

    def record_request(
        self,
        *,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        faults: list[str],
    ) -> RequestRecord:
        text, encoding = encode_body(body)
        record = RequestRecord(
            seq=self.next_seq(),
            at=self.now(),
            method=method,
            path=path,
            query=query,
            headers=dict(headers),
            body=text,
            body_encoding=encoding,
            faults=faults,
        )
        self._append(REQUESTS, record)
        return record

    def record_message(self, stream: str, data: Any) -> MessageRecord:
        """Record a delivered message (anything msgspec can encode) under ``stream``."""
        if stream in (REQUESTS, CALLBACKS):
            raise ValueError(f"stream {stream!r} is reserved")
        record = MessageRecord(seq=self.next_seq(), at=self.now(), data=data)
        self._append(stream, record)
        return record

    def record_callback(self, record: CallbackRecord) -> None:
        self._append(CALLBACKS, record)

    def entries(self, stream: str = REQUESTS, limit: int | None = None) -> list[Record]:
        """The stream's entries, oldest first; with ``limit``, only the newest ``limit`` of them."""
        items = list(self._streams.get(stream, ()))
        if limit is not None:
            items = items[-limit:] if limit > 0 else []
        return items

    def streams(self) -> list[str]:
        return sorted(self._streams)

    def clear(self, stream: str | None = None) -> None:
        if stream is None:
            self._streams.clear()
        else:
            self._streams.pop(stream, None)
