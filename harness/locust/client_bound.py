"""Client-bound detection: when the load generator itself is the bottleneck, timings are not trustworthy.

Two signals, checked once per report interval on every load-generating process:
- CPU: the process's CPU usage (Locust's own ``runner.current_cpu_usage``, psutil) above
  :data:`CPU_LIMIT_PERCENT`;
- schedule lag growing: the median schedule lag (send - intended, ms) of the interval's open-loop
  sends exceeds :data:`LAG_LIMIT_MS` and is larger than the previous interval's, for
  :data:`LAG_STRIKES` intervals in a row.
The reasons end up in run.json (``client_bound: true``, ``client_bound_reasons``) and in a log warning.
"""

from __future__ import annotations

import logging
import statistics

logger = logging.getLogger("harness.locust")

CPU_LIMIT_PERCENT = 90.0
LAG_LIMIT_MS = 5.0
LAG_STRIKES = 2


class ClientBoundMonitor:
    """Collects lag samples and CPU readings; :meth:`check` returns new reasons (each reported once)."""

    def __init__(self, node: str = "local") -> None:
        self.node = node
        self.reasons: list[str] = []
        self._lags: list[float] = []
        self._prev_median: float | None = None
        self._strikes = 0
        self._kinds: set[str] = set()  # "cpu" / "lag": each reported once per process

    def note_lag(self, lag_ms: float) -> None:
        """One open-loop send's schedule lag, ms."""
        self._lags.append(lag_ms)

    def check(self, cpu_percent: float | None) -> list[str]:
        """Evaluate the interval that just ended; returns reasons not reported before."""
        new: dict[str, str] = {}
        if cpu_percent is not None and cpu_percent > CPU_LIMIT_PERCENT:
            new["cpu"] = f"{self.node}: CPU {cpu_percent:.0f}% > {CPU_LIMIT_PERCENT:.0f}%"
        if self._lags:
            median = statistics.median(self._lags)
            growing = median > LAG_LIMIT_MS and (self._prev_median is None or median > self._prev_median)
            self._strikes = self._strikes + 1 if growing else 0
            if self._strikes >= LAG_STRIKES:
                new["lag"] = f"{self.node}: schedule lag growing (median {median:.1f} ms > {LAG_LIMIT_MS} ms)"
            self._prev_median = median
            self._lags.clear()
        fresh = [reason for kind, reason in new.items() if kind not in self._kinds]
        self._kinds.update(new)
        for reason in fresh:
            logger.warning("client bound, timings are not trustworthy: %s", reason)
        self.reasons.extend(fresh)
        return fresh
