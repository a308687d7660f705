"""Engine fixtures: the tiny fp32 model (session-scoped) and a step-by-step engine driver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from engine_driver import Driver

from harness.server.engine.policy import Policy
from harness.server.models import LoadedModel, load_model


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    return load_model("tiny", dtype="float32", device="cpu")


@pytest.fixture
def driver(tiny: LoadedModel) -> Iterator[Driver]:
    d = Driver(tiny, Policy(max_batch_size=None, waiting_served_ratio=0.0))
    yield d
    d.close()


