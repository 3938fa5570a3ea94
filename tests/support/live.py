"""Running the real ``bff`` command in a subprocess on free loopback ports, for e2e and smoke tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BFF = str(Path(sys.executable).parent / "bff")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    admin_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    """The HSP_ settings the server runs with (for commands run beside it)."""
    worker_metrics_url: str | None = None
    """The worker's Prometheus listener, when a worker runs beside the server."""


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSP_")}
    env.update(extra)
    return env


@contextmanager
def run_bff(
    args: list[str], env: Mapping[str, str], *, log_dir: Path, ready_timeout: float = 180.0, worker: bool = False
) -> Iterator[LiveServer]:
    port, admin_port = free_port(), free_port()
    log_path = log_dir / f"bff-{port}.log"
    full_env = _clean_env(env)
    if args[0] == "serve":
        full_env["HSP_HTTP__BIND"] = f"127.0.0.1:{port}"
        full_env["HSP_HTTP__ADMIN_BIND"] = f"127.0.0.1:{admin_port}"
        full_env.setdefault("HSP_HTTP__PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
        argv = [BFF, *args]
    else:
        argv = [BFF, *args, "--port", str(port), "--admin-port", str(admin_port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    workers: list[subprocess.Popen[bytes]] = []
    worker_metrics_url = None
    if worker:
        metrics_port = free_port()
        full_env["HSP_BROKER__WORKER_METRICS_BIND"] = f"127.0.0.1:{metrics_port}"
        worker_metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        with open(log_dir / f"worker-{port}.log", "wb") as wlog:
            workers.append(
                subprocess.Popen(
                    [BFF, "worker", "--pool", "solo", "--concurrency", "1"],
                    cwd=ROOT,
                    env=full_env,
                    stdout=wlog,
                    stderr=subprocess.STDOUT,
                )
            )
        with open(log_dir / f"beat-{port}.log", "wb") as blog:
            workers.append(
                subprocess.Popen([BFF, "beat"], cwd=ROOT, env=full_env, stdout=blog, stderr=subprocess.STDOUT)
            )
    # What commands run beside the server inherit: not the worker's metrics address, which only one may bind.
    hsp_env = {k: v for k, v in full_env.items() if k.startswith("HSP_") and k != "HSP_BROKER__WORKER_METRICS_BIND"}
    server = LiveServer(
        f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", process, log_path, hsp_env, worker_metrics_url
    )
    try:
        _wait_ready(server, ready_timeout)
        yield server
    finally:
        for proc in [process, *workers]:
            proc.terminate()
        for proc in [process, *workers]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _wait_ready(server: LiveServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"bff exited with {server.process.returncode}: {server.log_path.read_text()[-3000:]}")
        try:
            # Both listeners must answer: the admin port can be up a moment before the public one, which has no
            # health route of its own (any answer, 404 included, proves it listens).
            response = httpx.get(server.admin_url + "/readyz", timeout=2)
            httpx.get(server.base_url + "/healthz", timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"bff not ready after {timeout}s ({last}): {server.log_path.read_text()[-3000:]}")


def operator_token(server: LiveServer, login_name: str, client: httpx.Client) -> str:
    """Create an operator with ``bff admin create-operator``, activate it with TOTP, log in; the access token."""
    import re
    from datetime import datetime

    import pyotp

    env = {k: v for k, v in os.environ.items() if not k.startswith("HSP_")} | server.env
    created = subprocess.run(
        [BFF, "admin", "create-operator", "--login-name", login_name],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    match = re.search(r"\): (\S+)\n", created.stdout)
    assert match, created.stdout
    token, password = match.group(1), "Operator-Pass-2026!"

    def now() -> datetime:
        return datetime.fromisoformat(client.get(server.base_url + "/sandbox/admin/clock").json()["now"])

    started = client.post(
        server.base_url + "/api/v1/auth/staff/activate",
        json={"loginName": login_name, "activationToken": token, "newPassword": password},
    )
    totp = pyotp.TOTP(started.json()["totpSecret"])
    client.post(
        server.base_url + "/api/v1/auth/staff/activate/confirm",
        json={"loginName": login_name, "activationToken": token, "totp": totp.at(now())},
    )
    client.post(server.base_url + "/sandbox/admin/clock", json={"advanceSeconds": 31})
    login = client.post(
        server.base_url + "/api/v1/auth/staff/login",
        json={"loginName": login_name, "password": password, "totp": totp.at(now())},
    )
    assert login.status_code == 201, login.text
    access: str = login.json()["accessToken"]
    return access
