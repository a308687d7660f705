"""Per-second time series of a run (x = seconds since the first send), through the metric dictionary.

Bins are 1 s wide. Requests count in the bin of their send (sent, TTFT percentiles, overload rate)
or of their end (completed); in-flight is the time-averaged concurrency of
:func:`harness.analysis.steady.concurrency_per_bin`. Per-bin rates call the dictionary's run
functions on the records of the bin with a 1 s window.

Output tokens/s counts tokens in the second they arrived, not when their request ended (which
piles a whole request's tokens into one bin): each ok request's output tokens
(:func:`harness.metrics.output_tokens`, server-reported when known) are split in equal shares over
its token events, and each share counts in its event's bin. Event times are rebuilt from the frame:
``first_token_ns`` and then ``first_token_ns + cumsum(itl gaps)``. The series sums to the same
total as bucketing by end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness import metrics as m
from harness.analysis.frame import RunFrame
from harness.analysis.steady import concurrency_per_bin


@dataclass
class TimeSeries:
    t_s: np.ndarray  #: bin start, s since t0
    t0_ns: int
    sent: np.ndarray
    completed: np.ndarray  #: ok requests ended in the bin
    failed: np.ndarray  #: non-ok, non-dropped requests ended in the bin
    in_flight: np.ndarray
    output_tokens_per_s: np.ndarray  #: by token event time (see the module docstring)
    ttft_p50_ms: np.ndarray  #: NaN where no ok request was sent in the bin
    ttft_p99_ms: np.ndarray
    overload_rate: np.ndarray


def _group(bins: np.ndarray, n: int) -> list[np.ndarray]:
    """Row indices per bin (rows with bin < 0 or >= n are left out)."""
    order = np.argsort(bins, kind="stable")
    sb = bins[order]
    edges = np.searchsorted(sb, np.arange(n + 1))
    return [order[edges[k]:edges[k + 1]] for k in range(n)]


def tokens_by_event_time(frame: RunFrame, t0_ns: int, n: int, bin_ns: int = m.NS_PER_S) -> np.ndarray:
    """Output tokens of ok requests per ``bin_ns`` bin from ``t0_ns`` (``n`` bins), by token event time.

    A request with ``k`` token events and ``T`` output tokens adds ``T / k`` to the bin of each event."""
    c = frame.cols
    ok = (c["ok"] == 1) & (c["n_events"] > 0) & (c["first_token_ns"] >= 0)
    share = np.zeros(len(c["ok"]))
    share[ok] = c["output_tokens"][ok] / c["n_events"][ok]
    times = [c["first_token_ns"][ok].astype(np.float64)]
    weights = [share[ok]]
    gr = frame.gap_row
    if len(gr):
        gaps_ns = np.cumsum(frame.gaps["itl"] * m.NS_PER_MS)
        start = np.searchsorted(gr, gr, side="left")  # first gap of each gap's request
        before = np.concatenate(([0.0], gaps_ns))[start]
        times.append(c["first_token_ns"][gr] + (gaps_ns - before))
        weights.append(share[gr])
    t = np.concatenate(times)
    b = np.floor((t - t0_ns) / bin_ns).astype(np.int64)
    keep = (b >= 0) & (b < n)
    return np.bincount(b[keep], weights=np.concatenate(weights)[keep], minlength=n)[:n].astype(np.float64)


def per_second(frame: RunFrame) -> TimeSeries | None:
    """The run's per-second series; None when no request was sent."""
    c = frame.cols
    send, end = c["send_ns"], c["end_ns"]
    has = send >= 0
    if not has.any():
        return None
    t0 = int(send[has].min())
    t_end = int(max(end.max(), send.max()))
    n = int((t_end - t0) // m.NS_PER_S) + 1
    sbin = np.where(has, (send - t0) // m.NS_PER_S, -1)
    ebin = np.where(end >= 0, (end - t0) // m.NS_PER_S, -1)
    ok = c["ok"]
    dropped = c["outcome"] == list(m.Outcome).index(m.Outcome.DROPPED)
    sent = np.bincount(sbin[has & ~dropped], minlength=n)[:n]
    completed = np.bincount(ebin[ok & (ebin >= 0)], minlength=n)[:n]
    failed = np.bincount(ebin[~ok & ~dropped & (ebin >= 0)], minlength=n)[:n]
    live = has & (end >= 0) & ~dropped
    in_flight = concurrency_per_bin(send[live], end[live], t0, n)
    recs = frame.records
    tok = tokens_by_event_time(frame, t0, n)
    over = np.full(n, np.nan)
    p50 = np.full(n, np.nan)
    p99 = np.full(n, np.nan)
    ttft = c["ttft"]
    for k, rows in enumerate(_group(sbin, n)):
        if not len(rows):
            continue
        over[k] = m.overload_rate([recs[i] for i in rows.tolist()])
        v = ttft[rows[ok[rows]]]
        v = np.sort(v[~np.isnan(v)])
        if len(v):
            p50[k], p99[k] = m.percentile(v, 50.0), m.percentile(v, 99.0)
    return TimeSeries(np.arange(n, dtype=np.float64), t0, sent, completed, failed, in_flight, tok, p50, p99, over)
