"""``bff admin``: owner and operator commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta

from bootstrap.clock import SystemClock
from bootstrap.container import build_crypto, database_url, owner_database_url
from bootstrap.settings import Settings
from domain.kernel.audit_chain import verify_audit_chain
from persistence.db import ConnectionSource, DatabaseConfig, create_engine
from persistence.kernel.audit_admin import RetentionError, drop_sealed_partitions, ensure_partitions
from persistence.uow import unit_of_work_factory


async def _audit_partitions(settings: Settings, months_ahead: int) -> list[str]:
    engine = create_engine(DatabaseConfig(url=owner_database_url(settings), pool_size=1, max_overflow=0))
    try:
        return await ensure_partitions(engine, now=SystemClock().now(), months_ahead=months_ahead)
    finally:
        await engine.dispose()


async def _audit_prune(settings: Settings, retain_days: int) -> list[str]:
    engine = create_engine(DatabaseConfig(url=owner_database_url(settings), pool_size=1, max_overflow=0))
    now = SystemClock().now()
    try:
        return await drop_sealed_partitions(engine, before=now - timedelta(days=retain_days), now=now)
    finally:
        await engine.dispose()


async def _audit_verify(settings: Settings) -> bool:
    engine = create_engine(DatabaseConfig(url=database_url(settings), pool_size=1, max_overflow=0))
    try:
        verdict = await verify_audit_chain(
            unit_of_work_factory(ConnectionSource(engine)), build_crypto(settings).digest, batch=1000
        )
    finally:
        await engine.dispose()
    state = "intact" if verdict.ok else f"BROKEN at audit id {verdict.first_bad_audit_id}: {verdict.problem}"
    print(f"audit chain: {state} ({verdict.checked} records checked)")  # noqa: T201
    return verdict.ok


async def _create_staff(settings: Settings, login_name: str, display_name: str, role: str) -> tuple[str, str]:
    from bootstrap.container import build_container
    from domain.account.model import StaffRole
    from domain.account.use_cases import ClientContext

    container = build_container(settings, role="worker", in_process_tasks=True)
    try:
        assert container.accounts is not None
        activation = await container.accounts.create_staff(
            login_name=login_name,
            display_name=display_name,
            roles=frozenset({StaffRole(role)}),
            actor=None,
            ctx=ClientContext(device="bff admin"),
        )
    finally:
        await container.aclose()
    return activation.token, activation.expires_at.isoformat()


def run_admin(args: argparse.Namespace, settings: Settings) -> int:
    command = args.admin_command
    if command == "create-operator":
        token, expires = asyncio.run(_create_staff(settings, args.login_name, args.display_name, args.role))
        print(  # noqa: T201
            f"created {args.role} '{args.login_name}' (pending activation)\n"
            f"one-time activation token (valid until {expires}): {token}\n"
            "The holder activates with POST /api/v1/auth/staff/activate (chooses a password, receives a TOTP "
            "secret), then POST /api/v1/auth/staff/activate/confirm with a first TOTP code."
        )
        return 0
    if command == "audit-partitions":
        created = asyncio.run(_audit_partitions(settings, args.months_ahead))
        print(f"audit partitions created: {', '.join(created) or 'none needed'}")  # noqa: T201
        return 0
    if command == "audit-prune":
        try:
            dropped = asyncio.run(_audit_prune(settings, args.retain_days))
        except RetentionError as exc:
            print(f"audit-prune refused: {exc}", file=sys.stderr)  # noqa: T201
            return 2
        print(f"audit partitions dropped: {', '.join(dropped) or 'none'}")  # noqa: T201
        return 0
    if command == "audit-verify":
        return 0 if asyncio.run(_audit_verify(settings)) else 1
    raise SystemExit(f"unknown admin command {command}")
