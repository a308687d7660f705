"""Open loop: requests start on an absolute arrival schedule that never waits for responses.

The run has one global schedule (``harness.workload.arrival_times(--arrival, --rate, --seed)``,
offsets in seconds). Worker ``k`` of ``n`` sends arrivals ``i`` with ``i % n == k``, so the union
over workers is exactly the global process at the total ``--rate`` (for Poisson arrivals the
superposition is again Poisson). Inside a process, every open-loop user shares that process's
:class:`Schedule`: each user takes the next arrival, sleeps until its intended time and hands the
request to a shared pool of ``--max-inflight`` greenlets, so extra users add no load.

Coordinated-omission correct: TTFT/E2E are measured from the intended time (``intended_ns``);
``schedule lag = send - intended`` is recorded per request; an arrival that finds the pool full is
recorded as ``dropped`` (client saturated), never silently skipped.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from gevent.pool import Pool

from harness.locust.options import HarnessOptions
from harness.workload import arrival_times

_STOPPING_RUNNER_STATES = ("stopping", "stopped", "cleanup")


class Schedule:
    """This process's share of the global arrival schedule and its in-flight pool."""

    def __init__(self, opts: HarnessOptions, n_workers: int = 1, worker_index: int = 0) -> None:
        self._offsets = arrival_times(opts.arrival, opts.rate, seed=opts.seed, cv=opts.arrival_cv,
                                      trace_path=opts.trace_file or None)
        self.n_workers = max(1, n_workers)
        self.worker_index = worker_index % self.n_workers
        self.pool = Pool(opts.max_inflight)
        self.max_inflight = opts.max_inflight
        self.start_ns: int | None = None
        self._i = 0
        self.exhausted = False

    def next_intended_ns(self) -> int | None:
        """Intended start (monotonic ns) of this process's next arrival; None when a trace is exhausted."""
        if self.start_ns is None:
            self.start_ns = time.monotonic_ns()
        for offset in self._offsets:
            i, self._i = self._i, self._i + 1
            if i % self.n_workers == self.worker_index:
                return self.start_ns + int(offset * 1e9)
        self.exhausted = True
        return None

    def cancel_inflight(self, timeout_s: float = 5.0) -> None:
        """Kill the streams still in flight (they are recorded as cancelled)."""
        self.pool.kill(block=True, timeout=timeout_s)


def is_stopping(user: Any) -> bool:
    """True once Locust asked ``user`` (or the whole runner) to stop."""
    if getattr(user, "_state", None) == "stopping":
        return True
    runner = user.environment.runner
    return runner is not None and getattr(runner, "state", "") in _STOPPING_RUNNER_STATES


def sleep_until(t_ns: int, user: Any) -> bool:
    """Sleep until monotonic ``t_ns``; False when the user is asked to stop meanwhile."""
    while True:
        if is_stopping(user):
            return False
        remaining = (t_ns - time.monotonic_ns()) / 1e9
        if remaining <= 0:
            return True
        gevent.sleep(min(remaining, 0.25))


def run(user: Any, schedule: Schedule) -> None:
    """The dispatcher loop of one open-loop user; returns when the run stops (in-flight streams finish)."""
    while not is_stopping(user):
        intended = schedule.next_intended_ns()
        if intended is None:  # a finite trace is done: idle until the run ends
            while not is_stopping(user):
                gevent.sleep(0.25)
            break
        if not sleep_until(intended, user):
            break
        prompt = user.next_prompt()
        if schedule.pool.full():
            user.record_drop(prompt, intended, f"client saturated: {schedule.max_inflight} streams in flight "
                                               "(--max-inflight)")
        else:
            schedule.pool.spawn(user.send_pooled, prompt, intended)
    schedule.pool.join()
