"""A small HTTP/1.1 keep-alive client on asyncio streams, for the load generator of ``load/storm.py``.

The load generator shares the machine's cores with the app, PostgreSQL and Redis, so it must cost little per
request: requests are pre-built bytes, answers are read with ``readuntil`` and ``readexactly``, and nothing is
parsed that the benchmark does not read. It speaks just enough HTTP/1.1 for the app (``Content-Length`` or
chunked bodies, ``Connection: close``), to loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass


class TransportError(Exception):
    """No complete HTTP answer (refused, reset, closed early, timed out)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    """Lower-case names; only the last value of a repeated header."""
    body: bytes


def build_request(
    method: str, path: str, host: str, headers: Sequence[tuple[str, str]] = (), body: bytes | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers of ``HTTP/1.1 200 OK\\r\\nName: value\\r\\n...\\r\\n\\r\\n``."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise TransportError(f"not an HTTP status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class Connection:
    """One keep-alive connection to ``host:port``; reconnects when the server closed it."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0, stale_after: float = 4.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.stale_after = stale_after
        self._last_used = 0.0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._answered = False
        self.stale_retries = 0
        """Requests sent again because the kept-alive connection had been closed by the server."""

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        return self._reader, self._writer

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def send(self, request: bytes) -> Reply:
        """Send pre-built request bytes, read the whole answer. Raises TransportError (and closes) on failure.

        A kept-alive connection the server closed while it was idle (uvicorn closes them after 5 s) fails on
        the next request before any byte of an answer arrives: that request is sent once more on a new
        connection, as HTTP clients do (the server never read it). Only after ``stale_after`` seconds idle: a
        connection that dies sooner was closed by the server for another reason, and the request may have been
        read, so that failure is reported."""
        for attempt in (1, 2):
            reused = self._reader is not None and time.monotonic() - self._last_used >= self.stale_after
            self._answered = False
            try:
                reply = await asyncio.wait_for(self._exchange(request), self.timeout)
                self._last_used = time.monotonic()
                return reply
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
                await self.close()
                stale = reused and not self._answered and not isinstance(exc, TimeoutError)
                if attempt == 1 and stale:
                    self.stale_retries += 1
                    continue
                raise TransportError(f"{type(exc).__name__}: {exc}") from None
            except TransportError:
                await self.close()
                raise
        raise AssertionError("unreachable")

    async def _exchange(self, request: bytes) -> Reply:
        reader, writer = await self._open()
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        self._answered = True
        status, headers = parse_head(head)
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await reader.read()  # delimited by the end of the connection
            await self.close()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Reply(status, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(chunks)
        chunks.extend(await reader.readexactly(size))
        await reader.readexactly(2)


class Pool:
    """``size`` connections spread round-robin over ``targets`` (host, port); one request per connection at a
    time, so ``size`` bounds the requests in flight. Waiters are served first come, first served."""

    def __init__(self, targets: Sequence[tuple[str, int]], size: int, *, timeout: float = 30.0) -> None:
        if not targets or size < 1:
            raise ValueError("a pool needs targets and a positive size")
        spread = itertools.cycle(targets)
        self.connections = [Connection(*next(spread), timeout=timeout) for _ in range(size)]
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()
        for conn in self.connections:
            self._idle.put_nowait(conn)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        conn = await self._idle.get()
        try:
            yield conn
        finally:
            self._idle.put_nowait(conn)

    async def warm(self) -> None:
        """Open every connection before the clock starts."""
        await asyncio.gather(*(conn._open() for conn in self.connections))

    async def close(self) -> None:
        await asyncio.gather(*(conn.close() for conn in self.connections))
