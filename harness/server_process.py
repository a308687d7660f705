"""One server process on a loopback port, ready when ``/health`` answers 200: the one helper that the
sweep, calibration, the demo, the benchmarks and the tests use to start a server.

    with ServerProcess.serve(["--model", "simulated"], log_dir) as s:
        httpx.get(s.url + "/info")

:meth:`ServerProcess.serve` starts the bundled ``python -m harness serve`` (the reference server needs
the ``[server]`` extra); any other command line works through the constructor. The process runs in
``cwd`` (default: the log file's directory), never in the caller's checkout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(args: Sequence[str], port: int, host: str = "127.0.0.1") -> list[str]:
    """``python -m harness serve --host HOST --port PORT ARGS`` with this interpreter."""
    return [sys.executable, "-m", "harness", "serve", "--host", host, "--port", str(port), *args]


class ServerProcess:
    """A server subprocess; :meth:`start` waits until ``GET ready_path`` (default ``/health``) answers 200
    (or fails clearly)."""

    def __init__(self, cmd: Sequence[str], port: int, log_path: str | os.PathLike[str],
                 env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
                 new_session: bool = False, ready_path: str = "/health") -> None:
        self.cmd, self.port = list(cmd), port
        self.ready_path = ready_path
        self.log_path = Path(log_path)
        self.url = f"http://127.0.0.1:{port}"
        self.env = env or {}
        self.cwd = Path(cwd) if cwd is not None else self.log_path.parent
        self.new_session = new_session  #: own session (signals to the caller's group do not reach it)
        self.proc: subprocess.Popen | None = None

    @classmethod
    def serve(cls, args: Sequence[str], log_dir: str | os.PathLike[str], ready_timeout_s: float = 120.0,
              env: dict[str, str] | None = None, port: int | None = None, prefix: Sequence[str] = (),
              log_name: str | None = None, new_session: bool = False) -> ServerProcess:
        """Start ``harness serve ARGS`` on ``port`` (default: a free one), log in ``log_dir``; ready on return.

        ``prefix`` goes before the interpreter (e.g. ``["setsid"]``).
        """
        port = port or free_port()
        log = Path(log_dir) / (log_name or f"server-{port}.log")
        s = cls([*prefix, *serve_command(args, port)], port, log, env, new_session=new_session)
        s.start(ready_timeout_s)
        return s

    def start(self, timeout_s: float = 120.0) -> ServerProcess:
        """Start the process and poll its ready path every 0.1 s; RuntimeError (with the log's tail) when the
        process exits or is not ready within ``timeout_s``."""
        import httpx

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.cwd.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd, env=env,
                                         start_new_session=self.new_session)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with status {self.proc.returncode}; see {self.log_path}:\n"
                                   f"{self.log()[-4000:]}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout_s:.0f} s; see {self.log_path}:\n{self.log()[-4000:]}")

    def log(self) -> str:
        """The server's output so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit status (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
