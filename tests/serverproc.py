"""Start the real `harness serve` as a subprocess on 127.0.0.1 and wait until it is ready.

Imported by tests as ``from serverproc import start_server, free_port`` (tests/ is on sys.path
through the root conftest); the process helper itself is :class:`harness.server_process.ServerProcess`.
"""

from __future__ import annotations

from pathlib import Path

from harness.server_process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "ServerProcess", "free_port", "start_server"]


def start_server(args: list[str], tmp_dir: Path, ready_timeout: float = 120.0,
                 env: dict[str, str] | None = None) -> ServerProcess:
    """Start `python -m harness serve ARGS --port P` (log in ``tmp_dir``) and wait until /health answers 200."""
    return ServerProcess.serve(args, tmp_dir, ready_timeout, env)
