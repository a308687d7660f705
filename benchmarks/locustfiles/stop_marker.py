"""The calibration user plus a marker of the stop: benchmarks/stop_stall.py's locustfile.

At Locust's ``test_stopping`` (the run time limit fired; Locust's stop work begins) this writes
``time.monotonic_ns()`` to the file named by ``STOP_MARKER_FILE``. Its listener is added after the
harness's own (harness.locust is imported first), so it stamps a few microseconds after the harness's
stop stamp.
"""

from __future__ import annotations

import os
import time
from typing import Any

from locust import events

from harness.calibration.locustfile import CalibrationUser

__all__ = ["CalibrationUser"]


@events.test_stopping.add_listener
def _mark_stop(**_: Any) -> None:
    path = os.environ.get("STOP_MARKER_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(str(time.monotonic_ns()))
