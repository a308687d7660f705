"""Steady-state window detection: warm-up and drain are excluded from headline numbers.

The rule (documented in docs/reports.md):

1. Cut the run into 1 s bins from the first send to the last end. For every bin compute the
   *time-averaged concurrency* ``c[k]``: the total time attempted requests spent in flight during
   the bin (overlap of ``[send_ns, end_ns)`` with the bin), divided by 1 s.
2. The plateau level ``L`` is the median of ``c`` over the bins in which load was offered (from the
   first to the last send).
3. The steady window starts at the first bin with ``c >= 0.8 * L`` (the load has ramped up: users
   spawned, queues filled) and ends at the end of the last bin with ``c >= 0.8 * L`` that begins
   before the last send (after that the run drains: users stop, in-flight requests finish or are
   cancelled). ``min_warmup_s`` additionally skips a fixed warm-up from the first send.
   Requests the harness cancelled at the end of the run never had the chance to finish: the window
   also ends at the earliest send among them, so they do not count as failures.
4. Fallback: when that window is shorter than 3 s or than 25 % of the run, the whole run is used
   and ``detected`` is False.

A request belongs to the window when it was *sent* inside it (``start_ns <= send_ns < end_ns``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from harness.metrics import NS_PER_S

THRESHOLD = 0.8
MIN_WINDOW_S = 3.0
MIN_FRACTION = 0.25


@dataclass(frozen=True)
class SteadyWindow:
    start_ns: int
    end_ns: int
    detected: bool  #: False when the fallback (whole run) was used
    plateau_concurrency: float  #: the plateau level L, requests in flight
    reason: str

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / NS_PER_S

    def as_tuple(self) -> tuple[int, int]:
        return (self.start_ns, self.end_ns)

    def to_dict(self) -> dict:
        return {**asdict(self), "duration_s": self.duration_s}


def concurrency_per_bin(send_ns: np.ndarray, end_ns: np.ndarray, t0_ns: int, n_bins: int,
                        bin_ns: int = NS_PER_S) -> np.ndarray:
    """Time-averaged requests in flight per bin: sum of overlaps of ``[send, end)`` with the bin / bin width."""
    if n_bins <= 0:
        return np.zeros(0)
    s = (send_ns - t0_ns).astype(np.float64)
    s /= bin_ns
    e = (end_ns - t0_ns).astype(np.float64)
    e /= bin_ns
    np.maximum(e, s, out=e)
    # integral of the in-flight step function: F(x) = sum over requests of clip(x - s, 0, e - s);
    # c[k] = F(k + 1) - F(k), computed with sorted starts/ends and cumulative sums.
    edges = np.arange(n_bins + 1, dtype=np.float64)
    s.sort()
    e.sort()
    # sorted and summed in place (a 10-million-request run holds no further copies):
    # cs[k] = sum of the k smallest starts = cumsum(sorted s)[k - 1], 0 for k = 0
    ks = np.searchsorted(s, edges, side="right")
    ke = np.searchsorted(e, edges, side="right")
    np.cumsum(s, out=s)
    np.cumsum(e, out=e)
    cs_k = np.where(ks > 0, s[np.maximum(ks - 1, 0)], 0.0) if len(s) else np.zeros(len(ks))
    ce_k = np.where(ke > 0, e[np.maximum(ke - 1, 0)], 0.0) if len(e) else np.zeros(len(ke))
    started = ks * edges - cs_k  # sum over started requests of (x - s)
    ended = ke * edges - ce_k  # sum over ended requests of (x - e)
    area = started - ended
    return np.diff(area)


def detect(send_ns: np.ndarray, end_ns: np.ndarray, min_warmup_s: float = 0.0,
           cancelled_send_ns: np.ndarray | None = None) -> SteadyWindow | None:
    """The steady window of a run from its attempted requests' send and end times (ns); None if empty.

    ``cancelled_send_ns``: send times of the requests the harness cancelled (end of run).
    """
    ok = (send_ns >= 0) & (end_ns >= 0)
    if not ok.all():
        send_ns, end_ns = send_ns[ok], end_ns[ok]
    if len(send_ns) == 0:
        return None
    t0, t_end = int(send_ns.min()), int(end_ns.max())
    last_send = int(send_ns.max())
    whole = (t0, t_end + 1)
    n_bins = int(np.ceil((t_end - t0) / NS_PER_S)) or 1
    c = concurrency_per_bin(send_ns, end_ns, t0, n_bins)
    offered = c[: max(1, int((last_send - t0) // NS_PER_S) + 1)]
    level = float(np.median(offered)) if len(offered) else 0.0
    if level <= 0:
        return SteadyWindow(*whole, False, level, "no load plateau; whole run used")
    above = np.flatnonzero(c >= THRESHOLD * level)
    first = int(above[0])
    last_ok = above[t0 + above * NS_PER_S <= last_send]
    last = int(last_ok[-1]) if len(last_ok) else int(above[-1])
    start = max(t0 + first * NS_PER_S, t0 + int(min_warmup_s * NS_PER_S))
    end = min(t0 + (last + 1) * NS_PER_S, t_end + 1)
    cut = ""
    if cancelled_send_ns is not None:
        late = cancelled_send_ns[cancelled_send_ns > start]
        if len(late) and int(late.min()) < end:
            end = int(late.min())
            cut = "; ends at the first request cancelled by the end of the run"
    run_s = (t_end - t0) / NS_PER_S
    dur = (end - start) / NS_PER_S
    if dur < MIN_WINDOW_S or dur < MIN_FRACTION * run_s:
        return SteadyWindow(*whole, False, level,
                            f"steady window of {dur:.1f} s of {run_s:.1f} s too short; whole run used")
    return SteadyWindow(start, end, True, level,
                        f"in flight >= {THRESHOLD:.0%} of plateau {level:.2f} from "
                        f"{(start - t0) / NS_PER_S:.1f} s to {(end - t0) / NS_PER_S:.1f} s{cut}")
