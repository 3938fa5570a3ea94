"""The ``bff`` command line: serve, worker, beat, demo, migrate, openapi, sandbox, admin."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bootstrap.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent
OPENAPI_PATH = ROOT / "openapi" / "openapi.json"


def _settings(overrides: dict[str, str] | None = None, *, default_env: str = "prod") -> Settings:
    env = dict(os.environ)
    env.setdefault("HSP_ENV", default_env)
    try:
        return load_settings(env, dotenv=Path(".env"), overrides=overrides)
    except SettingsError as exc:
        print(f"bff: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_migrate(args: argparse.Namespace) -> int:
    from bootstrap.container import owner_database_url
    from bootstrap.migrate import downgrade, upgrade

    settings = _settings(default_env="prod")
    url = owner_database_url(settings)
    if args.downgrade:
        downgrade(url, app_role=settings.db.app_role, revision=args.downgrade)
    else:
        upgrade(url, app_role=settings.db.app_role, revision=args.revision)
    print("migrations: done")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bootstrap.container import build_apps, build_container
    from bootstrap.logs import configure_logging
    from bootstrap.server import serve

    settings = _settings(default_env="prod")
    configure_logging(level=settings.log.level, json=settings.log.json)
    container = build_container(settings)
    public, admin = build_apps(container)
    asyncio.run(serve(public, admin, bind=settings.http.bind, admin_bind=settings.http.admin_bind))
    return 0


def _demo_overrides(args: argparse.Namespace) -> dict[str, str]:
    data = Path(args.data_dir)
    return {
        "HSP_ENV": "demo",
        "HSP_CLOCK__MODE": "offset",
        "HSP_SANDBOX__MOUNT": "true",
        "HSP_CRYPTO__DEMO_KEYS": "true",
        "HSP_DEMO__DATA_DIR": str(data),
        "HSP_BLOBS__ROOT": str(data / "blobs"),
        "HSP_HTTP__BIND": f"127.0.0.1:{args.port}",
        "HSP_HTTP__ADMIN_BIND": f"127.0.0.1:{args.admin_port}",
        "HSP_HTTP__PUBLIC_BASE_URL": f"http://127.0.0.1:{args.port}",
        "HSP_HTTP__DOCS": "true",
        "HSP_LOG__JSON": "false",
    }


def cmd_demo(args: argparse.Namespace) -> int:
    from bootstrap.container import build_apps, build_container, database_url
    from bootstrap.logs import configure_logging
    from bootstrap.migrate import upgrade
    from bootstrap.server import serve

    for name in [n for n in os.environ if n.startswith(("HSP_DB__", "HSP_REDIS__", "HSP_BROKER__"))]:
        if not args.keep_services:
            os.environ.pop(name)
    settings = _settings(_demo_overrides(args), default_env="demo")
    configure_logging(level="WARNING" if args.quiet else settings.log.level, json=settings.log.json)
    upgrade(database_url(settings), app_role=settings.db.app_role)
    container = build_container(settings)
    public, admin = build_apps(container)
    base, admin_base = f"http://127.0.0.1:{args.port}", f"http://127.0.0.1:{args.admin_port}"

    def started() -> None:
        print(
            "\n".join(
                [
                    "",
                    "HSP BFF demo is running (embedded SQLite, in-process tasks, sandboxes mounted).",
                    f"  API docs:   {admin_base}/docs   (description: {admin_base}/docs/openapi.json)",
                    f"  Health:     {admin_base}/healthz  {admin_base}/readyz",
                    f"  Public API: {base}/api/v1/...",
                    f"  Sandboxes:  {base}/sandbox/...",
                    f"Try:  curl -s {base}/api/v1/meta/time",
                    "Stop with Ctrl-C.",
                    "",
                ]
            ),
            flush=True,
        )

    asyncio.run(serve(public, admin, bind=settings.http.bind, admin_bind=settings.http.admin_bind, on_started=started))
    return 0


def build_openapi_document() -> dict[str, object]:
    """The OpenAPI document of a production app (no sandbox routes)."""
    from bff.app import merged_openapi
    from bootstrap.container import build_apps, build_container

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            {},
            overrides={
                "HSP_ENV": "test",
                "HSP_DEMO__DATA_DIR": tmp,
                "HSP_BLOBS__ROOT": tmp,
                "HSP_SANDBOX__MOUNT": "false",
            },
        )
        container = build_container(settings)
        public, admin = build_apps(container)
        return merged_openapi(public, admin)


def render_openapi() -> str:
    return json.dumps(build_openapi_document(), ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def cmd_openapi(args: argparse.Namespace) -> int:
    text = render_openapi()
    target = Path(args.output) if args.output else OPENAPI_PATH
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current != text:
            print(f"openapi: {target} is out of date; run `bff openapi` and commit it", file=sys.stderr)
            return 1
        print("openapi: up to date")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"openapi: wrote {target}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(default_env="prod")
    if settings.broker.worker_metrics_bind and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Before prometheus_client is first imported: every pool process then writes its samples to this
        # directory and the listener in this (parent) process sums them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="hsp-worker-metrics-")
    from bootstrap.worker import run_worker

    return run_worker(settings, concurrency=args.concurrency, pool=args.pool)


def cmd_beat(args: argparse.Namespace) -> int:
    from bootstrap.worker import run_beat

    return run_beat(_settings(default_env="prod"))


def cmd_sandbox(args: argparse.Namespace) -> int:
    from bootstrap.sandboxes import run_sandboxes

    return run_sandboxes(host=args.host, port=args.port)


def cmd_admin(args: argparse.Namespace) -> int:
    from bootstrap.admin import run_admin

    result: int = run_admin(args, _settings(default_env="prod"))
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bff", description="Citizen health-services backend-for-frontend")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the public and admin listeners (production)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run a Celery worker")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("beat", help="run the Celery beat scheduler")
    p.set_defaults(func=cmd_beat)

    p = sub.add_parser("demo", help="run everything in one process on SQLite with the sandboxes")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--admin-port", type=int, default=8001)
    p.add_argument("--data-dir", default=".data")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--keep-services", action="store_true", help="keep HSP_DB__/HSP_REDIS__ settings from the env")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("migrate", help="upgrade the database schema (runs as the owner role)")
    p.add_argument("--revision", default="head")
    p.add_argument("--downgrade", default=None, metavar="REVISION")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("openapi", help="write openapi/openapi.json; --check fails when it drifted")
    p.add_argument("--check", action="store_true")
    p.add_argument("--output", default=None)
    p.set_defaults(func=cmd_openapi)

    p = sub.add_parser("sandbox", help="run the outside-system simulators as a standalone server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("admin", help="owner and operator commands")
    admin_sub = p.add_subparsers(dest="admin_command", required=True)
    a = admin_sub.add_parser(
        "create-operator", help="create a staff account with a one-time activation token (the first operator)"
    )
    a.add_argument("--login-name", required=True)
    a.add_argument("--display-name", default="")
    a.add_argument("--role", default="operator", choices=["operator", "sysadmin", "secadmin", "auditadmin"])
    a = admin_sub.add_parser("audit-partitions", help="create the audit log's monthly partitions ahead")
    a.add_argument("--months-ahead", type=int, default=24)
    a = admin_sub.add_parser("audit-prune", help="drop sealed audit partitions older than the retention")
    a.add_argument("--retain-days", type=int, default=180)
    admin_sub.add_parser("audit-verify", help="verify the audit hash chain")
    p.set_defaults(func=cmd_admin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
