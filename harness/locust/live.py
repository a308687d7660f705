"""Live, mergeable statistics of a run: HdrHistograms of TTFT/ITL/TPOT/E2E and outcome counts.

Every process keeps a :class:`LiveStats`; a worker ships :meth:`LiveStats.take_delta` (encoded
histograms and counts since the last report, then reset) and the master folds deltas into its own
with :meth:`LiveStats.merge_delta`. Values follow the metric dictionary (harness.metrics): latency
histograms hold ok requests only; TTFT and E2E are measured from the intended start
(``ttft_intended_ms``/``e2e_intended_ms``, equal to the plain metrics in closed loop).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from harness.metrics import (
    PERCENTILE_KEYS,
    PERCENTILES,
    HdrAccumulator,
    e2e_intended_ms,
    output_tokens,
    schedule_lag_ms,
    tool_call_ms,
    tpot_ms,
    ttft_answer_ms,
    ttft_intended_ms,
)
from harness.records import Outcome, RequestRecord

#: histogram name -> label shown in the web UI tab
HISTOGRAMS: dict[str, str] = {"ttft": "TTFT", "itl": "ITL", "tpot": "TPOT", "e2e": "E2E", "lag": "Schedule lag",
                              "ttft_answer": "TTFT, first answer token", "tool_call": "Tool-call completion"}
#: histograms shown only once they hold a value (reasoning and tool-call traffic)
OPTIONAL_HISTOGRAMS = frozenset({"ttft_answer", "tool_call"})

#: per-second bins kept for the web UI's charts (older ones are dropped): 15 minutes
SERIES_KEEP_S = 900
#: log bucket ratio of the per-second latency sketches: percentiles within +-2.5 % (a chart, not a report)
BUCKET_RATIO = 1.05
_LOG_RATIO = math.log(BUCKET_RATIO)
NS_PER_S = 1_000_000_000
_KEY_SPAN = 4096  #: > the largest bucket (1 h in ms: about 540)


#: finished records buffered before :class:`LiveStats` folds them into its histograms and series in
#: one vectorized pass (per record and gap, pure-Python HdrHistogram recording and numpy calls cost
#: about 90 us per 64-token request; folded 32 at a time, about 12 us, in blocks of about 0.35 ms on
#: the event loop); every view folds first
FOLD_RECORDS = 32
#: with ``step_folds`` (the batch left to :meth:`LiveStats.fold_step`), records waiting beyond which
#: :meth:`LiveStats.add` folds at once (memory bound when no step is taken)
STEP_FOLD_LIMIT = 16 * FOLD_RECORDS


def record_us(acc: HdrAccumulator, values: Sequence[int] | np.ndarray) -> None:
    """Record integer microsecond values into ``acc`` at once, as ``acc.record_ms`` would one by one.

    Each value is clamped into the histogram's range; its counts index is hdrh's own formula in
    numpy (``bucket = max(bit_length(v), m) - u - h - 1``, ``index = ((bucket + 1) << h) + (v >> (bucket
    + u)) - 2**h``; ``m`` the bit length of the sub-bucket mask, ``h`` the half-count magnitude, ``u`` the
    unit magnitude), the counts are added to the histogram's counts array in place, and its total,
    min and max are updated as ``record_value`` does. Counts, total, min/max and the encoding equal
    one-by-one recording (tests/locust/test_live_channels.py).
    """
    if not len(values):
        return
    h = acc.h
    v = np.clip(np.asarray(values, dtype=np.int64), acc.LOWEST_US, acc.HIGHEST_US)
    bits = np.frexp(v.astype(np.float64))[1]  # bit_length, exact below 2**53
    um, hm = h.unit_magnitude, h.sub_bucket_half_count_magnitude
    bucket = np.maximum(bits, int(h.sub_bucket_mask).bit_length()) - um - (hm + 1)
    index = ((bucket + 1) << hm) + (v >> (bucket + um)) - h.sub_bucket_half_count
    keys, counts = np.unique(index, return_counts=True)
    if keys[0] < 0 or keys[-1] >= h.counts_len:  # outside the counts array: the library's own path
        for value in v.tolist():
            h.record_value(value)
        return
    np.ctypeslib.as_array(h.counts)[keys] += counts.astype(np.uint64)
    h.total_count += len(v)
    h.min_value = min(h.min_value, int(v.min()))
    h.max_value = max(h.max_value, int(v.max()))


def _flat_tokens(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(all token stamps of ``lists`` in one array, mask over ``np.diff`` of it keeping the gaps within a list)."""
    lens = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(lens.sum()))
    within = np.ones(max(len(flat) - 1, 0), dtype=bool)
    within[np.cumsum(lens)[:-1] - 1] = False  # the gap from one list's last stamp to the next one's first
    return flat, within


def _bucket(ms: float) -> int:
    """Sketch bucket of a latency in ms: ``floor(log(ms / 0.01) / log(1.05))`` (0 for <= 0.01 ms)."""
    return max(0, int(math.log(max(ms, 0.01) / 0.01) / _LOG_RATIO))


def _bucket_ms(b: int) -> float:
    """A bucket's representative value, ms (its geometric middle)."""
    return 0.01 * BUCKET_RATIO ** (b + 0.5)


def sketch_percentile(counts: dict[str, int], p: float) -> float | None:
    """Value at percentile ``p`` (0-100) of a sparse bucket sketch ``{bucket: count}``; None when empty."""
    items = sorted((int(k), n) for k, n in counts.items() if n)
    total = sum(n for _, n in items)
    if not total:
        return None
    rank = max(1, math.ceil(p / 100.0 * total))
    seen = 0
    for b, n in items:
        seen += n
        if seen >= rank:
            return _bucket_ms(b)
    return _bucket_ms(items[-1][0])


def _new_bin() -> dict[str, Any]:
    return {"ttft": Counter(), "itl": Counter(), "tokens": 0.0, "attempted": 0, "overloaded": 0, "busy_ns": 0}


class LiveSeries:
    """Per-second bins of a run for the web UI's charts, mergeable like :class:`LiveStats`.

    Bins are seconds of the records' clock (monotonic ns). What goes where, as in the report's time
    series (harness.analysis.timeseries): TTFT (from the intended start, ok requests), attempted and
    overloaded by the second of the send; every ITL gap by the second of its later token; output
    tokens by token arrival (a request's :func:`~harness.metrics.output_tokens` split equally over its
    token events); in flight = the seconds each request spent in ``[send, end]`` overlapping the bin
    (time-averaged concurrency). A record arrives when its request ends, so the last seconds fill in
    as requests finish. Latencies are kept as sparse log-bucket sketches (ratio 1.05).
    """

    def __init__(self) -> None:
        self.bins: dict[int, dict[str, Any]] = {}

    def add(self, r: RequestRecord) -> None:
        """Account one finished record (:meth:`add_many` of one)."""
        self.add_many([r])

    def add_many(self, records: Sequence[RequestRecord],
                 flat: tuple[list[RequestRecord], np.ndarray, np.ndarray] | None = None) -> None:
        """Account finished records; token counts and gaps of all of them in one vectorized pass.

        ``flat``: ``(ok records with tokens, _flat_tokens of their token_ns)`` when the caller has it.
        """
        if flat is None:
            ok = [r for r in records if r.outcome == Outcome.OK and r.token_ns and r.send_ns is not None]
            flat = (ok, *_flat_tokens([r.token_ns for r in ok])) if ok else ([], np.zeros(0, np.int64),
                                                                             np.zeros(0, bool))
        self.add_requests(records)
        self.add_tokens(flat)

    def add_requests(self, records: Sequence[RequestRecord]) -> None:
        """The per-request part of :meth:`add_many`: attempted, overloaded, in flight, TTFT."""
        for r in records:
            if r.send_ns is None or r.outcome == Outcome.DROPPED:
                continue
            b = self._bin(r.send_ns // NS_PER_S)
            b["attempted"] += 1
            if r.outcome == Outcome.OVERLOADED:
                b["overloaded"] += 1
            if r.end_ns is not None and r.end_ns > r.send_ns:
                s, e = r.send_ns, r.end_ns
                for sec in range(s // NS_PER_S, e // NS_PER_S + 1):
                    lo, hi = max(s, sec * NS_PER_S), min(e, (sec + 1) * NS_PER_S)
                    if hi > lo:
                        self._bin(sec)["busy_ns"] += hi - lo
            if r.outcome == Outcome.OK and r.token_ns:
                ttft = ttft_intended_ms(r)
                if ttft is not None:
                    b["ttft"][str(_bucket(ttft))] += 1

    def add_tokens(self, flat: tuple[list[RequestRecord], np.ndarray, np.ndarray]) -> None:
        """The per-token part of :meth:`add_many` (``flat`` as there): output tokens and ITL gaps."""
        ok, t, within = flat
        if not ok:
            return
        # output tokens by arrival: each request's output_tokens split equally over its token events
        lens = np.fromiter((len(r.token_ns) for r in ok), dtype=np.int64, count=len(ok))
        shares = np.fromiter((output_tokens(r) for r in ok), dtype=np.float64, count=len(ok)) / lens
        secs = t // NS_PER_S
        uniq, inverse = np.unique(secs, return_inverse=True)
        for sec, n in zip(uniq.tolist(), np.bincount(inverse, weights=np.repeat(shares, lens)).tolist(), strict=True):
            self._bin(sec)["tokens"] += n
        if within.any():  # gaps by the second of their later token, as (second, bucket) pairs counted at once
            gaps_ms = np.maximum(np.diff(t)[within] / 1e6, 0.01)
            buckets = np.maximum(0, (np.log(gaps_ms / 0.01) / _LOG_RATIO).astype(np.int64))
            keys, counts = np.unique(secs[1:][within] * _KEY_SPAN + buckets, return_counts=True)
            for key, n in zip(keys.tolist(), counts.tolist(), strict=True):
                self._bin(key // _KEY_SPAN)["itl"][str(key % _KEY_SPAN)] += n

    def _bin(self, sec: int) -> dict[str, Any]:
        b = self.bins.get(sec)
        if b is None:
            b = self.bins[sec] = _new_bin()
            if len(self.bins) > SERIES_KEEP_S:
                for old in sorted(self.bins)[: len(self.bins) - SERIES_KEEP_S]:
                    del self.bins[old]
        return b

    def merge(self, encoded: dict[str, dict[str, Any]]) -> None:
        """Fold :meth:`encode`'s output (another process's bins) into these."""
        for sec, other in encoded.items():
            b = self._bin(int(sec))
            for k in ("ttft", "itl"):
                b[k].update(other.get(k) or {})
            for k in ("tokens", "attempted", "overloaded", "busy_ns"):
                b[k] += other.get(k) or 0

    def encode(self) -> dict[str, dict[str, Any]]:
        """The bins with string keys (msgpack/JSON safe)."""
        return {str(sec): {**b, "ttft": dict(b["ttft"]), "itl": dict(b["itl"])} for sec, b in self.bins.items()}

    def view(self, until_s: int | None = None) -> dict[str, list]:
        """The chart series, one value per second from the first bin to the last (None where empty):
        ``t_s`` (s since the first bin), ``ttft_p50_ms``, ``ttft_p99_ms``, ``itl_p99_ms``,
        ``output_tokens_per_s``, ``overload_rate`` (overloaded / attempted, fraction), ``in_flight``.
        ``until_s``: leave out bins after this second (still filling while their requests run)."""
        out: dict[str, list] = {k: [] for k in ("t_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p99_ms",
                                                 "output_tokens_per_s", "overload_rate", "in_flight")}
        if not self.bins:
            return out
        first, last = min(self.bins), max(self.bins)
        if until_s is not None:
            last = min(last, until_s)
        empty = _new_bin()
        for sec in range(first, last + 1):
            b = self.bins.get(sec, empty)
            out["t_s"].append(sec - first)
            out["ttft_p50_ms"].append(sketch_percentile(b["ttft"], 50.0))
            out["ttft_p99_ms"].append(sketch_percentile(b["ttft"], 99.0))
            out["itl_p99_ms"].append(sketch_percentile(b["itl"], 99.0))
            out["output_tokens_per_s"].append(round(b["tokens"], 2))
            out["overload_rate"].append(round(b["overloaded"] / b["attempted"], 4) if b["attempted"] else None)
            out["in_flight"].append(round(b["busy_ns"] / NS_PER_S, 3))
        return out


class LiveStats:
    """Histograms (ms, 3 significant digits) and outcome counts; thread/greenlet safe."""

    def __init__(self) -> None:
        self.hist: dict[str, HdrAccumulator] = {k: HdrAccumulator() for k in HISTOGRAMS}
        self.outcomes: Counter[str] = Counter()
        self.output_tokens = 0
        self.series = LiveSeries()
        self._lock = threading.Lock()
        self._pending: list[RequestRecord] = []  #: added, not yet folded (see FOLD_RECORDS)
        #: :meth:`fold_step` callers: :meth:`add` leaves full batches to them (up to STEP_FOLD_LIMIT records)
        self.step_folds = False
        self._stepping: Iterator[None] | None = None  #: the batch being folded by fold_step

    def add(self, r: RequestRecord) -> None:
        """Account one finished record (folded with the next :data:`FOLD_RECORDS` - 1, or at the next view;
        with :attr:`step_folds`, by :meth:`fold_step` calls)."""
        with self._lock:
            self._pending.append(r)
            if len(self._pending) >= (STEP_FOLD_LIMIT if self.step_folds else FOLD_RECORDS):
                self._fold()

    @property
    def folding(self) -> bool:
        """True while :meth:`fold_step` has work: a batch in progress or :data:`FOLD_RECORDS` waiting."""
        return self._stepping is not None or len(self._pending) >= FOLD_RECORDS

    def fold_step(self) -> None:
        """One step of folding the waiting batch (a step is one part of :meth:`fold`: the per-request
        values, the gaps, one histogram, the series' requests or its tokens; about 0.05-0.3 ms, where
        the whole fold of 32 records held an event loop for about 0.9 ms in a Locust process)."""
        with self._lock:
            if self._stepping is None:
                if len(self._pending) < FOLD_RECORDS:
                    return
                recs, self._pending = self._pending, []
                self._stepping = self._fold_stages(recs)
            if next(self._stepping, StopIteration) is StopIteration:
                self._stepping = None

    def fold(self) -> None:
        """Fold the buffered records into the histograms, counts and series now."""
        with self._lock:
            self._fold()

    def _fold(self) -> None:
        """:meth:`fold` with the lock held (a batch in progress by :meth:`fold_step` is finished first)."""
        stepping, self._stepping = self._stepping, None
        if stepping is not None:
            for _ in stepping:
                pass
        recs, self._pending = self._pending, []
        if recs:
            for _ in self._fold_stages(recs):
                pass

    def _fold_stages(self, recs: list[RequestRecord]) -> Iterator[None]:
        """Fold ``recs``, yielding between the parts (each part is applied whole; callers hold the lock).
        Values as ``HdrAccumulator.record_ms`` rounds them; ITL: every gap of an ok request's
        ``token_ns`` in us, ``(cur - prev + 500) // 1000`` (harness.metrics.itl_ms)."""
        us: dict[str, list[int]] = {k: [] for k in HISTOGRAMS}
        ok: list[RequestRecord] = []
        for r in recs:
            self.outcomes[r.outcome] += 1
            lag = schedule_lag_ms(r)
            if lag is not None:
                us["lag"].append(int(max(lag, 0.0) * 1000.0 + 0.5))
            if r.outcome != Outcome.OK:
                continue
            self.output_tokens += output_tokens(r)
            # the channel metrics only where a stream had reasoning or tool calls (else they equal TTFT)
            for name, value in (("ttft", ttft_intended_ms(r)), ("tpot", tpot_ms(r)), ("e2e", e2e_intended_ms(r)),
                                ("ttft_answer", ttft_answer_ms(r) if r.first_reasoning_ns is not None else None),
                                ("tool_call", tool_call_ms(r))):
                if value is not None:
                    us[name].append(int(value * 1000.0 + 0.5))
            if r.token_ns and r.send_ns is not None:
                ok.append(r)
        yield
        with_tokens = [r for r in recs if r.outcome == Outcome.OK and r.token_ns]
        flat = None
        if with_tokens:
            t, within = _flat_tokens([r.token_ns for r in with_tokens])
            us["itl"] = (np.diff(t)[within] + 500) // 1000
            if len(ok) == len(with_tokens):  # the series' records (a send stamp) are the same: share the arrays
                flat = (ok, t, within)
        if flat is None:
            flat = (ok, *_flat_tokens([r.token_ns for r in ok])) if ok else ([], np.zeros(0, np.int64),
                                                                             np.zeros(0, bool))
        for name, values in us.items():
            if len(values):
                yield
                record_us(self.hist[name], values)
        yield
        self.series.add_requests(recs)
        yield
        self.series.add_tokens(flat)

    def take_delta(self) -> dict[str, Any]:
        """Everything since the last call, encoded for msgpack; resets this object."""
        with self._lock:
            self._fold()
            delta = {
                "hist": {k: h.encode() for k, h in self.hist.items() if h.count},
                "outcomes": dict(self.outcomes),
                "output_tokens": self.output_tokens,
                "series": self.series.encode(),
            }
            for h in self.hist.values():
                h.reset()
            self.outcomes.clear()
            self.output_tokens = 0
            self.series = LiveSeries()
        return delta

    def merge_delta(self, delta: dict[str, Any]) -> None:
        """Fold a worker's :meth:`take_delta` into this object."""
        with self._lock:
            self._fold()
            for k, enc in (delta.get("hist") or {}).items():
                if k in self.hist:
                    self.hist[k].merge_encoded(enc)
            self.outcomes.update(delta.get("outcomes") or {})
            self.output_tokens += int(delta.get("output_tokens") or 0)
            self.series.merge(delta.get("series") or {})

    # ----------------------------------------------------------------- views

    @property
    def attempted(self) -> int:
        """Attempted requests: all outcomes except dropped (harness.metrics.attempted, over counts)."""
        self.fold()
        return sum(v for k, v in self.outcomes.items() if k != Outcome.DROPPED)

    def overload_rate(self) -> float:
        """overloaded / attempted (harness.metrics.overload_rate), 0 when nothing was attempted."""
        n = self.attempted
        return self.outcomes.get(Outcome.OVERLOADED, 0) / n if n else 0.0

    def latency_rows(self) -> list[dict[str, Any]]:
        """One row per histogram: count, mean, min, max and the percentiles, ms (rounded to 0.01)."""
        self.fold()
        rows = []
        for k, label in HISTOGRAMS.items():
            s = self.hist[k].summary_ms()
            if k in OPTIONAL_HISTOGRAMS and not s.get("count"):
                continue
            row: dict[str, Any] = {"metric": label, "count": s.get("count", 0)}
            for stat in ("mean", "min", *(PERCENTILE_KEYS[p] for p in PERCENTILES), "max"):
                v = s.get(stat)
                row[stat] = round(float(v), 2) if v is not None else ""
            rows.append(row)
        return rows

    def outcome_rows(self) -> list[dict[str, Any]]:
        """One row per outcome class with its count and share of attempted requests (fraction), then
        ``attempted`` (the total the shares divide) and ``overload rate`` (a rate, no count of its own)."""
        n = self.attempted
        rows = []
        for o in Outcome:
            c = self.outcomes.get(o.value, 0)
            share = c / n if n and o != Outcome.DROPPED else ""
            rows.append({"outcome": o.value, "count": c, "rate": round(share, 4) if share != "" else ""})
        rows.append({"outcome": "attempted", "count": n, "rate": 1.0 if n else ""})
        rows.append({"outcome": "overload rate", "count": "", "rate": round(self.overload_rate(), 4)})
        return rows

    def series_view(self, now_ns: int | None = None) -> dict[str, list]:
        """:meth:`LiveSeries.view` of this run. With ``now_ns`` (the records' clock, while the test runs)
        the seconds whose requests may still be running are left out: those after
        ``now - (E2E p99 + 1 s)``; none are left out when ``now_ns`` is not near the bins (other clock)."""
        with self._lock:
            self._fold()
            until = None
            if now_ns is not None and self.series.bins:
                settle_s = math.ceil(self.hist["e2e"].percentile_ms(99.0) / 1000.0) + 1
                now_s = now_ns // NS_PER_S
                if -60 <= now_s - max(self.series.bins) <= 3600:
                    until = now_s - settle_s
            view = self.series.view(until)
            view["settle_s"] = [] if until is None else [now_ns // NS_PER_S - until]
            return view
