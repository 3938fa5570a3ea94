"""One live ``bff serve`` per test worker: HSP_ENV=test on PostgreSQL and Redis, sandboxes mounted, offset clock."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from domain.kernel.ids import new_id
from tests.conftest import REDIS_URL, create_test_database, drop_test_database
from tests.support.live import LiveServer, run_bff


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # The pid too: two runs on one machine must not drop each other's database.
    name = f"hsp_test_live_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
    db = create_test_database(name)
    data = tmp_path_factory.mktemp("live")
    env = {
        "HSP_ENV": "test",
        "HSP_DB__URL": db.app_url,
        "HSP_DB__OWNER_URL": db.owner_url,
        "HSP_REDIS__URL": REDIS_URL,
        "HSP_REDIS__PREFIX": f"hsp-test-live:{new_id()}:",
        "HSP_BROKER__TASK_DEFAULT_QUEUE": f"hsp-e2e-{new_id()}",
        "HSP_BROKER__BEAT_SCHEDULE_PATH": str(data / "celerybeat-schedule"),
        "HSP_CLOCK__MODE": "offset",
        "HSP_SANDBOX__MOUNT": "true",
        "HSP_DEMO__DATA_DIR": str(data),
        "HSP_BLOBS__ROOT": str(data / "blobs"),
        "HSP_LOG__JSON": "true",
        "HSP_AUTH__ARGON2_MEMORY_KIB": "8192",
        "HSP_AUTH__ARGON2_TIME_COST": "1",
        "HSP_AUTH__SMS_RESEND_SECONDS": "1",
        # The tests stand behind a "proxy" on loopback: each journey sends its own X-Forwarded-For address.
        "HSP_HTTP__TRUSTED_PROXIES": '["127.0.0.0/8"]',
    }
    try:
        with run_bff(["serve"], env, log_dir=data, worker=True) as server:
            yield server
    finally:
        drop_test_database(name)
