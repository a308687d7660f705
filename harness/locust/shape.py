"""One load shape for the whole scenarios folder, driven by options.

Locust uses the first LoadTestShape it finds in a folder for every run, so there is exactly one:
:class:`StepShape`. With ``--steps 4,8,16`` it holds each user count for ``--step-time`` seconds and
then stops (the run's step windows go to run.json with the overload rate of each step). Steps are
opt-in: without ``--steps`` it is transparent (``-u``/``-r`` as usual, ``-t`` ends the run, exactly
as without a shape), unless every user class of the run asks for default steps (``default_steps``,
the overload_burst scenario run on its own). A folder run (``locust -f scenarios``) with several
classes therefore uses the users and rate given; in the web UI the class picker's shape "Default"
runs no shape at all and "StepShape" picks this one.
"""

from __future__ import annotations

import time
from typing import Any

from locust import LoadTestShape

from harness.locust.options import parse_steps


def _steps(runner: Any) -> tuple[int, ...]:
    opts = runner.environment.parsed_options
    steps = parse_steps(getattr(opts, "steps", "") or "")
    if steps:
        return steps
    classes = list(runner.environment.user_classes or [])
    defaults = {getattr(cls, "default_steps", "") for cls in classes}
    if classes and len(defaults) == 1 and "" not in defaults:  # every class asks for the same steps
        return parse_steps(defaults.pop())
    return ()


class StepShape(LoadTestShape):
    """Step load from ``--steps``/``--step-time``; otherwise the usual -u/-r/-t."""

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[dict[str, Any]] = []  #: step windows of this test (monotonic ns, this host)

    def reset_time(self) -> None:
        super().reset_time()
        self.steps = []

    def tick(self) -> tuple[int, float] | None:
        runner = self.runner
        opts = runner.environment.parsed_options
        run_time = self.get_run_time()
        steps = _steps(runner)
        if not steps:
            limit = getattr(opts, "run_time", None)
            if limit and run_time >= limit:
                return None
            return int(getattr(opts, "num_users", 1) or 1), float(getattr(opts, "spawn_rate", 1) or 1)
        step_time = float(getattr(opts, "step_time", 10.0) or 10.0)
        i = int(run_time // step_time)
        limit = getattr(opts, "run_time", None)
        if i >= len(steps) or (limit and run_time >= limit):
            self._close_step()
            return None
        self._mark_step(i, steps[i])
        return steps[i], float(max(steps[i], 1) * 10)

    def _mark_step(self, i: int, users: int) -> None:
        if len(self.steps) == i:
            self._close_step()
            self.steps.append({"step": i, "users": users, "start_ns": time.monotonic_ns(), "end_ns": None})

    def _close_step(self) -> None:
        if self.steps and self.steps[-1]["end_ns"] is None:
            self.steps[-1]["end_ns"] = time.monotonic_ns()
