"""``create_app`` (the public listener) and ``create_admin_app`` (the private one). Both receive every
adapter from bootstrap through :class:`BffDeps`; nothing here knows which adapter serves a port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import swagger_ui_bundle
from litestar import Litestar, MediaType, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import NotFoundException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.plugins.prometheus import PrometheusConfig
from litestar.static_files import create_static_files_router

from bff.admin.booking_bans import booking_bans_admin_router
from bff.admin.hospitals import hospitals_admin_router
from bff.admin.notifications import notifications_admin_router
from bff.admin.payments import payments_admin_router
from bff.admin.persons import persons_admin_router
from bff.admin.reconciliation import reconciliation_admin_router
from bff.admin.staff import staff_admin_router
from bff.auth.routes import AUTH_HANDLERS
from bff.callbacks.his import his_push
from bff.callbacks.payments import alipay_notification, wechat_pay_notification
from bff.deps import BffDeps
from bff.doctor.schedule import my_schedule, stop_session
from bff.errors import EXCEPTION_HANDLERS
from bff.meta import server_time
from bff.middleware import (
    AuthMiddleware,
    EdgeMiddleware,
    IdempotencyMiddleware,
    RateLimitMiddleware,
    security_headers_hook,
)
from bff.ops.routes import OPS_HANDLERS
from bff.patient.bills import bills_router
from bff.patient.booking_visits import booking_visits_router
from bff.patient.bookings import bookings_router
from bff.patient.catalogue import catalogue_router
from bff.patient.notifications import notifications_router
from bff.patient.patients import patients_router
from bff.patient.payments import payments_router
from bff.patient.waitlist import waitlist_router

TAGS = [
    Tag(name="meta", description="公共信息 Public facts for every front end"),
    Tag(name="auth", description="登录与会话 Logins and sessions"),
    Tag(name="patient", description="居民端 Residents (WeChat and Alipay mini-programs, patient app)"),
    Tag(name="doctor", description="医生端 Doctor app"),
    Tag(name="pharmacist", description="药师端 Pharmacist review"),
    Tag(name="callbacks", description="外部回调 Inbound notifications from payment channels and HIS"),
    Tag(name="admin", description="运营管理 Operators (admin listener only)"),
    Tag(name="ops", description="运维 Health and readiness (admin listener only)"),
]
DOCS_PATH = "/docs"


def _deny_public_docs(*_: Any) -> None:
    raise NotFoundException()


def _openapi_config(deps: BffDeps) -> OpenAPIConfig:
    """Schema generation only: Litestar's own schema routes answer 404; the admin listener serves the docs."""
    return OpenAPIConfig(
        title="HSP citizen health-services BFF",
        version=deps.config.version,
        description=(
            "居民健康服务平台接口。Errors are RFC 9457 problem+json with a stable `code` and a Chinese `message`. "
            "Write routes accept `Idempotency-Key`. JSON is camelCase; money is integer fen; instants are UTC."
        ),
        tags=TAGS,
        use_handler_docstrings=True,
        create_examples=False,
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT", description="Access token")
            }
        ),
        openapi_router=Router(path="/_openapi", route_handlers=[], guards=[_deny_public_docs]),
        path="/_openapi",
    )


def _middleware(deps: BffDeps) -> list[DefineMiddleware | Any]:
    prometheus = PrometheusConfig(
        app_name="hsp",
        prefix="hsp_http",
        group_path=True,
        exclude=["/metrics", "/healthz", "/readyz"],
    )
    return [
        DefineMiddleware(EdgeMiddleware, deps=deps),
        prometheus.middleware,
        DefineMiddleware(AuthMiddleware, deps=deps),
        DefineMiddleware(RateLimitMiddleware, deps=deps),
        DefineMiddleware(IdempotencyMiddleware, deps=deps),
    ]


def _lifespan_hooks(deps: BffDeps) -> tuple[list[Any], list[Any]]:
    return list(deps.on_startup), list(deps.on_shutdown)


def create_app(deps: BffDeps, *, debug: bool = False) -> Litestar:
    """The public listener: resident and staff APIs, callbacks and (demo, test) the sandboxes."""
    startup, shutdown = _lifespan_hooks(deps)
    return Litestar(
        route_handlers=[
            server_time,
            *AUTH_HANDLERS,
            catalogue_router,
            notifications_router,
            patients_router,
            payments_router,
            bills_router,
            bookings_router,
            waitlist_router,
            booking_visits_router,
            my_schedule,
            stop_session,
            his_push,
            wechat_pay_notification,
            alipay_notification,
            *deps.public_handlers,
        ],
        state=State({"deps": deps}),
        dependencies={"deps": Provide(lambda: deps, sync_to_thread=False)},
        middleware=_middleware(deps),
        before_send=[security_headers_hook((DOCS_PATH,))],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=_openapi_config(deps),
        request_max_body_size=deps.config.max_body_bytes,
        on_startup=startup,
        on_shutdown=shutdown,
        debug=debug,
    )


def create_admin_app(deps: BffDeps, public_app: Litestar) -> Litestar:
    """The admin listener (a private address): health, readiness, metrics, operators' routes and the docs,
    which describe the public listener's routes and the operators' routes together."""

    @get(f"{DOCS_PATH}/openapi.json", include_in_schema=False, media_type=MediaType.JSON, sync_to_thread=False)
    def openapi_json() -> dict[str, Any]:
        return merged_openapi(public_app, admin_app)

    @get(DOCS_PATH, include_in_schema=False, media_type=MediaType.HTML, sync_to_thread=False)
    def docs_page() -> str:
        if not deps.config.docs:
            raise NotFoundException()
        return _DOCS_HTML

    @get(f"{DOCS_PATH}/init.js", include_in_schema=False, media_type="text/javascript", sync_to_thread=False)
    def docs_init() -> str:
        if not deps.config.docs:
            raise NotFoundException()
        return _DOCS_INIT_JS

    assets = create_static_files_router(
        path=f"{DOCS_PATH}/assets",
        directories=[Path(swagger_ui_bundle.swagger_ui_path)],
        include_in_schema=False,
        guards=[_docs_enabled(deps)],
    )
    handlers: list[Any] = [
        *OPS_HANDLERS,
        staff_admin_router,
        hospitals_admin_router,
        notifications_admin_router,
        persons_admin_router,
        payments_admin_router,
        reconciliation_admin_router,
        booking_bans_admin_router,
        *deps.admin_handlers,
        openapi_json,
        docs_page,
        docs_init,
        assets,
    ]
    admin_app = Litestar(
        route_handlers=handlers,
        state=State({"deps": deps}),
        middleware=[DefineMiddleware(EdgeMiddleware, deps=deps), DefineMiddleware(AuthMiddleware, deps=deps)],
        before_send=[security_headers_hook((DOCS_PATH,))],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=_openapi_config(deps),
        request_max_body_size=deps.config.max_body_bytes,
    )
    return admin_app


def merged_openapi(public_app: Litestar, admin_app: Litestar) -> dict[str, Any]:
    """One document: the public routes, plus the admin listener's documented routes (ops, admin)."""
    document = public_app.openapi_schema.to_schema()
    admin = admin_app.openapi_schema.to_schema()
    paths = {p: item for p, item in document.get("paths", {}).items() if not p.startswith("/_openapi")}
    for path, item in admin.get("paths", {}).items():
        if not path.startswith(("/_openapi", DOCS_PATH)):
            paths[path] = item
    document["paths"] = dict(sorted(paths.items()))
    schemas = dict(document.get("components", {}).get("schemas", {}))
    schemas.update(admin.get("components", {}).get("schemas", {}))
    document.setdefault("components", {})["schemas"] = dict(sorted(schemas.items()))
    return document


def _docs_enabled(deps: BffDeps) -> Any:
    def guard(*_: Any) -> None:
        if not deps.config.docs:
            raise NotFoundException()

    return guard


# Swagger UI is served from the installed package: the docs work without reaching any CDN.
_DOCS_HTML = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>HSP BFF API 接口文档</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
<noscript>The API description is at <a href="/docs/openapi.json">/docs/openapi.json</a>.</noscript>
</body></html>
"""
_DOCS_INIT_JS = 'window.ui = SwaggerUIBundle({url: "/docs/openapi.json", dom_id: "#ui", deepLinking: true});\n'
