"""Engine fixtures: the tiny fp32 model (session-scoped) and a step-by-step engine driver.

``HARNESS_TEST_DEVICE`` (default ``cpu``) puts the tiny model, and so every engine test that uses it,
on that device: ``HARNESS_TEST_DEVICE=cuda`` is how ``benchmarks/gpu_check.py`` runs them on a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from engine_driver import Driver

from harness.server.engine.policy import Policy
from harness.server.models import LoadedModel, load_model

DEVICE = os.environ.get("HARNESS_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    return load_model("tiny", dtype="float32", device=DEVICE)


@pytest.fixture
def driver(tiny: LoadedModel) -> Iterator[Driver]:
    d = Driver(tiny, Policy(max_batch_size=None, waiting_served_ratio=0.0))
    yield d
    d.close()
