"""A worker killed in the middle of a delivery task loses nothing and sends nothing twice: the broker redelivers
the unacknowledged task (``acks_late``) after its visibility timeout, shortened here rather than waited for,
and a second worker sends the message once (issue: notifications)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bootstrap.container import build_container
from bootstrap.settings import load_settings
from domain.account.model import ResidentAccount
from domain.kernel.ids import new_id
from tests.conftest import create_test_database, drop_test_database
from tests.support.live import BFF, ROOT, LiveServer

client = httpx.Client(headers={"X-Forwarded-For": "198.51.100.111"}, timeout=30)


def _inbox(live: LiveServer, phone: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for provider in ("aliyun-sms", "tencent-sms"):
        found += client.get(live.base_url + f"/sandbox/{provider}/test/inbox", params={"phone": phone}).json()[
            "messages"
        ]
    return found


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([BFF, "worker", "--pool", "solo"], cwd=ROOT, env=env, stdout=out, stderr=out)


def test_a_worker_killed_mid_task_neither_loses_nor_repeats_the_message(live: LiveServer, tmp_path: Path) -> None:
    """Its own database (no other worker or sweeper sees the row) and its own queue; only the simulated SMS
    provider is shared with the live server."""
    phone = "13700007777"
    db = create_test_database(f"hsp_test_killed_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}")
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("HSP_")}
        | live.env
        | {
            "HSP_DB__URL": db.app_url,
            "HSP_DB__OWNER_URL": db.owner_url,
            "HSP_BROKER__TASK_DEFAULT_QUEUE": f"hsp-killed-{new_id()}",
            "HSP_BROKER__VISIBILITY_TIMEOUT_SECONDS": "3",
        }
    )
    settings = load_settings({k: v for k, v in env.items() if k.startswith("HSP_")})
    engine = create_async_engine(db.owner_url)

    async def create_delivery() -> int:
        container = build_container(settings, role="worker", in_process_tasks=False)
        now = container.clock.now()
        account_id = new_id()
        async with container.uow_factory() as uow:
            await uow.accounts.add_resident(
                ResidentAccount(
                    id=account_id,
                    created_at=now,
                    last_active_at=now,
                    phone_index=new_id(),
                    phone_cipher=container.crypto.cipher.encrypt(phone.encode(), context="account.phone"),
                )
            )
            await uow.commit()
        service = container.runtime.services["notifications"]
        [delivery_id] = await service.on_event(  # queued on our queue; no worker listens yet
            "notification.test",
            {"accountId": account_id, "values": {"time": "09:00", "text": "只发一次"}},
            f"evt-{new_id()}",
        )
        await container.aclose()
        return int(delivery_id)

    async def hold_lock(delivery_id: int, ready: asyncio.Event, release: asyncio.Event) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("SELECT id FROM notification_deliveries WHERE id = :i FOR UPDATE"), {"i": delivery_id}
            )
            ready.set()
            await release.wait()

    def sent_count() -> int:
        return sum("只发一次" in str(m) for m in _inbox(live, phone))

    async def run() -> tuple[int, str, str]:
        delivery_id = await create_delivery()
        ready, release = asyncio.Event(), asyncio.Event()
        locker = asyncio.create_task(hold_lock(delivery_id, ready, release))
        await ready.wait()
        first = _worker(env, tmp_path / "worker-a.log")
        deadline = time.monotonic() + 30
        while "notification.deliver" not in (tmp_path / "worker-a.log").read_text(errors="ignore"):
            assert time.monotonic() < deadline, "worker A never received the task"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # A is now blocked claiming the row, before any send
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        release.set()
        await locker
        assert sent_count() == 0
        await asyncio.sleep(3.5)  # past the (shortened) visibility timeout: the task is due again
        second = _worker(env, tmp_path / "worker-b.log")
        try:
            deadline = time.monotonic() + 60
            while sent_count() == 0:
                assert time.monotonic() < deadline, (tmp_path / "worker-b.log").read_text(errors="ignore")[-2000:]
                await asyncio.sleep(0.3)
            await asyncio.sleep(2.0)  # a duplicate, if any, would arrive now
        finally:
            second.terminate()
            second.wait(timeout=20)
        async with engine.connect() as conn:
            state = await conn.scalar(
                sa.text("SELECT state FROM notification_deliveries WHERE id = :i"), {"i": delivery_id}
            )
        await engine.dispose()
        return sent_count(), str(state), (tmp_path / "worker-b.log").read_text(errors="ignore")

    try:
        count, state, log_b = asyncio.run(run())
    finally:
        drop_test_database(db.name)
    assert count == 1, "sent once: not lost with the killed worker, not repeated"
    assert state == "sent"
    assert "notification.deliver" in log_b, "the broker redelivered the killed worker's task to worker B"
