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


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSP_")}
    env.update(extra)
    return env


@contextmanager
def run_bff(
    args: list[str], env: Mapping[str, str], *, log_dir: Path, ready_timeout: float = 90.0
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
    hsp_env = {k: v for k, v in full_env.items() if k.startswith("HSP_")}
    server = LiveServer(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", process, log_path, hsp_env)
    try:
        _wait_ready(server, ready_timeout)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_ready(server: LiveServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"bff exited with {server.process.returncode}: {server.log_path.read_text()[-3000:]}")
        try:
            response = httpx.get(server.admin_url + "/readyz", timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"bff not ready after {timeout}s ({last}): {server.log_path.read_text()[-3000:]}")
