"""TGI's Prometheus metrics, rendered the way TGI's exporter (metrics-exporter-prometheus 0.15)
renders them: names as-is (counters without a ``_total`` suffix), ``# TYPE`` lines, histograms
with ``_bucket{le=...}``/``_sum``/``_count``, and a series only after its first recording.

A tiny in-process registry (no locks: everything runs on the event loop thread). Gauges
(``tgi_queue_size``, ``tgi_batch_current_size``, ``tgi_batch_current_max_tokens``) are pulled from ``backend.stats()`` at scrape time,
as are the ``harness_prefix_cache_*`` series when the backend has a prefix cache
(:data:`PREFIX_CACHE_SERIES`).

Buckets (TGI ``server.rs``): durations 35 geometric steps from 0.00015 s (x1.5);
``input_length`` 100 linear steps up to max_input_tokens; ``generated_tokens`` and
``max_new_tokens`` 100 linear steps up to max_total_tokens.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from harness.server.backends.base import EngineStats, PrefixCacheStats

DURATION_BUCKETS = [0.00015 * 1.5**i for i in range(35)]


def linear_buckets(top: int, n: int = 100) -> list[float]:
    """``n`` evenly spaced upper bounds ending at ``top``."""
    return [top / n * (i + 1) for i in range(n)]


def _fmt(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


class Histogram:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        i = bisect_left(self.bounds, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str) -> list[str]:
        lines = [f"# TYPE {name} histogram"]
        acc = 0
        for b, c in zip(self.bounds, self.counts, strict=True):
            acc += c
            lines.append(f'{name}_bucket{{le="{b}"}} {acc}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {_fmt(self.sum)}")
        lines.append(f"{name}_count {self.count}")
        return lines


#: The prefix-cache series (TGI has none; named like TGI's, counters without ``_total``):
#: (name, type, PrefixCacheStats field). Token hit rate = hits / queries.
PREFIX_CACHE_SERIES = (
    ("harness_prefix_cache_queries", "counter", "queries"),  # prompt tokens looked up
    ("harness_prefix_cache_hits", "counter", "hits"),  # of those, tokens whose KV was reused
    ("harness_prefix_cache_requests", "counter", "requests"),  # lookups (one per request)
    ("harness_prefix_cache_hit_requests", "counter", "hit_requests"),  # lookups reusing >= 1 block
    ("harness_prefix_cache_evictions", "counter", "evicted"),  # blocks evicted (LRU)
    ("harness_prefix_cache_tokens", "gauge", "tokens"),  # tokens held now
    ("harness_prefix_cache_bytes", "gauge", "bytes"),  # KV bytes held now (0: emulated cache)
    ("harness_prefix_cache_capacity_bytes", "gauge", "capacity_bytes"),  # --prefix-cache-mb in bytes
)


def prefix_cache_lines(stats: PrefixCacheStats) -> list[str]:
    """The :data:`PREFIX_CACHE_SERIES` lines of one scrape."""
    lines: list[str] = []
    for name, kind, attr in PREFIX_CACHE_SERIES:
        lines += [f"# TYPE {name} {kind}", f"{name} {_fmt(getattr(stats, attr))}"]
    return lines


class Metrics:
    """The server's tgi_* series. Durations are in seconds."""

    DURATIONS = ("tgi_request_duration", "tgi_request_validation_duration", "tgi_request_queue_duration",
                 "tgi_request_inference_duration", "tgi_request_mean_time_per_token_duration")

    def __init__(self, max_input_tokens: int, max_total_tokens: int,
                 stats: Callable[[], EngineStats] | None = None) -> None:
        self.request_count = 0
        self.request_success = 0
        self.request_failure: dict[str, int] = {}
        self._bounds = {name: DURATION_BUCKETS for name in self.DURATIONS}
        self._bounds["tgi_request_input_length"] = linear_buckets(max_input_tokens)
        self._bounds["tgi_request_generated_tokens"] = linear_buckets(max_total_tokens)
        self._bounds["tgi_request_max_new_tokens"] = linear_buckets(max_total_tokens)
        self.histograms: dict[str, Histogram] = {}
        self.stats = stats
        self.max_total_tokens = max_total_tokens

    def observe(self, name: str, value: float) -> None:
        h = self.histograms.get(name)
        if h is None:
            h = self.histograms[name] = Histogram(self._bounds[name])
        h.observe(value)

    def count_request(self) -> None:
        self.request_count += 1

    def success(self) -> None:
        self.request_success += 1

    def failure(self, err: str | None) -> None:
        if err:
            self.request_failure[err] = self.request_failure.get(err, 0) + 1

    def render(self) -> str:
        """Prometheus text exposition of every recorded series."""
        lines: list[str] = []
        if self.request_count:
            lines += ["# TYPE tgi_request_count counter", f"tgi_request_count {self.request_count}"]
        if self.request_success:
            lines += ["# TYPE tgi_request_success counter", f"tgi_request_success {self.request_success}"]
        if self.request_failure:
            lines.append("# TYPE tgi_request_failure counter")
            lines += [f'tgi_request_failure{{err="{k}"}} {v}' for k, v in sorted(self.request_failure.items())]
        if self.stats is not None:
            s = self.stats()
            for name, value in (("tgi_queue_size", s.queue_size), ("tgi_batch_current_size", s.batch_size),
                                ("tgi_batch_current_max_tokens", s.batch_max_tokens)):
                lines += [f"# TYPE {name} gauge", f"{name} {_fmt(value)}"]
            if s.prefix_cache is not None:
                lines += prefix_cache_lines(s.prefix_cache)
        for name in sorted(self.histograms):
            lines += self.histograms[name].render(name)
        return "\n".join(lines) + "\n"
