"""Fixtures for the Locust integration tests."""

from __future__ import annotations

import pytest
from locust_helpers import SIM


@pytest.fixture
def sim(serve):
    """``sim(cap=64, *extra)`` -> a running simulated server with the scripted timings."""
    def _start(cap: int = 64, *extra: str):
        return serve([*SIM, "--max-concurrent-requests", str(cap), *extra])
    return _start
