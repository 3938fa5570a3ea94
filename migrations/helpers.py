"""Helpers for migrations: grants to the application's role (PostgreSQL only; SQLite has no roles)."""

from __future__ import annotations

import re

from alembic import context, op

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def app_role() -> str:
    role = str(context.config.attributes.get("app_role") or "hsp_app")
    if not _ROLE.match(role):
        raise ValueError(f"bad role name {role!r}")
    return role


def is_postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def grant_app(table: str, privileges: str = "SELECT, INSERT, UPDATE, DELETE", *, sequence: str | None = None) -> None:
    """Grant ``privileges`` on ``table`` (and usage of its sequence) to the application's role, when it exists."""
    if not is_postgres():
        return
    role = app_role()
    statements = [f'GRANT {privileges} ON TABLE "{table}" TO "{role}"']
    if sequence:
        statements.append(f'GRANT USAGE, SELECT ON SEQUENCE "{sequence}" TO "{role}"')
    body = "; ".join(statements)
    op.execute(f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN {body}; END IF; END $$")
