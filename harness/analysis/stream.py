"""Large runs: the records file read in chunks by worker processes, reduced to what fits in memory.

``harness report`` reads a records file above :data:`STREAM_MIN_BYTES` this way (smaller ones through
:func:`harness.analysis.frame.load_frame`, which keeps every value). Worker processes (one per core)
each parse a byte range of :data:`CHUNK_BYTES` with pyarrow and compute the frame's per-request
columns with :mod:`harness.analysis.columns` (the dictionary's formulas, bit-identical), then return
only:

- per request: send and end time, outcome and TTFT (and the session turn and cached share when a run
  has them), about 25 bytes a request: the steady window, the per-second series, the timeline and every
  TTFT figure come from these, exactly;
- the other latency and token distributions as exact values while the run's estimated values fit in
  :data:`EXACT_BUDGET_BYTES` (request metrics first, then the inter-token gaps), else as an
  HdrHistogram of the chunk (:mod:`harness.analysis.hdr`: 3 significant digits, the live view's
  histogram) with the exact count, sum, min and max;
- sums and counts for the run metrics and token accounting, failure-cause counts, output tokens per
  10 ms of token arrival, and an evenly spread sample of whole rows (:data:`SAMPLE_ROWS`) for the
  token-agreement plot and the plots registered by users.

Per-chunk figures cover every request of the chunk; once the steady window is known (from the
per-request times, as for a small run), chunks wholly inside it count whole, chunks outside it not at
all, and the few chunks whose requests straddle a window edge are read again and counted request by
request, so every count, sum and histogram covers exactly the window's requests. Run metrics come from
those sums by the dictionary's formulas (:data:`RUN_FORMULAS`; a run metric registered without one is
reported as None and listed under ``percentiles.not_computed``). Summary keys are those of a small
run's summary, plus ``percentiles``: the method of each distribution (``exact`` or ``hdr``).

Memory: per request about 25 bytes in the report process, plus the exact values kept (at most the
budget), plus a chunk per worker; CPU: about 5 s per GB of JSONL for the parse.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import metrics as m
from harness.analysis import hdr
from harness.analysis.frame import GAP_METRICS, OUTCOMES, REQUEST_METRICS, RunFrame
from harness.analysis.steady import SteadyWindow, concurrency_per_bin, detect
from harness.analysis.timeseries import TimeSeries

STREAM_MIN_BYTES = 256 * 1024 * 1024  #: records files larger than this are read in chunks (harness report)
CHUNK_BYTES = 32 * 1024 * 1024  #: bytes of JSONL per worker task
EXACT_BUDGET_BYTES = 400 * 1024 * 1024  #: exact values kept for percentiles, at most (estimated up front)
SAMPLE_ROWS = 20_000  #: rows kept whole for the token-agreement and user-registered plots
TOKEN_BIN_NS = 10 * m.NS_PER_MS  #: resolution of output tokens by arrival time before per-second binning
#: distributions besides the request metrics (ok requests), with their units
TOKEN_DISTS = (("output_tokens", "tokens"), ("input_tokens", "tokens"))
_OK = OUTCOMES.index(m.Outcome.OK.value)
_DROPPED = OUTCOMES.index(m.Outcome.DROPPED.value)
_CANCELLED = OUTCOMES.index(m.Outcome.CANCELLED.value)
_OVERLOADED = OUTCOMES.index(m.Outcome.OVERLOADED.value)
_NOT_JUDGED = [OUTCOMES.index(o) for o in m.NOT_JUDGED]


@dataclass(frozen=True)
class Config:
    path: str
    slo: m.Slo | None
    exact_rows: bool  #: request metrics kept as exact values
    exact_gaps: bool  #: inter-token gaps kept as exact values
    sample_every: int
    token_origin_ns: int


@dataclass
class Agg:
    """Mergeable sums of a set of requests (a chunk, or a chunk's requests inside the window)."""

    sums: Counter = field(default_factory=Counter)  #: run-metric and token-accounting sums (ints)
    stats: dict[str, list] = field(default_factory=dict)  #: dist name -> [count, sum, min, max]
    hdr: dict[str, list] = field(default_factory=dict)  #: dist name -> [(indexes, counts), ...]
    causes: Counter = field(default_factory=Counter)  #: failure key -> failed requests
    pt_differs: bool = False  #: some gap's per-token ITL differs from its ITL (bundled events)

    def add(self, o: Agg) -> None:
        self.sums.update(o.sums)
        self.causes.update(o.causes)
        self.pt_differs |= o.pt_differs
        for k, (c, s, lo, hi) in o.stats.items():
            cur = self.stats.get(k)
            self.stats[k] = [c, s, lo, hi] if cur is None else [cur[0] + c, cur[1] + s, min(cur[2], lo),
                                                                  max(cur[3], hi)]
        for k, parts in o.hdr.items():
            self.hdr.setdefault(k, []).extend(parts)


@dataclass
class Part:
    """What a worker returns for one byte range."""

    start: int
    end: int
    n: int
    send_ns: np.ndarray
    end_ns: np.ndarray
    outcome: np.ndarray
    ttft: np.ndarray
    turn: np.ndarray | None
    cached_share: np.ndarray | None
    exact: dict[str, np.ndarray | None]  #: per-row values (NaN = none; None = all NaN) when exact
    gaps: dict[str, np.ndarray] | None  #: ok rows' gaps (itl; itl_per_token only when it differs)
    gap_n: np.ndarray | None  #: gaps per row
    agg: Agg
    tokens: tuple[int, np.ndarray]  #: (first 10 ms bin since the origin, output tokens per bin)
    sample: tuple[dict, dict, np.ndarray] | None  #: (cols, gaps, gap_row) of sampled rows

    @property
    def send_range(self) -> tuple[int, int, bool]:
        s = self.send_ns[self.send_ns >= 0]
        return (int(s.min()), int(s.max()), len(s) < self.n) if len(s) else (0, -1, True)


# ----------------------------------------------------------------------------- workers


def read_range(path: str, start: int, end: int) -> bytes:
    """The whole lines that begin in ``[start, end)`` of a file."""
    with open(path, "rb") as fh:
        if start > 0:
            fh.seek(start - 1)
            fh.readline()  # the line straddling start belongs to the previous range
        pos = fh.tell()
        if pos >= end:
            return b""
        fh.seek(end - 1)
        fh.readline()  # the line straddling end belongs to this range: find where it ends
        stop = fh.tell()
        fh.seek(pos)
        return fh.read(stop - pos)


_KEYS: dict[tuple[str, str | None], str] = {}


def _aggregate(c, mask: np.ndarray | None, cfg: Config, error_text) -> Agg:  # c: columns.Columns
    from harness.analysis.failures import failure_key

    cols, b = c.cols, c.block
    if mask is None:
        mask = np.ones(b.n, dtype=bool)
    a = Agg()
    ok = cols["ok"] & mask
    oc = cols["outcome"][mask]
    s = a.sums
    for i, v in enumerate(np.bincount(oc, minlength=len(OUTCOMES)).tolist()):
        s[f"outcome.{OUTCOMES[i]}"] += v
    s["rows"] += int(mask.sum())
    out_tok = cols["output_tokens"][ok]
    s["output_total"] += int(out_tok.sum())
    for key, col in (("output_server_total", "output_tokens_server"), ("output_events_total", "output_tokens_events"),
                     ("output_retokenized_total", "output_tokens_retokenized"), ("input_total", "input_tokens")):
        s[key] += int(np.nansum(cols[col][ok]))
    mism = cols["token_mismatch"][ok]
    s["compared"] += int((~np.isnan(mism)).sum())
    s["mismatched"] += int(np.nansum(mism))
    s["slo_met"] += int((cols["slo_met"] & mask).sum())
    s["done_missing"] += int((ok & b.done_missing).sum())
    reas = cols["reasoning_tokens"][ok]
    s["reasoning_ok"] += int(np.nansum(reas))
    s["events_ok"] += int(cols["output_tokens_events"][ok].sum())
    cached = cols["cached_tokens"]
    rep = ok & ~np.isnan(cached)
    s["cache_rep"] += int(rep.sum())
    s["cache_hits"] += int((rep & (np.nan_to_num(cached) != 0)).sum())
    s["cached_sum"] += int(np.nansum(cached[rep]))
    s["cache_input_sum"] += int(np.nansum(cols["input_tokens"][rep]))
    s["tool_ok"] += int((ok & ~np.isnan(cols["ttft_tool_call"])).sum())
    failed = mask & ~cols["ok"] & ~np.isin(cols["outcome"], _NOT_JUDGED)
    if failed.any():
        texts = error_text()
        for i in np.flatnonzero(failed).tolist():
            k = (OUTCOMES[cols["outcome"][i]], texts[i])
            key = _KEYS.get(k)
            if key is None:
                key = _KEYS[k] = failure_key(*k)
            a.causes[key] += 1
    names = [*REQUEST_METRICS, *(n for n, _ in TOKEN_DISTS)]
    for name in names:
        v = cols[name][ok]
        v = v[~np.isnan(v)]
        if len(v):
            a.stats[name] = [len(v), float(v.sum()), float(v.min()), float(v.max())]
            if not cfg.exact_rows and name != "ttft":
                a.hdr[name] = [hdr.sparse_counts(v)]
    gmask = mask[c.gap_row]
    pt_differs = c.gaps["itl_per_token"] is not c.gaps["itl"]
    a.pt_differs = pt_differs and bool(gmask.any())
    for name in GAP_METRICS:
        if name == "itl_per_token" and not pt_differs:  # the same values: share itl's figures
            if "itl" in a.stats:
                a.stats[name] = a.stats["itl"]
                if "itl" in a.hdr:
                    a.hdr[name] = a.hdr["itl"]
            continue
        v = c.gaps[name][gmask]
        if len(v):
            a.stats[name] = [len(v), float(v.sum()), float(v.min()), float(v.max())]
            if not cfg.exact_gaps:
                a.hdr[name] = [hdr.sparse_counts(v)]
    return a


def _chunk(cfg: Config, start: int, end: int, window: tuple[int, int] | None = None) -> Part | Agg:
    """Parse one byte range; with ``window``, only the sums of its requests sent inside the window."""
    from harness.analysis import columns as C

    data = read_range(cfg.path, start, end)
    table = C.parse_block(data, C.schema_for(data))
    del data
    b = C.block_arrays(table)
    c = C.columns(b, cfg.slo)
    cols = c.cols

    def error_text() -> list:
        return table.column("error_text").to_pylist()

    if window is not None:
        send = cols["send_ns"]
        return _aggregate(c, (send >= window[0]) & (send < window[1]), cfg, error_text)
    agg = _aggregate(c, None, cfg, error_text)
    ok = cols["ok"]
    exact: dict[str, np.ndarray | None] = {}
    if cfg.exact_rows:
        for name in [*REQUEST_METRICS, *(n for n, _ in TOKEN_DISTS)]:
            if name != "ttft":
                v = cols[name]
                exact[name] = v if (~np.isnan(v[ok])).any() else None
    gaps = gap_n = None
    if cfg.exact_gaps:
        gaps = {"itl": c.gaps["itl"]}
        if c.gaps["itl_per_token"] is not c.gaps["itl"]:
            gaps["itl_per_token"] = c.gaps["itl_per_token"]
        gap_n = np.bincount(c.gap_row, minlength=b.n).astype(np.int32)
    # output tokens by arrival: each ok request's tokens in equal shares over its token events
    with_tok = ok & (cols["n_events"] > 0)
    share = np.zeros(b.n)
    share[with_tok] = cols["output_tokens"][with_tok] / cols["n_events"][with_tok]
    n_ev = np.diff(b.tok_off)
    row_of_tok = np.repeat(np.arange(b.n), n_ev)
    sel = with_tok[row_of_tok]
    tbin = (b.tok[sel] - cfg.token_origin_ns) // TOKEN_BIN_NS
    if len(tbin):
        lo = int(tbin.min())
        tokens = (lo, np.bincount(tbin - lo, weights=share[row_of_tok[sel]]))
    else:
        tokens = (0, np.zeros(0))
    sample = None
    rows = np.arange(0, b.n, max(cfg.sample_every, 1))
    if len(rows):
        keep = np.zeros(b.n, dtype=bool)
        keep[rows] = True
        gm = keep[c.gap_row]
        remap = np.cumsum(keep) - 1
        sg = {k: v[gm] for k, v in c.gaps.items() if k == "itl" or v is not c.gaps["itl"]}
        sample = ({k: v[rows] for k, v in cols.items()}, sg, remap[c.gap_row[gm]])
    turn = cols["turn"] if (cols["turn"] > 0).any() else None
    cs = cols["cached_share"] if (~np.isnan(cols["cached_share"])).any() else None
    return Part(start, end, b.n, cols["send_ns"], cols["end_ns"], cols["outcome"].astype(np.int8), cols["ttft"],
                turn, cs, exact, gaps, gap_n, agg, tokens, sample)


def _run_chunk(args: tuple) -> Part | Agg:
    return _chunk(*args)


# ----------------------------------------------------------------------------- the reader


def _estimate(path: Path, size: int) -> tuple[float, float, bool, int, int | None]:
    """(rows, gaps, bundled, request metrics with values, min send) estimated from the file's first MB."""
    import json as _json

    from harness.records import RequestRecord

    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    lines = [ln for ln in head.split(b"\n")[:-1] if len(ln) > 2] or head.split(b"\n")[:1]
    recs = []
    for ln in lines:
        try:
            recs.append(RequestRecord.from_dict(_json.loads(ln)))
        except (ValueError, TypeError, AttributeError):
            continue
    if not recs:
        return size / 1000, 0.0, False, len(REQUEST_METRICS), None
    per_row = sum(len(ln) + 1 for ln in lines) / len(lines)
    rows = size / per_row
    gaps = sum(max(len(r.token_ns) - 1, 0) for r in recs if r.ok) / len(recs) * rows
    bundled = any(max(r.tokens_per_event, default=1) > 1 for r in recs)
    with_values = sum(1 for name in REQUEST_METRICS if any(m.METRICS[name].fn(r) is not None for r in recs))
    sends = [r.send_ns for r in recs if r.send_ns is not None]
    return rows, gaps, bundled, with_values + len(TOKEN_DISTS), (min(sends) if sends else None)


@dataclass
class Stream:
    """A large run reduced by the chunked reader (see the module docstring)."""

    parts: list[Part]
    cfg: Config
    send_ns: np.ndarray
    end_ns: np.ndarray
    outcome: np.ndarray
    ttft: np.ndarray
    turn: np.ndarray | None
    cached_share: np.ndarray | None
    whole: Agg
    sample: RunFrame
    tokens: tuple[int, np.ndarray]
    pool: object = None  #: the worker pool, while open

    def __len__(self) -> int:
        return len(self.send_ns)

    @property
    def ok(self) -> np.ndarray:
        return self.outcome == _OK

    def methods(self) -> dict[str, str]:
        """Distribution name -> ``exact`` | ``hdr``."""
        out = {name: "exact" if self.cfg.exact_rows or name == "ttft" else "hdr"
               for name in (*REQUEST_METRICS, *(n for n, _ in TOKEN_DISTS))}
        out.update({name: "exact" if self.cfg.exact_gaps else "hdr" for name in GAP_METRICS})
        return out


def _pool(workers: int):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    return ProcessPoolExecutor(workers, mp_context=ctx)


def _map(pool, tasks: list[tuple]) -> Iterator:
    if pool is None:
        return map(_run_chunk, tasks)
    return pool.map(_run_chunk, tasks)


def read_stream(path: str | os.PathLike[str], slo: m.Slo | None = None, workers: int | None = None,
                chunk_bytes: int = CHUNK_BYTES, budget_bytes: int = EXACT_BUDGET_BYTES) -> Stream:
    """Read a records file in chunks (module docstring); the returned stream holds its worker pool open
    for :func:`window_agg` (close it with :func:`close`)."""
    p = Path(path)
    size = p.stat().st_size
    rows, gaps, bundled, n_metrics, origin = _estimate(p, size)
    row_bytes = rows * 8 * n_metrics
    exact_rows = row_bytes <= budget_bytes
    exact_gaps = exact_rows and row_bytes + gaps * 8 * (2 if bundled else 1) <= budget_bytes
    cfg = Config(str(p), slo, exact_rows, exact_gaps, max(1, int(rows // SAMPLE_ROWS)),
                 origin if origin is not None else 0)
    bounds = list(range(0, size, max(chunk_bytes, 1))) + [size]
    tasks = [(cfg, bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]
    n = workers if workers is not None else (os.cpu_count() or 1)
    n = max(1, min(n, 8, len(tasks)))
    pool = _pool(n) if n > 1 else None
    # each part's per-request arrays are copied into the run's arrays as it arrives (capacity from the
    # estimate, grown when short), so the run never holds them twice
    if pool is not None:  # start the workers now, before this process grows (a fork shares its pages)
        pool.submit(int).result()
    cols = _Columns(int(rows * 1.1) + 1024)
    parts: list[Part] = []
    whole = Agg()
    samples, token_parts = [], []
    try:
        for pt in _map(pool, tasks):
            if not pt.n:
                continue
            cols.append(pt)
            whole.add(pt.agg)
            if pt.sample is not None:
                samples.append(pt.sample)
            token_parts.append(pt.tokens)
            pt.sample, pt.tokens = None, (0, np.zeros(0))
            parts.append(pt)
    except BaseException:
        close_pool(pool)
        raise
    a = cols.final()
    off = 0
    for pt in parts:  # the parts keep views of the run's arrays
        pt.send_ns, pt.end_ns = a["send_ns"][off:off + pt.n], a["end_ns"][off:off + pt.n]
        pt.outcome, pt.ttft = a["outcome"][off:off + pt.n], a["ttft"][off:off + pt.n]
        off += pt.n
    return Stream(parts, cfg, a["send_ns"], a["end_ns"], a["outcome"], a["ttft"], a.get("turn"),
                  a.get("cached_share"), whole, _sample_frame(samples, slo), _merge_tokens(token_parts), pool)


class _Columns:
    """The run's per-request arrays, filled part by part (optional ones appear with their first values)."""

    FILL = {"send_ns": (np.int64, -1), "end_ns": (np.int64, -1), "outcome": (np.int8, _OK),
            "ttft": (np.float64, np.nan), "turn": (np.int64, -1), "cached_share": (np.float64, np.nan)}
    OPTIONAL = ("turn", "cached_share")

    def __init__(self, capacity: int) -> None:
        self.n = 0
        self.a = {k: self._new(k, capacity) for k in self.FILL if k not in self.OPTIONAL}

    def _new(self, k: str, capacity: int) -> np.ndarray:
        return np.empty(capacity, dtype=self.FILL[k][0])  # pages are touched as parts fill them

    def append(self, pt: Part) -> None:
        end = self.n + pt.n
        cap = len(self.a["send_ns"])
        if end > cap:
            grown = max(end, int(cap * 1.5))
            for k, v in self.a.items():
                w = self._new(k, grown)
                w[:self.n] = v[:self.n]
                self.a[k] = w
        for k in self.FILL:
            v = getattr(pt, k)
            if v is None:
                if k in self.a:
                    self.a[k][self.n:end] = self.FILL[k][1]
                continue
            if k not in self.a:  # an optional column's first values: the rows before have none
                self.a[k] = self._new(k, len(self.a["send_ns"]))
                self.a[k][:self.n] = self.FILL[k][1]
            self.a[k][self.n:end] = v
            setattr(pt, k, None)
        self.n = end

    def final(self) -> dict[str, np.ndarray]:
        return {k: v[:self.n] for k, v in self.a.items()}


def close_pool(pool) -> None:
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def close(s: Stream) -> None:
    """Stop the stream's worker processes."""
    close_pool(s.pool)
    s.pool = None


def _sample_frame(samples: list[tuple[dict, dict, np.ndarray]], slo: m.Slo | None) -> RunFrame:
    from harness.analysis.frame import _finish

    if not samples:
        from harness.analysis.frame import build_frame

        return build_frame([], slo)
    cols = {k: np.concatenate([s[0][k] for s in samples]) for k in samples[0][0]}
    itl = np.concatenate([s[1]["itl"] for s in samples])
    pt = itl if all("itl_per_token" not in s[1] for s in samples) else np.concatenate(
        [s[1].get("itl_per_token", s[1]["itl"]) for s in samples])
    offs = np.cumsum([0] + [len(s[0]["send_ns"]) for s in samples])
    gap_row = np.concatenate([s[2] + o for s, o in zip(samples, offs, strict=False)])
    return _finish(cols, {"itl": itl, "itl_per_token": pt}, gap_row, slo, {"sample": True}, None)


def _merge_tokens(parts: list[tuple[int, np.ndarray]]) -> tuple[int, np.ndarray]:
    parts = [(lo, w) for lo, w in parts if len(w)]
    if not parts:
        return 0, np.zeros(0)
    lo = min(p[0] for p in parts)
    hi = max(p[0] + len(p[1]) for p in parts)
    out = np.zeros(hi - lo)
    for a, w in parts:
        out[a - lo: a - lo + len(w)] += w
    return lo, out


def window_agg(s: Stream, window: tuple[int, int] | None) -> Agg:
    """The sums of the requests sent inside ``window`` (all requests when None): chunks wholly inside count
    whole, chunks with requests on both sides of an edge are read again."""
    if window is None:
        return s.whole
    a = Agg()
    again = []
    for pt in s.parts:
        lo, hi, absent = pt.send_range
        if hi < lo:
            continue  # no request with a send time: none is in a window
        if not absent and lo >= window[0] and hi < window[1]:
            a.add(pt.agg)
        elif hi < window[0] or lo >= window[1]:
            continue
        else:
            again.append((s.cfg, pt.start, pt.end, window))
    for part_agg in _map(s.pool, again):
        a.add(part_agg)
    return a


# ----------------------------------------------------------------------------- summary


def _run_values(a: Agg, window_s: float, slo: m.Slo | None) -> dict:
    """Every run metric from the sums, by the dictionary's formulas (:data:`RUN_FORMULAS`)."""
    s = a.sums
    counts = {o: s[f"outcome.{o}"] for o in OUTCOMES}
    attempted = s["rows"] - counts[m.Outcome.DROPPED.value]
    rates = {k: (v / attempted if attempted else 0.0) for k, v in counts.items()
             if k not in (m.Outcome.OK, m.Outcome.DROPPED)}
    ok = counts[m.Outcome.OK.value]
    judged = s["rows"] - sum(counts[o] for o in m.NOT_JUDGED)
    w = window_s
    out: dict = {}
    for d in m.run_metrics():
        f = RUN_FORMULAS.get(d.name)
        out[d.name] = None if f is None else f(s, counts, attempted, rates, ok, judged, w, slo)
    for k, v in rates.items():
        out[f"error_rate_{k}"] = v
    return out


def _per_s(x: float, w: float) -> float:
    return 0.0 if w <= 0 else x / w


#: run metric -> its formula on the sums (each one the dictionary function's, see harness.metrics);
#: arguments: sums, outcome counts, attempted, error rate by class, ok, judged, window s, SLO
RUN_FORMULAS = {
    "request_throughput": lambda s, c, att, r, ok, j, w, slo: _per_s(ok, w),
    "output_tokens_per_s": lambda s, c, att, r, ok, j, w, slo: _per_s(s["output_total"], w),
    "goodput": lambda s, c, att, r, ok, j, w, slo: None if slo is None else _per_s(s["slo_met"], w),
    "overload_rate": lambda s, c, att, r, ok, j, w, slo: c[m.Outcome.OVERLOADED.value] / att if att else 0.0,
    "error_rate": lambda s, c, att, r, ok, j, w, slo: sum(r.values()),
    "drops": lambda s, c, att, r, ok, j, w, slo: c[m.Outcome.DROPPED.value],
    "token_mismatch_rate": lambda s, c, att, r, ok, j, w, slo: s["mismatched"] / s["compared"] if s["compared"] else 0.0,
    "failed_share": lambda s, c, att, r, ok, j, w, slo: (j - ok) / j if j else 0.0,
    "measurement_window_s": lambda s, c, att, r, ok, j, w, slo: w,
    "requests": lambda s, c, att, r, ok, j, w, slo: s["rows"],
    "attempted": lambda s, c, att, r, ok, j, w, slo: att,
    "ok": lambda s, c, att, r, ok, j, w, slo: ok,
    "done_missing": lambda s, c, att, r, ok, j, w, slo: s["done_missing"],
    "reasoning_token_share": lambda s, c, att, r, ok, j, w, slo:
        s["reasoning_ok"] / s["events_ok"] if s["events_ok"] else 0.0,
    "cached_token_share": lambda s, c, att, r, ok, j, w, slo:
        s["cached_sum"] / s["cache_input_sum"] if s["cache_input_sum"] else 0.0,
    "prefix_cache_hit_rate": lambda s, c, att, r, ok, j, w, slo:
        s["cache_hits"] / s["cache_rep"] if s["cache_rep"] else 0.0,
    "tool_call_requests": lambda s, c, att, r, ok, j, w, slo: s["tool_ok"],
}


def _window_s(send: np.ndarray, end: np.ndarray) -> float:
    """:func:`harness.metrics.measurement_window_s` of the rows: last end - first send, s."""
    st, en = send[send >= 0], end[end >= 0]
    if not len(st) or not len(en):
        return 0.0
    return max(0.0, (int(en.max()) - int(st.min())) / m.NS_PER_S)


def summarize_stream(s: Stream, slo: m.Slo | None, steady_window: tuple[int, int] | None) -> dict:
    """The summary of the requests sent inside ``steady_window`` (all when None), keys as
    :func:`harness.analysis.summary.summarize_frame`'s, plus ``percentiles``."""
    from harness.analysis.failures import failure_verdict
    from harness.analysis.summary import _flatten, _slo_dict, dist, ttft_by_turn

    if steady_window is None:
        mask = np.ones(len(s), dtype=bool)
    else:
        mask = (s.send_ns >= steady_window[0]) & (s.send_ns < steady_window[1])
    a = window_agg(s, steady_window)
    okm = s.ok & mask
    out: dict = {"outcomes": {o: a.sums[f"outcome.{o}"] for o in OUTCOMES}}
    methods = s.methods()

    def distribution(name: str) -> dict:
        if name == "ttft":
            return dist(s.ttft[okm])
        if methods[name] == "exact":
            if name in GAP_METRICS:
                key = name if name == "itl" or a.pt_differs else "itl"
                vals = [pt.gaps.get(key, pt.gaps["itl"])[np.repeat(_rows(pt, steady_window), pt.gap_n)]
                        for pt in s.parts]  # type: ignore[union-attr]
            else:
                vals = [pt.exact[name][_rows(pt, steady_window) & (pt.outcome == _OK)]  # type: ignore[index]
                        for pt in s.parts if pt.exact.get(name) is not None]
            return dist(np.concatenate(vals)) if vals else {"count": 0}
        st = a.stats.get(name)
        if not st:
            return {"count": 0}
        return hdr.summary(hdr.dense(a.hdr.get(name, [])), st[0], st[1] / st[0], st[2], st[3])

    for name in REQUEST_METRICS:
        _flatten(name, m.METRICS[name].unit, distribution(name), out)
    gap_done = distribution("itl")
    for name in GAP_METRICS:
        d = gap_done if name == "itl" or not a.pt_differs else distribution(name)
        _flatten(name, m.METRICS[name].unit, d, out)
    for name, unit in TOKEN_DISTS:
        _flatten(name, unit, distribution(name), out)
    if s.turn is not None and (s.turn[okm] > 0).any():
        cols = {"turn": s.turn[mask], "ok": s.ok[mask], "ttft": s.ttft[mask]}
        if s.cached_share is not None:
            cols["cached_share"] = s.cached_share[mask]
        out["ttft_by_turn"] = ttft_by_turn(RunFrame(cols, {}, np.zeros(0, np.int64)))
    out.update(_run_values(a, _window_s(s.send_ns[mask], s.end_ns[mask]), slo))
    sm = a.sums
    out["tokens"] = {k: int(sm[k]) for k in ("output_total", "output_server_total", "output_events_total",
                                              "output_retokenized_total", "input_total", "compared", "mismatched")}
    verdict = failure_verdict(out["outcomes"], dict(a.causes))
    out["failures"] = verdict.as_dict()
    out["failed_share"] = verdict.failed_share
    out["done_missing"] = int(sm["done_missing"])
    out["slo"] = _slo_dict(slo)
    out["steady_window"] = None if steady_window is None else {
        "start_ns": int(steady_window[0]), "end_ns": int(steady_window[1])}
    out["percentiles"] = percentile_note(methods, [d.name for d in m.run_metrics() if d.name not in RUN_FORMULAS],
                                         shown={n for n in methods if out.get(f"{n}_count")})
    return out


def percentile_note(methods: dict[str, str], not_computed: list[str] | None = None,
                    shown: set[str] | None = None) -> dict:
    """The summary's ``percentiles`` entry: each distribution's method (``method``) and a sentence saying
    it (``text``; naming the histogram ones among ``shown``, the distributions with values)."""
    hd = sorted(k for k, v in methods.items() if v == "hdr" and (shown is None or k in shown))
    text = ("exact (from every record)" if not hd else
            "exact (from every record) except " + ", ".join(hd) + ": HdrHistogram percentiles, 3 significant "
            "digits (count, mean, min and max exact)")
    out: dict = {"method": methods, "text": text}
    if not_computed:
        out["not_computed"] = not_computed
    return out


def _rows(pt: Part, window: tuple[int, int] | None) -> np.ndarray:
    if window is None:
        return np.ones(pt.n, dtype=bool)
    return (pt.send_ns >= window[0]) & (pt.send_ns < window[1])


def analyse_stream(s: Stream, slo: m.Slo | None, steady: bool = True,
                   warmup_s: float = 0.0) -> tuple[dict, SteadyWindow | None]:
    """As :func:`harness.analysis.summary.analyse`, for a stream."""
    oc = s.outcome
    live = oc != _DROPPED
    every = live.all()  # then no copies of the run's times
    window = detect(s.send_ns if every else s.send_ns[live], s.end_ns if every else s.end_ns[live], warmup_s,
                    s.send_ns[oc == _CANCELLED])
    applied = window is not None and ((steady and window.detected) or warmup_s > 0)
    summary = summarize_stream(s, slo, window.as_tuple() if applied else None)  # type: ignore[union-attr]
    summary["steady_window_info"] = None if window is None else {**window.to_dict(), "applied": applied}
    return summary, window


def outcome_counts(s: Stream) -> dict[str, int]:
    """Requests per outcome class, whole run."""
    return {o: int(v) for o, v in zip(OUTCOMES, np.bincount(s.outcome, minlength=len(OUTCOMES)).tolist(),
                                        strict=False)}


# ----------------------------------------------------------------------------- series and plots


def per_second(s: Stream) -> TimeSeries | None:
    """The per-second series of :func:`harness.analysis.timeseries.per_second` from the per-request times
    and outcomes, TTFT and per-10-ms output tokens (attributed to the second of their 10 ms bin)."""
    send, end = s.send_ns, s.end_ns
    has = send >= 0
    if not has.any():
        return None
    t0 = int(send[has].min())
    t_end = int(max(end.max(), send.max()))
    n = int((t_end - t0) // m.NS_PER_S) + 1
    ok = s.ok
    dropped = s.outcome == _DROPPED
    live = has & (end >= 0) & ~dropped
    every = live.all()  # then no copies of the run's times (this runs on millions of requests)
    in_flight = concurrency_per_bin(send if every else send[live], end if every else end[live], t0, n)
    ebin = end - t0
    ebin //= m.NS_PER_S
    ebin[end < 0] = -1
    completed = np.bincount(ebin[ok & (ebin >= 0)], minlength=n)[:n]
    failed = np.bincount(ebin[~ok & ~dropped & (ebin >= 0)], minlength=n)[:n]
    del ebin
    sbin = send - t0
    sbin //= m.NS_PER_S
    sbin[~has] = -1
    sent = np.bincount(sbin[has & ~dropped], minlength=n)[:n]
    lo, w = s.tokens
    tok = np.zeros(n)
    if len(w):
        sec = (s.cfg.token_origin_ns + (lo + np.arange(len(w))) * TOKEN_BIN_NS - t0) // m.NS_PER_S
        keep = (sec >= 0) & (sec < n)
        tok = np.bincount(sec[keep], weights=w[keep], minlength=n)[:n].astype(np.float64)
    # overload rate per second of send: overloaded / attempted (the dictionary's overload_rate)
    rows_in = np.bincount(sbin[has], minlength=n)[:n]
    att = np.bincount(sbin[has & ~dropped], minlength=n)[:n]
    ov = np.bincount(sbin[has & (s.outcome == _OVERLOADED)], minlength=n)[:n]
    over = np.full(n, np.nan)
    filled = rows_in > 0
    over[filled] = np.where(att[filled] > 0, ov[filled] / np.maximum(att[filled], 1), 0.0)
    p50 = np.full(n, np.nan)
    p99 = np.full(n, np.nan)
    sel = has & ok & ~np.isnan(s.ttft)
    b = sbin[sel]
    del sbin
    order = np.argsort(b, kind="stable")
    edges = np.concatenate(([0], np.cumsum(np.bincount(b, minlength=n)[:n])))
    del b
    v = s.ttft[sel][order]
    del order
    for k in np.flatnonzero(np.diff(edges)).tolist():
        vk = np.sort(v[edges[k]:edges[k + 1]])
        p50[k], p99[k] = m.percentile(vk, 50.0), m.percentile(vk, 99.0)
    return TimeSeries(np.arange(n, dtype=np.float64), t0, sent, completed, failed, in_flight, tok, p50, p99, over)


def cdf_panels(s: Stream) -> list[tuple[str, np.ndarray, np.ndarray, float | None, float | None, int, str]]:
    """The latency CDF panels (TTFT, ITL, TPOT, E2E; ok requests, whole run): (name, x, y, p50, p99, n, note)."""
    from harness.analysis.plots import CDF_EXACT_MAX, _cdf_xy

    out = []
    methods = s.methods()
    for name in ("ttft", "itl", "tpot", "e2e"):
        if methods[name] == "exact":
            if name == "ttft":
                v = s.ttft[s.ok]
            elif name == "itl":  # above CDF_EXACT_MAX gaps, every k-th of each part (display only)
                total = sum(len(pt.gaps["itl"]) for pt in s.parts)  # type: ignore[index]
                k = max(1, int(np.ceil(total / CDF_EXACT_MAX)))
                v = np.concatenate([pt.gaps["itl"][::k] for pt in s.parts]) if s.parts else np.zeros(0)  # type: ignore[index]
            else:
                v = np.concatenate([pt.exact[name][pt.outcome == _OK] for pt in s.parts  # type: ignore[index]
                                    if pt.exact.get(name) is not None] or [np.zeros(0)])
            v = v[~np.isnan(v)]
            n = total if name == "itl" else len(v)
            sampled = n > CDF_EXACT_MAX
            v = np.sort(v if name == "itl" else v[:: int(np.ceil(n / CDF_EXACT_MAX))] if sampled else v)
            if not n:
                out.append((name, v, v, None, None, 0, ""))
                continue
            x, y = _cdf_xy(v)
            out.append((name, x, y, float(m.percentile(v, 50.0)), float(m.percentile(v, 99.0)), n,
                        ", sampled" if sampled else ""))
        else:
            counts = hdr.dense(s.whole.hdr.get(name, []))
            n = int(counts.sum())
            if not n:
                out.append((name, np.zeros(0), np.zeros(0), None, None, 0, ""))
                continue
            x, y = hdr.cdf_points(counts)
            cum = np.cumsum(counts)
            out.append((name, x, y, hdr.value_at(counts, cum, 50.0), hdr.value_at(counts, cum, 99.0), n,
                        ", HdrHistogram"))
    return out


def timeline_frame(s: Stream) -> RunFrame:
    """The requests the timeline plot draws (an even spread by send time) as a small frame."""
    from harness.analysis.plots import GANTT_SAMPLE

    rows = np.flatnonzero((s.send_ns >= 0) & (s.end_ns >= 0))
    rows = rows[np.argsort(s.send_ns[rows], kind="stable")]
    if len(rows) > GANTT_SAMPLE:
        rows = rows[np.linspace(0, len(rows) - 1, GANTT_SAMPLE).astype(np.int64)]
    rows = np.sort(rows)
    send = s.send_ns[rows]
    ttft = s.ttft[rows]
    first = np.where(np.isnan(ttft), -1, send + np.round(np.nan_to_num(ttft) * m.NS_PER_MS).astype(np.int64))
    cols = {"send_ns": send, "end_ns": s.end_ns[rows], "first_token_ns": first, "ok": s.ok[rows]}
    return RunFrame(cols, {}, np.zeros(0, np.int64))
