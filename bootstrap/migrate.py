"""Running the Alembic migrations programmatically, as the schema owner."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str, *, app_role: str = "hsp_app") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["app_role"] = app_role
    return cfg


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head


def upgrade(url: str, *, app_role: str = "hsp_app", revision: str = "head") -> None:
    """Upgrade the database at ``url`` (a sync or async URL) to ``revision``. Blocking: call from a thread
    or before the event loop starts."""
    command.upgrade(alembic_config(url, app_role=app_role), revision)


def downgrade(url: str, *, app_role: str = "hsp_app", revision: str = "base") -> None:
    command.downgrade(alembic_config(url, app_role=app_role), revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:

        def _read(sync_conn: sa.Connection) -> str | None:
            return MigrationContext.configure(sync_conn).get_current_revision()

        return await conn.run_sync(_read)
