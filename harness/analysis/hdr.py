"""HdrHistogram counts built with numpy, for the large-run reader.

The same histogram as :class:`harness.metrics.HdrAccumulator` (1 us .. 1 h, 3 significant digits; a
value in ms is recorded as ``int(ms * 1000 + 0.5)`` us, clamped into that range): :func:`sparse_counts`
computes the counts-array index of many values at once with HdrHistogram's own index arithmetic and
returns the non-zero counts; :func:`summary` reads percentiles from summed counts the way
``HdrHistogram.get_value_at_percentile`` does (the highest value equivalent to the bucket where the
cumulative count first reaches ``max(int(p / 100 * total + 0.5), 1)``). Values of other units (tokens,
fractions) are recorded the same way (x 1000). tests/analysis/test_stream_report.py checks both
against the hdrh package value for value.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from harness import metrics as m


@lru_cache(maxsize=1)
def _proto():  # -> hdrh.histogram.HdrHistogram
    return m.HdrAccumulator().h


def counts_len() -> int:
    """Length of the histogram's counts array."""
    return int(_proto().counts_len)


def index(values_ms: np.ndarray) -> np.ndarray:
    """Counts-array index of each value (ms; NaN values must be removed first)."""
    h = _proto()
    us = np.clip(np.trunc(np.asarray(values_ms, dtype=np.float64) * 1000.0 + 0.5),
                 m.HdrAccumulator.LOWEST_US, m.HdrAccumulator.HIGHEST_US).astype(np.int64)
    # bucket: smallest power of 2 containing (value | sub_bucket_mask); frexp's exponent is the bit length
    bits = np.frexp((us | h.sub_bucket_mask).astype(np.float64))[1].astype(np.int64)
    bucket = bits - h.unit_magnitude - (h.sub_bucket_half_count_magnitude + 1)
    sub = us >> (bucket + h.unit_magnitude)
    return ((bucket + 1) << h.sub_bucket_half_count_magnitude) + (sub - h.sub_bucket_half_count)


def sparse_counts(values_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indexes, counts) of the non-zero buckets of ``values_ms`` (NaN ignored)."""
    v = np.asarray(values_ms, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    counts = np.bincount(index(v), minlength=counts_len())
    idx = np.flatnonzero(counts)
    return idx.astype(np.int32), counts[idx].astype(np.int64)


def dense(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Summed counts array of several sparse histograms."""
    out = np.zeros(counts_len(), dtype=np.int64)
    for idx, cnt in parts:
        np.add.at(out, idx.astype(np.int64), cnt)
    return out


def value_at(counts: np.ndarray, cum: np.ndarray, p: float) -> float:
    """Value (ms) at percentile ``p`` (0-100) of a counts array with cumulative sums ``cum``."""
    h = _proto()
    total = int(cum[-1])
    target = max(int((min(p, 100.0) * total / 100) + 0.5), 1)
    i = int(np.searchsorted(cum, target, side="left"))
    v = h.get_value_from_index(i)
    return (h.get_highest_equivalent_value(v) if p else h.get_lowest_equivalent_value(v)) / 1000.0


def summary(counts: np.ndarray, count: int, mean: float, vmin: float, vmax: float) -> dict[str, float | int]:
    """A distribution like :func:`harness.analysis.summary.dist`: ``count``, ``mean``, ``min`` and ``max``
    as given (exact, from the values), percentiles of :data:`harness.metrics.PERCENTILES` from ``counts``."""
    if not count:
        return {"count": 0}
    cum = np.cumsum(counts)
    out: dict[str, float | int] = {"count": int(count), "mean": float(mean), "min": float(vmin), "max": float(vmax)}
    for p in m.PERCENTILES:
        out[m.PERCENTILE_KEYS[p]] = value_at(counts, cum, p)
    return out


def cdf_points(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value ms, fraction <= value) at every non-zero bucket (its highest equivalent value)."""
    h = _proto()
    nz = np.flatnonzero(counts)
    if not len(nz):
        return np.zeros(0), np.zeros(0)
    cum = np.cumsum(counts[nz]) / counts.sum()
    x = np.array([h.get_highest_equivalent_value(h.get_value_from_index(int(i))) for i in nz.tolist()]) / 1000.0
    return x, cum
