"""The calibrated load limit per worker, and the check that stamps a run "client-bound" against it.

``harness calibrate`` installs its result at :func:`default_path`:
``$HARNESS_CALIBRATION`` when set (a file path; ``off`` disables the check), else
``$XDG_CACHE_HOME/stream-harness/calibration.json`` (``~/.cache/...`` without XDG_CACHE_HOME).

A run is client-bound by calibration when any load-generating process (records' ``worker``) exceeded
the limit (calibration.json ``limit``):
- token events/s: the busiest :data:`WINDOW_S` window of that worker (each request's events
  counted in the window of its middle token), above ``limit.tokens_per_s``;
- concurrent streams: the peak number of that worker's requests between send and end, above
  ``limit.streams``.
When the calibration found no level within its budget, every run with records is stamped.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.records import RequestRecord

logger = logging.getLogger("harness.calibration")

ENV = "HARNESS_CALIBRATION"
FILE = "calibration.json"
WINDOW_S = 5.0


def default_path() -> Path | None:
    """Where runs look for calibration.json (module docstring); None when ``$HARNESS_CALIBRATION=off``."""
    env = os.environ.get(ENV, "").strip()
    if env.lower() in ("off", "none", "0"):
        return None
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "stream-harness" / FILE


@dataclass(frozen=True)
class Limit:
    """The calibrated per-worker limit; ``streams``/``tokens_per_s`` None when no level passed."""

    streams: int | None
    tokens_per_s: float | None
    budget_ms: float
    path: str


def load_limit(path: str | os.PathLike[str] | None = None) -> Limit | None:
    """The limit in ``path`` (default :func:`default_path`); None when there is no calibration.

    ValueError with the path when the file exists but is not a calibration.json.
    """
    p = Path(path) if path is not None else default_path()
    if p is None or not p.exists():
        return None
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        budget = float(doc["budget_ms"])
        lim = doc["limit"]
        if lim is None:
            return Limit(None, None, budget, str(p))
        return Limit(int(lim["streams"]), float(lim["tokens_per_s"]), budget, str(p))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{p}: not a readable calibration.json ({exc})") from None


@dataclass(frozen=True)
class WorkerLoad:
    """One worker's load: peak token events/s (busiest window) and peak concurrent streams."""

    tokens_per_s: float
    streams: int


def worker_loads(records: Iterable[RequestRecord], window_s: float = WINDOW_S) -> dict[str, WorkerLoad]:
    """Per worker (``record.worker``): see the module docstring for both formulas."""
    buckets: dict[str, Counter] = defaultdict(Counter)
    spans: dict[str, list[int]] = {}
    edges: dict[str, list[tuple[int, int]]] = defaultdict(list)
    w_ns = int(window_s * 1e9)
    for r in records:
        w = r.worker or "local"
        if r.token_ns:
            buckets[w][r.token_ns[len(r.token_ns) // 2] // w_ns] += len(r.token_ns)
            lo, hi = r.token_ns[0], r.token_ns[-1]
            span = spans.setdefault(w, [lo, hi])
            span[0], span[1] = min(span[0], lo), max(span[1], hi)
        if r.send_ns is not None:
            edges[w].append((r.send_ns, 1))
            edges[w].append((r.end_ns if r.end_ns is not None else r.send_ns, -1))
    out = {}
    for w in set(buckets) | set(edges):
        span_s = (spans[w][1] - spans[w][0]) / 1e9 if w in spans else 0.0
        per_window = max(buckets[w].values(), default=0)
        rate = per_window / max(min(window_s, span_s), 1.0) if per_window else 0.0
        running = peak = 0
        for _, step in sorted(edges[w], key=lambda e: (e[0], e[1])):  # an end before a send at the same ns
            running += step
            peak = max(peak, running)
        out[w] = WorkerLoad(rate, peak)
    return out


def client_bound_reasons(records: Iterable[RequestRecord], limit: Limit | None) -> list[str]:
    """Reasons a run exceeded its calibrated limit ([] when within it or without a calibration)."""
    if limit is None:
        return []
    loads = worker_loads(records)
    if not loads:
        return []
    if limit.streams is None or limit.tokens_per_s is None:
        return [f"calibration {limit.path} found no load within its {limit.budget_ms:g} ms budget on this machine"]
    out = []
    for w, load in sorted(loads.items()):
        if load.tokens_per_s > limit.tokens_per_s:
            out.append(f"{w}: {load.tokens_per_s:.0f} token events/s > calibrated limit {limit.tokens_per_s:.0f} "
                       f"(p99 error {limit.budget_ms:g} ms, {limit.path})")
        if load.streams > limit.streams:
            out.append(f"{w}: {load.streams} concurrent streams > calibrated limit {limit.streams} "
                       f"(p99 error {limit.budget_ms:g} ms, {limit.path})")
    return out


def check_run(records: Iterable[RequestRecord], path: str | os.PathLike[str] | None = None) -> list[str]:
    """:func:`client_bound_reasons` with the installed calibration (an unreadable file: a warning, [])."""
    try:
        limit = load_limit(path)
    except ValueError as exc:
        logger.warning("stream-harness: calibration ignored: %s", exc)
        return []
    return client_bound_reasons(records, limit)
