"""The SLO-boundary search's judgement: bootstrap intervals of SLO statistics, a probe's verdict, cliffs.

Pure functions over arrays; ``harness sweep --search`` (:mod:`harness.sweep.search`) drives them.

Bootstrap interval (:func:`bootstrap_ci`) of a statistic (a percentile such as p95, or the mean) over a
point's values (ms):

- the values come in *clusters*: one per request (TTFT, E2E, TPOT: one value each; ITL: every gap of
  the request). A resample draws ``n`` requests with replacement (``n`` = number of requests) and
  takes all of their values, so gaps of one request, which are not independent, stay together;
- the statistic is computed on each of ``resamples`` (default :data:`RESAMPLES`) resamples with the
  dictionary's own definition (:func:`harness.metrics.percentile`); the interval is the
  ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of those values (the percentile
  bootstrap; ``confidence`` default :data:`CONFIDENCE`); the estimate is the statistic of all values;
- the generator is seeded (``seed``), so a probe's interval is reproducible;
- ``max`` has no useful bootstrap interval: its interval is the estimate itself.

Verdict of one SLO term (:func:`judge`), bound ``B`` ms: **pass** when the interval's upper end is
<= B, **fail** when its lower end is > B, else **close** (too close to call). A probe's verdict
(:func:`combine`): fail when any term fails (or a check without an interval failed, e.g. the error
rate), pass when every term passes, else close. The search repeats a close probe once, pools both
runs' values and judges again; still close, it decides by the pooled estimate (``<= B`` passes)
and says so (``decided_by = "estimate"``).

Cliff (:func:`find_cliffs`): between neighbouring probed loads ``a < b`` (sorted by load) that are at
most one probe step apart (``b - a <= step``, the search's resolution; ``step * a`` for a relative one), an SLO statistic's estimate
grows by more than ``factor`` (default :data:`CLIFF_FACTOR`): ``value(b) > factor * value(a)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from harness import metrics as m

#: bootstrap resamples per interval
RESAMPLES = 1000
#: two-sided confidence of the interval
CONFIDENCE = 0.95
#: a cliff: latency grows by more than this factor over one probe step
CLIFF_FACTOR = 3.0

PASS, FAIL, CLOSE, INCONCLUSIVE = "pass", "fail", "close", "inconclusive"


@dataclass
class Interval:
    """A statistic's estimate and bootstrap interval (ms), over ``n`` values from ``clusters`` requests."""

    estimate: float | None
    low: float | None
    high: float | None
    n: int
    clusters: int

    def as_dict(self) -> dict:
        return asdict(self)


def statistic(sorted_values: np.ndarray, stat: str) -> float:
    """``"p95"`` / ``"p99_9"`` (a key of :data:`harness.metrics.PERCENTILE_KEYS`), ``"mean"`` or ``"max"``
    of ascending ``sorted_values`` (non-empty)."""
    if stat == "mean":
        return float(np.mean(sorted_values))
    if stat == "max":
        return float(sorted_values[-1])
    return float(m.percentile(sorted_values, stat_percentile(stat)))


def stat_percentile(stat: str) -> float:
    """``"p95"`` -> 95.0 (the inverse of :data:`harness.metrics.PERCENTILE_KEYS`); ValueError otherwise."""
    for p, key in m.PERCENTILE_KEYS.items():
        if key == stat:
            return float(p)
    raise ValueError(f"unknown statistic {stat!r}")


def bootstrap_ci(values: np.ndarray, clusters: np.ndarray | None, stat: str, *, resamples: int = RESAMPLES,
                 confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """Estimate and percentile-bootstrap interval of ``stat`` over ``values`` (module docstring).

    ``clusters[i]`` is the request (any integer id) value ``i`` belongs to; None: each value its own.
    Values that are NaN are ignored. An empty input gives an interval of None.
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.arange(len(v)) if clusters is None else np.asarray(clusters)
    keep = ~np.isnan(v)
    v, c = v[keep], c[keep]
    if len(v) == 0:
        return Interval(None, None, None, 0, 0)
    order = np.argsort(c, kind="stable")  # values of one cluster contiguous
    v, c = v[order], c[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    lengths = np.diff(np.r_[starts, len(v)])
    k = len(starts)
    est = statistic(np.sort(v), stat)
    if stat == "max" or len(v) == 1:
        return Interval(est, est, est, len(v), k)
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for b in range(resamples):
        pick = rng.integers(0, k, k)
        ln = lengths[pick]
        # indices of every value of the picked clusters: each cluster's start, then 0..len-1
        offsets = np.repeat(starts[pick] - np.cumsum(ln) + ln, ln)
        idx = offsets + np.arange(int(ln.sum()))
        stats[b] = statistic(np.sort(v[idx]), stat)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return Interval(est, float(lo), float(hi), len(v), k)


def interval_text(t: dict) -> str:
    """``312.0 [290.1, 340.2]`` (estimate [low, high], ms) of an :meth:`Interval.as_dict`; ``n/a`` without values."""
    if t.get("estimate") is None:
        return "n/a"
    return f"{t['estimate']:.1f} [{t['low']:.1f}, {t['high']:.1f}]"


def judge(iv: Interval, bound: float) -> str:
    """pass / fail / close of one SLO term with bound ``bound`` (module docstring); fail without values."""
    if iv.estimate is None or iv.low is None or iv.high is None:
        return FAIL
    if iv.high <= bound:
        return PASS
    if iv.low > bound:
        return FAIL
    return CLOSE


def combine(term_verdicts: Sequence[str], other_failures: Sequence[str] = ()) -> str:
    """A probe's verdict from its terms' verdicts and the failures of checks without an interval."""
    if other_failures or FAIL in term_verdicts:
        return FAIL
    return CLOSE if CLOSE in term_verdicts else PASS


def by_estimate(intervals: dict[str, Interval], bounds: dict[str, float]) -> str:
    """pass when every term's estimate is within its bound, else fail (a close probe's last resort)."""
    ok = all(iv.estimate is not None and iv.estimate <= bounds[k] for k, iv in intervals.items())
    return PASS if ok else FAIL


@dataclass
class Cliff:
    """``metric`` grew from ``before`` to ``after`` ms (``ratio``) between loads ``low`` and ``high``."""

    metric: str
    low: float
    high: float
    before: float
    after: float
    ratio: float

    def text(self, unit: str) -> str:
        return (f"cliff: {self.metric} jumps {self.ratio:.1f}x ({self.before:.1f} -> {self.after:.1f} ms) "
                f"between {self.low:g} and {self.high:g} {unit}")

    def as_dict(self) -> dict:
        return asdict(self)


def find_cliffs(points: Sequence[tuple[float, dict[str, float | None]]], step: float,
                factor: float = CLIFF_FACTOR, relative: bool = False) -> list[Cliff]:
    """Cliffs among ``(load, {metric: estimate ms})`` probes (module docstring); ``step`` in load units,
    or, ``relative``, a fraction of the lower load (``b - a <= step * a``)."""
    pts = sorted(points, key=lambda p: p[0])
    out = []
    for (a, va), (b, vb) in zip(pts, pts[1:], strict=False):
        if b - a > step * (a if relative else 1.0) * (1 + 1e-9):
            continue
        for k, x in va.items():
            y = vb.get(k)
            if x is not None and y is not None and x > 0 and y > factor * x:
                out.append(Cliff(k, a, b, x, y, y / x))
    return out
