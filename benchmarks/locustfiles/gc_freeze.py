"""The calibration user with ``gc.freeze()`` at each test's start: benchmarks/gc_freeze_ab.py's B side.

``gc.freeze()`` moves every object alive at the test's start (modules, Locust, the harness) to the
permanent generation, so the collector's full collections no longer traverse them.
"""

from __future__ import annotations

import gc
from typing import Any

from locust import events

from harness.calibration.locustfile import CalibrationUser

__all__ = ["CalibrationUser"]


@events.test_start.add_listener
def _freeze(**_: Any) -> None:
    gc.collect()
    gc.freeze()
