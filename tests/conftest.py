"""Shared fixtures: start the real `harness serve` as a subprocess on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(args: list[str], tmp_dir: Path, ready_timeout: float = 120.0,
                 env: dict[str, str] | None = None) -> ServerProcess:
    """Start `python -m harness serve ARGS --port P` and wait until /health answers 200."""
    port = free_port()
    log_path = tmp_dir / f"server-{port}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=full_env,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", port, proc, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/health", timeout=1.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server not ready after {ready_timeout}s:\n{server.log()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Factory fixture: ``server = serve(["--model", "simulated", ...])``; stopped at teardown."""
    started: list[ServerProcess] = []

    def _start(args: list[str], **kw) -> ServerProcess:
        s = start_server(args, tmp_path, **kw)
        started.append(s)
        return s

    yield _start
    for s in started:
        s.stop()
