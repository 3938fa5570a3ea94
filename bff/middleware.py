"""The edge's middleware: request context, authentication, rate limits and idempotency (DESIGN D8)."""

from __future__ import annotations

import hashlib
import re
import time
import urllib.parse
from collections.abc import Awaitable
from typing import Any, cast

import msgspec
import structlog
from litestar import Response
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from bff.deps import BffDeps
from bff.errors import PROBLEM_JSON, problem
from bff.net import client_ip
from domain.kernel.ephemeral import EphemeralStoreUnavailableError
from domain.kernel.errors import DomainError, RateLimitedError
from domain.kernel.idempotency import IdempotencyScope, StoredResponse, validate_key
from domain.kernel.ids import new_id
from domain.kernel.principal import Principal
from domain.kernel.ratelimit import RateLimit

log = structlog.get_logger("bff.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
}
DOCS_CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            try:
                return bytes(value).decode("latin-1")
            except UnicodeDecodeError:
                return None
    return None


def _unreadable(scope: Scope) -> bool:
    """NUL, other C0 controls, or bytes that are not UTF-8, in the path or the query: no route wants them and
    the database refuses them."""
    raw = urllib.parse.unquote_to_bytes(bytes(scope.get("query_string", b"")))
    try:
        query = raw.decode("utf-8")
        path = str(scope.get("path", ""))
        path.encode("utf-8")
    except UnicodeError:
        return True
    return any(ord(ch) < 32 and ch not in "\t" for ch in query + path)


def state(scope: Scope) -> dict[str, Any]:
    return scope.setdefault("state", {})


def principal_of(scope: Scope) -> Principal | None:
    value = state(scope).get("principal")
    return value if isinstance(value, Principal) else None


async def _send_problem(scope: Scope, receive: Receive, send: Send, response: Response[dict[str, Any]]) -> None:
    body = msgspec.json.encode(response.content)
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    headers.append((b"content-type", PROBLEM_JSON.encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    await send(cast(Any, {"type": "http.response.start", "status": response.status_code, "headers": headers}))
    await send(cast(Any, {"type": "http.response.body", "body": body, "more_body": False}))


def security_headers_hook(docs_paths: tuple[str, ...]) -> Any:
    """An app-level before_send hook: every response, routed or not, gets the request id and the headers."""

    async def before_send(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        st = state(scope)
        request_id = st.get("request_id") or st.setdefault("request_id", new_id())
        headers = MutableScopeHeaders.from_message(message)
        headers["X-Request-Id"] = str(request_id)
        for key, value in SECURITY_HEADERS.items():
            if key not in headers:
                headers[key] = value
        if any(str(scope.get("path", "")).startswith(p) for p in docs_paths):
            headers["Content-Security-Policy"] = DOCS_CSP
            headers["Cache-Control"] = "no-cache"

    return before_send


class EdgeMiddleware:
    """Outermost on routed requests: request id, client address, clock sync, access log."""

    def __init__(self, app: ASGIApp, deps: BffDeps) -> None:
        self.app = app
        self.deps = deps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        st = state(scope)
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else new_id()
        st["request_id"] = request_id
        peer = scope.get("client")
        st["client_ip"] = client_ip(
            peer[0] if peer else None, _header(scope, b"x-forwarded-for"), self.deps.config.trusted_proxies
        )
        if _unreadable(scope):
            await _send_problem(
                scope,
                receive,
                send,
                problem(
                    400,
                    code="request.bad_text",
                    message="请求包含无法识别的字符",
                    title="Bad request",
                    detail="the path or query holds a NUL, a control character or invalid UTF-8",
                    request_id=request_id,
                ),
            )
            return
        if self.deps.clock_control is not None:
            await self.deps.clock_control.sync()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            log.info(
                "request",
                method=scope.get("method"),
                route=scope.get("path_template") or "(unrouted)",
                status=status_holder["status"],
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
            structlog.contextvars.unbind_contextvars("request_id")


class AuthMiddleware:
    """Resolves the bearer token into a Principal (or records why not); guards decide what is required."""

    def __init__(self, app: ASGIApp, deps: BffDeps) -> None:
        self.app = app
        self.deps = deps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in (ScopeType.HTTP, ScopeType.WEBSOCKET):
            st = state(scope)
            st["principal"] = None
            authorization = _header(scope, b"authorization")
            if authorization and self.deps.authenticator is not None:
                scheme, _, token = authorization.partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    try:
                        st["principal"] = await self.deps.authenticator.authenticate(token.strip())
                    except DomainError as exc:
                        st["auth_error"] = exc
        await self.app(scope, receive, send)


class RateLimitMiddleware:
    """Per account first, per real client address second, on /api routes."""

    def __init__(self, app: ASGIApp, deps: BffDeps) -> None:
        self.app = app
        self.deps = deps
        cfg = deps.config
        self.account_limit = RateLimit("api-account", cfg.per_account_per_minute, 60)
        self.ip_limit = RateLimit("api-ip", cfg.per_ip_per_minute, 60)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.deps.rate_limiter
        if (
            scope["type"] != ScopeType.HTTP
            or limiter is None
            or not self.deps.config.rate_limit_enabled
            or not scope["path"].startswith("/api/")
        ):
            await self.app(scope, receive, send)
            return
        st = state(scope)
        principal = principal_of(scope)
        checks = [(self.ip_limit, "ip:" + str(st.get("client_ip", "unknown")))]
        if principal is not None:
            checks.insert(0, (self.account_limit, principal.scope_key))
        for limit, key in checks:
            try:
                decision = await limiter.hit(limit, key)
            except EphemeralStoreUnavailableError:
                if limit.fail_closed:
                    raise
                log.warning("rate_limit_store_unavailable", limit=limit.name)
                continue
            if not decision.allowed:
                error = RateLimitedError(f"rate limit {limit.name}", retry_after=decision.retry_after_seconds)
                response = problem(
                    429,
                    code=error.code,
                    message=error.message,
                    title=error.title,
                    detail=error.detail,
                    headers={"Retry-After": str(error.retry_after)},
                    request_id=st.get("request_id"),
                )
                await _send_problem(scope, receive, send, response)
                return
        await self.app(scope, receive, send)


class IdempotencyMiddleware:
    """``Idempotency-Key`` on write routes: records in PostgreSQL scoped to (principal, method, route, key)."""

    def __init__(self, app: ASGIApp, deps: BffDeps) -> None:
        self.app = app
        self.deps = deps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key_header = _header(scope, b"idempotency-key") if scope["type"] == ScopeType.HTTP else None
        if key_header is None or scope.get("method") not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        st = state(scope)
        try:
            key = validate_key(key_header)
        except DomainError as exc:
            await _send_problem(
                scope,
                receive,
                send,
                problem(exc.status, code=exc.code, message=exc.message, title=exc.title, detail=exc.detail),
            )
            return

        body, too_large = await _read_body(receive, self.deps.config.max_body_bytes)
        if too_large:
            await _send_problem(
                scope,
                receive,
                send,
                problem(413, code="request.too_large", message="请求内容过大", title="Content too large"),
            )
            return
        principal = principal_of(scope)
        who = principal.scope_key if principal is not None else "anon:" + str(st.get("client_ip", "unknown"))
        idem_scope = IdempotencyScope(
            principal=who[:80],
            method=str(cast(Any, scope)["method"]),
            route=str(scope.get("path_template") or scope["path"])[:200],
            key=key,
        )
        fingerprint = hashlib.sha256(
            b"\x00".join([idem_scope.method.encode(), scope["path"].encode(), scope.get("query_string", b""), body])
        ).hexdigest()
        cfg = self.deps.config
        store = self.deps.idempotency
        try:
            begun = await store.begin(
                idem_scope,
                fingerprint=fingerprint,
                now=self.deps.clock.now(),
                lease_seconds=cfg.idempotency_lease_seconds,
                retain_seconds=cfg.idempotency_retain_seconds,
            )
        except DomainError as exc:
            retry_after = getattr(exc, "retry_after", None)
            headers = {"Retry-After": str(retry_after)} if retry_after else {}
            await _send_problem(
                scope,
                receive,
                send,
                problem(
                    exc.status,
                    code=exc.code,
                    message=exc.message,
                    title=exc.title,
                    detail=exc.detail,
                    headers=headers,
                    request_id=st.get("request_id"),
                ),
            )
            return
        if not begun.started:
            assert begun.replay is not None
            await _replay(send, begun.replay)
            return

        captured: dict[str, Any] = {"status": 500, "headers": {}, "body": bytearray()}
        sent_body = False

        async def replay_receive() -> Any:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def capture_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = {
                    k.decode("latin-1"): v.decode("latin-1")
                    for k, v in message.get("headers", [])
                    if k.lower() in (b"content-type", b"location")
                }
            elif message["type"] == "http.response.body":
                captured["body"].extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, cast(Receive, replay_receive), capture_send)
        except BaseException:
            await self._settle(store.abandon(idem_scope))
            raise
        if captured["status"] >= 500 or captured["status"] == 429:
            await self._settle(store.abandon(idem_scope))
        else:
            await self._settle(
                store.complete(
                    idem_scope,
                    StoredResponse(
                        status=captured["status"], headers=captured["headers"], body=bytes(captured["body"])
                    ),
                    now=self.deps.clock.now(),
                )
            )

    @staticmethod
    async def _settle(step: Awaitable[None]) -> None:
        """Record the outcome after the answer went out. A failure here (the database busy) must not break the
        connection the client may already reuse: the record's lease ends and a retry is then handled anew."""
        try:
            await step
        except Exception as exc:  # noqa: BLE001 - whatever failed, the answer is out: log it, keep the connection
            log.warning("idempotency_record_not_settled", error_type=type(exc).__name__)


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.extend(cast(bytes, message.get("body", b"")))
        if len(chunks) > limit:
            return b"", True
        if not message.get("more_body", False):
            break
    return bytes(chunks), False


async def _replay(send: Send, stored: StoredResponse) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers.items()]
    headers.append((b"idempotent-replayed", b"true"))
    headers.append((b"content-length", str(len(stored.body)).encode()))
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})
