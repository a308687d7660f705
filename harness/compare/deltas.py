"""Per-metric changes between runs: bootstrap confidence intervals (the gate's machinery) and a verdict.

For each compared run against the baseline (the first) and each key, ``delta = current - baseline``
with a percentile-bootstrap interval at ``confidence`` (:func:`harness.gate.bootstrap.bootstrap_diff`:
requests resampled with replacement in both runs, a request's gaps travel with it). The verdict follows
the key's direction (:func:`harness.analysis.summary.higher_is_better`; latencies: lower is better):
*worse* when the whole interval lies on the bad side of zero, *better* when it lies on the good side,
else *no change*; *point only* when the current run has no records (a summary.json). Keys: the latency percentiles of :data:`LATENCY_KEYS` and every run metric of
:data:`harness.metrics.METRICS` that declares a direction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import metrics as m
from harness.analysis.summary import higher_is_better, lookup
from harness.gate.bootstrap import RunData, bootstrap_diff
from harness.gate.config import GateConfig

__all__ = ["LATENCY_KEYS", "Delta", "compare_keys", "deltas", "settings_diff", "verdict"]

#: latency keys compared for every run (metric, stats), ms
LATENCY_KEYS: tuple[str, ...] = tuple(f"{name}_{stat}_ms" for name in ("ttft", "itl", "tpot", "e2e")
                                      for stat in ("p50", "p95", "p99"))


def compare_keys() -> list[str]:
    """:data:`LATENCY_KEYS`, then the run metrics of the dictionary that declare ``better``."""
    return [*LATENCY_KEYS, *(d.name for d in m.run_metrics() if d.better is not None)]


@dataclass
class Delta:
    """One key of one run against the baseline."""

    key: str
    label: str
    unit: str
    baseline: float | None
    current: float | None
    ci: tuple[float, float] | None  #: interval of ``current - baseline``; None: point values only
    verdict: str  #: "better" | "worse" | "no change" | "point only" (no records to resample) | "n/a" (no value)

    @property
    def change(self) -> float | None:
        return None if self.baseline is None or self.current is None else self.current - self.baseline

    def as_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "unit": self.unit, "baseline": self.baseline,
                "current": self.current, "change": self.change, "ci": self.ci, "verdict": self.verdict}


def _label(key: str) -> tuple[str, str]:
    d = m.METRICS.get(key)
    if d is not None:
        return d.label or d.name.replace("_", " "), d.unit
    name, stat = key[:-3].rsplit("_", 1)
    return f"{name.upper()} {stat}", "ms"


def _num(summary: dict, key: str) -> float | None:
    v = lookup(summary, key)
    return float(v) if isinstance(v, int | float) and v == v else None


def verdict(ci: tuple[float, float], higher_better: bool) -> str:
    """``worse`` | ``better`` | ``no change`` for an interval of ``current - baseline``."""
    lo, hi = ci
    if lo > 0 or hi < 0:
        up = lo > 0
        return "better" if up == higher_better else "worse"
    return "no change"


def deltas(base: RunData, cur: RunData, keys: list[str], confidence: float = 0.95, resamples: int = 1000,
           seed: int = 0) -> list[Delta]:
    """One :class:`Delta` per key of ``keys`` for ``cur`` against ``base`` (see the module doc)."""
    cfg = GateConfig([], [], confidence, resamples, seed)
    rng = np.random.default_rng(seed)
    out = []
    for key in keys:
        label, unit = _label(key)
        b, c = _num(base.summary, key), _num(cur.summary, key)
        if b is None or c is None:
            out.append(Delta(key, label, unit, b, c, None, "n/a"))
            continue
        ci = bootstrap_diff(cur, base, key, cfg, None, rng)
        if ci is None:  # a summary.json without records: nothing to resample, no verdict
            out.append(Delta(key, label, unit, b, c, None, "point only"))
            continue
        out.append(Delta(key, label, unit, b, c, (ci[0], ci[1]), verdict((ci[0], ci[1]), higher_is_better(key))))
    return out


#: run.json fields whose difference is worth saying
SETTINGS = ("scenario", "locust_version", "users", "user_classes", "harness_version")
#: options that differ between any two runs by construction (where they wrote, what they ran against)
VOLATILE = frozenset({"run_dir", "host", "seed_file"})


def settings_diff(run_dirs: list[Path]) -> list[str]:
    """Lines naming every setting (run.json's top fields of :data:`SETTINGS` and its ``options``) that
    differs between the runs; empty when they agree or no run.json exists."""
    metas = []
    for d in run_dirs:
        try:
            metas.append(json.loads((Path(d) / "run.json").read_text()))
        except (OSError, json.JSONDecodeError):
            metas.append({})
    flat = []
    for meta in metas:
        f = {k: meta.get(k) for k in SETTINGS if k in meta}
        f.update({f"options.{k}": v for k, v in (meta.get("options") or {}).items() if k not in VOLATILE})
        flat.append(f)
    out = []
    for k in sorted(set().union(*flat)):
        vals = [json.dumps(f.get(k), sort_keys=True, default=str) for f in flat]
        if len(set(vals)) > 1:
            out.append(f"{k}: " + " | ".join(vals))
    return out
