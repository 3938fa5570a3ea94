"""With the sandboxes mounted (demo, test): register the sandbox HIS's hospitals and sync them once the server
listens (the adapter reaches the simulator over HTTP on this process's own port)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from bootstrap import sandbox_accounts as demo
from domain.account.model import AccountKind, Audience, Session
from domain.catalogue.model import Hospital, HospitalLevel
from domain.kernel.errors import DomainError

if TYPE_CHECKING:
    from bootstrap.container import Container

log = structlog.get_logger("demo")


def _system_actor(container: Container) -> Session:
    now = container.clock.now()
    return Session(
        id="system",
        account_id="system",
        kind=AccountKind.STAFF,
        audience=Audience.STAFF_APP,
        created_at=now,
        last_seen_at=now,
        expires_at=now,
        idle_seconds=0,
        roles=frozenset({"operator"}),
    )


async def register_sandbox_hospitals(container: Container) -> None:
    catalogue = container.catalogue
    if catalogue is None:
        return
    base = container.settings.http.public_base_url.rstrip("/")
    for code, info in demo.HIS_HOSPITALS.items():
        with contextlib.suppress(DomainError):
            await catalogue.hospital(code)
            continue
        await catalogue.add_hospital(
            Hospital(
                code=code,
                name=info["name"],
                address=info["address"],
                phone=info["phone"],
                level=HospitalLevel(info["level"]),
                region_code=info["region"],
                adapter="fhir",
                adapter_settings={"base_url": f"{base}/sandbox/his/{code}/fhir"},
                callback_secret=info["secret"],
            ),
            actor=_system_actor(container),
        )


def start_initial_sync(container: Container) -> None:
    """Sync every sandbox hospital in the background, retrying until the server answers (about 30 s at most)."""

    async def run() -> None:
        catalogue = container.catalogue
        if catalogue is None:
            return
        pending = set(demo.HIS_HOSPITALS)
        for _ in range(60):
            for code in sorted(pending):
                try:
                    await catalogue.sync_hospital(code, full=True)
                    pending.discard(code)
                except DomainError:
                    pass
            if not pending:
                log.info("sandbox_hospitals_synced")
                return
            await asyncio.sleep(0.5)
        log.warning("sandbox_hospitals_not_synced", pending=sorted(pending))

    task = asyncio.get_running_loop().create_task(run())
    container.background.add(task)
    task.add_done_callback(container.background.discard)
