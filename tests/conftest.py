"""Shared fixtures: start the real `harness serve` as a subprocess on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import ROOT, ServerProcess, free_port, start_server

__all__ = ["ROOT", "ServerProcess", "free_port", "start_server", "serve"]


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
