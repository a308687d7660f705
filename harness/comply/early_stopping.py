"""MLPerf LoadGen's early-stopping test for the server scenario (``loadgen/early_stopping.cc``, ``results.cc``).

A run measures ``n`` queries of which ``t`` are over the latency limit. The question is whether the
observed share of over-limit queries lets us say, at confidence ``c`` (0.99), that the true share is at
most ``1 - p`` (p = 0.99, the target percentile). LoadGen's formula: with ``q = p - d`` (d = tolerance,
0 in MLPerf), the probability of seeing ``t`` or fewer over-limit queries among ``h + t`` if each query
were over the limit with probability exactly ``1 - q`` is the binomial CDF

    odds(h, t) = P[Binomial(h + t, 1 - q) <= t]
               = sum_{x=0..t} C(h + t, x) * (1 - q)^x * q^(h + t - x)
               = I_q(h, t + 1)                      (regularized incomplete beta)

``h(t)`` is the smallest ``h`` with ``odds(h, t) < 1 - c``; the run passes early stopping when
``n >= h(t) + t``, i.e. when ``t`` over-limit queries among ``n`` would be unlikely (below 1 - c) if the
true over-limit share were as high as ``1 - q``. Worked examples (p = c = 0.99, d = 0):
``t = 0``: odds = 0.99^h < 0.01 <=> h > ln 0.01 / ln 0.99 = 458.2, so h = 459 and 459 queries suffice;
``t = 1``: odds = 0.99^h * (0.99 + 0.01 (h + 1)) < 0.01 first at h = 661, so 662 queries are needed.
"""

from __future__ import annotations

import math

__all__ = ["binomial_cdf", "early_stopping_passes", "min_passing_queries", "odds"]


def binomial_cdf(k: int, n: int, prob: float) -> float:
    """``P[X <= k]`` for ``X ~ Binomial(n, prob)``: ``sum_{x=0..k} C(n, x) prob^x (1 - prob)^(n - x)``,
    summed in log space (``math.lgamma``) so large ``n`` neither overflows nor underflows."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if prob <= 0.0:
        return 1.0
    if prob >= 1.0:
        return 0.0
    lp, lq = math.log(prob), math.log1p(-prob)
    logs = [math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1) + x * lp + (n - x) * lq
            for x in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def odds(h: int, t: int, p: float = 0.99, d: float = 0.0) -> float:
    """LoadGen's ``odds(h, t, p, d)``: the chance of ``t`` or fewer over-limit queries among ``h + t`` when
    each is over the limit with probability ``1 - (p - d)``: ``P[Binomial(h + t, 1 - p + d) <= t]``."""
    return binomial_cdf(t, h + t, 1.0 - (p - d))


def min_passing_queries(t: int, p: float = 0.99, c: float = 0.99, d: float = 0.0) -> int:
    """The fewest queries, ``h(t) + t``, with which a run that has ``t`` over-limit queries passes early
    stopping: ``h(t)`` = the smallest ``h >= 0`` with ``odds(h, t, p, d) < 1 - c`` (odds falls as h grows).

    ValueError unless ``t >= 0``, ``0 < p - d < 1`` and ``0 < c < 1``.
    """
    if t < 0 or not 0.0 < p - d < 1.0 or not 0.0 < c < 1.0:
        raise ValueError("early stopping needs t >= 0, 0 < p - d < 1 and 0 < c < 1")
    lo, hi = 0, max(1, int(math.ceil(math.log(1 - c) / math.log(p - d))))
    while odds(hi, t, p, d) >= 1 - c:  # bracket: double until it passes
        lo, hi = hi, hi * 2
    while lo < hi:  # smallest passing h in [lo, hi]
        mid = (lo + hi) // 2
        if odds(mid, t, p, d) < 1 - c:
            hi = mid
        else:
            lo = mid + 1
    return lo + t


def early_stopping_passes(n: int, t: int, p: float = 0.99, c: float = 0.99, d: float = 0.0) -> tuple[bool, int]:
    """(passed, needed): ``passed = n >= needed`` with ``needed = min_passing_queries(t, p, c, d)``, for
    ``n`` queries of which ``t`` were over the limit."""
    needed = min_passing_queries(t, p, c, d)
    return n >= needed, needed
