"""Live, mergeable statistics of a run: HdrHistograms of TTFT/ITL/TPOT/E2E and outcome counts.

Every process keeps a :class:`LiveStats`; a worker ships :meth:`LiveStats.take_delta` (encoded
histograms and counts since the last report, then reset) and the master folds deltas into its own
with :meth:`LiveStats.merge_delta`. Values follow the metric dictionary (harness.metrics): latency
histograms hold ok requests only; TTFT and E2E are measured from the intended start
(``ttft_intended_ms``/``e2e_intended_ms``, equal to the plain metrics in closed loop).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from harness.metrics import (
    PERCENTILE_KEYS,
    PERCENTILES,
    HdrAccumulator,
    e2e_intended_ms,
    output_tokens,
    schedule_lag_ms,
    tpot_ms,
    ttft_intended_ms,
)
from harness.records import Outcome, RequestRecord

#: histogram name -> label shown in the web UI tab
HISTOGRAMS: dict[str, str] = {"ttft": "TTFT", "itl": "ITL", "tpot": "TPOT", "e2e": "E2E", "lag": "Schedule lag"}


class LiveStats:
    """Histograms (ms, 3 significant digits) and outcome counts; thread/greenlet safe."""

    def __init__(self) -> None:
        self.hist: dict[str, HdrAccumulator] = {k: HdrAccumulator() for k in HISTOGRAMS}
        self.outcomes: Counter[str] = Counter()
        self.output_tokens = 0
        self._lock = threading.Lock()

    def add(self, r: RequestRecord) -> None:
        """Account one finished record."""
        with self._lock:
            self.outcomes[r.outcome] += 1
            lag = schedule_lag_ms(r)
            if lag is not None:
                self.hist["lag"].record_ms(max(lag, 0.0))
            if r.outcome != Outcome.OK:
                return
            self.output_tokens += output_tokens(r)
            for name, value in (("ttft", ttft_intended_ms(r)), ("tpot", tpot_ms(r)), ("e2e", e2e_intended_ms(r))):
                if value is not None:
                    self.hist[name].record_ms(value)
            self._record_gaps(r.token_ns)

    def _record_gaps(self, t: list[int]) -> None:
        """ITL: every gap of ``t`` (ns) in us, rounded and clamped as ``HdrAccumulator.record_ms``
        does with :func:`harness.metrics.itl_ms`'s values, in integer arithmetic."""
        acc = self.hist["itl"]
        record, lo, hi = acc.h.record_value, acc.LOWEST_US, acc.HIGHEST_US
        for prev, cur in zip(t, t[1:], strict=False):
            us = (cur - prev + 500) // 1000
            record(lo if us < lo else hi if us > hi else us)

    def take_delta(self) -> dict[str, Any]:
        """Everything since the last call, encoded for msgpack; resets this object."""
        with self._lock:
            delta = {
                "hist": {k: h.encode() for k, h in self.hist.items() if h.count},
                "outcomes": dict(self.outcomes),
                "output_tokens": self.output_tokens,
            }
            for h in self.hist.values():
                h.reset()
            self.outcomes.clear()
            self.output_tokens = 0
        return delta

    def merge_delta(self, delta: dict[str, Any]) -> None:
        """Fold a worker's :meth:`take_delta` into this object."""
        with self._lock:
            for k, enc in (delta.get("hist") or {}).items():
                if k in self.hist:
                    self.hist[k].merge_encoded(enc)
            self.outcomes.update(delta.get("outcomes") or {})
            self.output_tokens += int(delta.get("output_tokens") or 0)

    # ----------------------------------------------------------------- views

    @property
    def attempted(self) -> int:
        """Attempted requests: all outcomes except dropped (harness.metrics.attempted, over counts)."""
        return sum(v for k, v in self.outcomes.items() if k != Outcome.DROPPED)

    def overload_rate(self) -> float:
        """overloaded / attempted (harness.metrics.overload_rate), 0 when nothing was attempted."""
        n = self.attempted
        return self.outcomes.get(Outcome.OVERLOADED, 0) / n if n else 0.0

    def latency_rows(self) -> list[dict[str, Any]]:
        """One row per histogram: count, mean, min, max and the percentiles, ms (rounded to 0.01)."""
        rows = []
        for k, label in HISTOGRAMS.items():
            s = self.hist[k].summary_ms()
            row: dict[str, Any] = {"metric": label, "count": s.get("count", 0)}
            for stat in ("mean", "min", *(PERCENTILE_KEYS[p] for p in PERCENTILES), "max"):
                v = s.get(stat)
                row[stat] = round(float(v), 2) if v is not None else ""
            rows.append(row)
        return rows

    def outcome_rows(self) -> list[dict[str, Any]]:
        """One row per outcome class with its count and share of attempted requests, plus the overload rate."""
        n = self.attempted
        rows = []
        for o in Outcome:
            c = self.outcomes.get(o.value, 0)
            share = c / n if n and o != Outcome.DROPPED else ""
            rows.append({"outcome": o.value, "count": c, "rate": round(share, 4) if share != "" else ""})
        rows.append({"outcome": "overload rate", "count": self.outcomes.get(Outcome.OVERLOADED, 0),
                     "rate": round(self.overload_rate(), 4)})
        return rows
