"""Records -> one frame of per-request values, computed by the metric dictionary.

:class:`RunFrame` holds, per record, every per-request metric of :mod:`harness.metrics` (one call of
each dictionary function per record, nothing re-derived here) as numpy columns, plus the flat arrays
of all inter-token gaps of ok requests (ITL is a distribution over gaps) with the row each gap
belongs to. The SLO verdict of each request (:meth:`harness.metrics.Slo.met_by`, which needs the token
times) is taken in the same pass and kept in ``slo_met``.

Run-level metrics are computed later by the dictionary's run functions over :attr:`RunFrame.records`.
A frame read from a file does not keep the records themselves (a million records with their token
lists do not fit comfortably in memory): ``records`` then rebuilds light :class:`RequestRecord`
objects from the columns, carrying every scalar field the run functions read (outcome, send/end
times, token counts) and no token lists.

Large files are read by several processes in parallel, each taking a byte range of the JSONL file.

Units: ``*_ns`` columns are monotonic-clock nanoseconds (-1 = absent), latency columns ms (NaN = "not
defined for this request", e.g. TTFT of a request that produced no token), token columns counts
(NaN = not reported).
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import metrics as m
from harness.records import RECORDS_FILE, Outcome, RequestRecord

#: per-request dictionary functions that give one float (ms) or None, by metric name
REQUEST_METRICS: tuple[str, ...] = tuple(name for name, d in m.METRICS.items() if d.scope == "request")
#: per-gap dictionary functions that give a list of floats (ms), by metric name
GAP_METRICS: tuple[str, ...] = tuple(name for name, d in m.METRICS.items() if d.scope == "gap")
if set(GAP_METRICS) != {"itl", "itl_per_token"}:  # pragma: no cover - guards a dictionary change
    raise ImportError(f"harness.analysis.frame handles the gap metrics itl and itl_per_token; the dictionary "
                      f"now has {GAP_METRICS}: teach _Builder.add the new one")
#: outcome codes stored in the ``outcome`` column
OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)
_OUTCOME_CODE = {o: i for i, o in enumerate(OUTCOMES)}
_HTTP_ERROR_CODE = _OUTCOME_CODE[Outcome.HTTP_ERROR.value]
_OK = Outcome.OK.value

_FLOAT_COLS = (*REQUEST_METRICS, "output_tokens", "token_mismatch", "output_tokens_server",
               "output_tokens_events", "output_tokens_retokenized", "input_tokens")
_INT_COLS = ("send_ns", "end_ns", "intended_ns", "first_token_ns", "last_token_ns", "n_events", "ok",
             "slo_met", "retries", "outcome", "eos_end", "turn")  # turn: sessions' 1-based turn, -1 = none
_NAN = float("nan")
_NO_TOKENS: tuple[int, ...] = ()
PARALLEL_MIN_BYTES = 32 * 1024 * 1024


@dataclass
class RunFrame:
    """Per-request columns (numpy, one row per record) and flat gap arrays of ok requests."""

    cols: dict[str, np.ndarray]
    gaps: dict[str, np.ndarray]  #: metric name -> all gaps (ms) of ok requests, in row order
    gap_row: np.ndarray  #: row index of the request each gap belongs to (non-decreasing)
    slo: m.Slo | None = None
    meta: dict = field(default_factory=dict)
    _records: list[RequestRecord] | None = None

    def __len__(self) -> int:
        return len(self.cols["send_ns"])

    @property
    def outcome(self) -> np.ndarray:
        """Outcome names per row (object array)."""
        return np.asarray(OUTCOMES, dtype=object)[self.cols["outcome"]]

    @property
    def records(self) -> list[RequestRecord]:
        """The records (the originals when the frame was built from records, else light copies)."""
        if self._records is None:
            self._records = light_records(self.cols)
        return self._records

    def subset(self, rows: np.ndarray) -> RunFrame:
        """Frame restricted to ``rows`` (a boolean mask, or ascending unique row indices)."""
        idx = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows, dtype=np.int64)
        keep = np.zeros(len(self), dtype=bool)
        keep[idx] = True
        remap = np.cumsum(keep) - 1
        gmask = keep[self.gap_row]
        parent = self.records  # built once on the parent (light copies when read from a file), then shared
        recs = [parent[i] for i in idx.tolist()]
        gaps: dict[str, np.ndarray] = {}
        by_id: dict[int, np.ndarray] = {}
        for k, v in self.gaps.items():  # arrays shared between metrics stay shared
            gaps[k] = by_id[id(v)] if id(v) in by_id else by_id.setdefault(id(v), v[gmask])
        return RunFrame({k: v[idx] for k, v in self.cols.items()}, gaps,
                        remap[self.gap_row[gmask]], self.slo, self.meta, recs)

    def to_pandas(self):  # -> pandas.DataFrame
        """The per-request columns as a pandas DataFrame (outcome as names)."""
        import pandas as pd

        df = pd.DataFrame({k: v for k, v in self.cols.items() if k != "outcome"})
        df["outcome"] = pd.Categorical.from_codes(self.cols["outcome"], categories=list(OUTCOMES))
        return df


class LightRecord(RequestRecord):
    """A record rebuilt from frame columns for the dictionary's run functions.

    Only the fields run functions read are set (intended/send/end times, outcome, token counts,
    whether the stream ended on EOS, reasoning and cached input tokens, input tokens (the merged count,
    as both server and client count), whether tool calls came (``first_tool_call_ns`` = its time); the
    token lists are empty - their per-request values are already in the frame); any other field
    raises AttributeError when read, so a run function that starts to need more fails loudly instead
    of reading a default. About 3x cheaper to build than a full record.
    """

    __slots__ = ()

    def __init__(self, intended_ns: int | None, send_ns: int | None, end_ns: int | None, outcome: str,
                 output_tokens_server: int | None, output_tokens_events: int,
                 output_tokens_retokenized: int | None, eos_end: int = 0, input_tokens: int | None = None,
                 reasoning_tokens: int = 0, cached_input_tokens: int | None = None,
                 first_tool_call_ns: int | None = None, turn: int | None = None) -> None:
        self.intended_ns = intended_ns
        self.send_ns = send_ns
        self.attempt_send_ns = send_ns
        self.end_ns = end_ns
        self.outcome = outcome
        self.output_tokens_server = output_tokens_server
        self.output_tokens_events = output_tokens_events
        self.output_tokens_retokenized = output_tokens_retokenized
        self.finish_reason = "eos_token" if eos_end else None  # all that run functions ask of it
        self.token_ns = _NO_TOKENS  # type: ignore[assignment]
        self.tokens_per_event = _NO_TOKENS  # type: ignore[assignment]
        self.input_tokens_server = self.input_tokens_client = input_tokens
        self.reasoning_tokens = reasoning_tokens
        self.reasoning_events = 1 if reasoning_tokens else 0
        self.tool_call_tokens = 0
        self.cached_input_tokens = cached_input_tokens
        self.first_tool_call_ns = first_tool_call_ns
        self.turn = turn


def light_records(cols: dict[str, np.ndarray]) -> list[RequestRecord]:
    """:class:`LightRecord` copies of the records behind ``cols`` (no token lists), for the run functions."""
    def opt_int(a: np.ndarray) -> list[int | None]:
        return [None if v < 0 else v for v in a.tolist()]

    def opt_tok(a: np.ndarray) -> list[int | None]:
        return [None if v != v else int(v) for v in a.tolist()]  # NaN -> None

    send, end, intended = opt_int(cols["send_ns"]), opt_int(cols["end_ns"]), opt_int(cols["intended_ns"])
    srv, ret = opt_tok(cols["output_tokens_server"]), opt_tok(cols["output_tokens_retokenized"])
    ev = cols["output_tokens_events"].astype(np.int64).tolist()
    oc = [OUTCOMES[c] for c in cols["outcome"].tolist()]
    n = len(send)
    inp = opt_tok(cols["input_tokens"]) if "input_tokens" in cols else [None] * n
    reas = [0 if t is None else t for t in opt_tok(cols["reasoning_tokens"])] if "reasoning_tokens" in cols \
        else [0] * n
    cached = opt_tok(cols["cached_tokens"]) if "cached_tokens" in cols else [None] * n
    tool = ([None if v != v else s + int(v * m.NS_PER_MS) for v, s in zip(cols["ttft_tool_call"].tolist(),
                                                                       cols["send_ns"].tolist(), strict=True)]
            if "ttft_tool_call" in cols else [None] * n)
    turn = opt_int(cols["turn"]) if "turn" in cols else [None] * n
    return list(map(LightRecord, intended, send, end, oc, srv, ev, ret, cols["eos_end"].tolist(), inp, reas,
                    cached, tool, turn))


class _Builder:
    """Accumulates per-request values; one dictionary call per metric per record."""

    def __init__(self, slo: m.Slo | None, keep: bool) -> None:
        self.slo = slo
        self.records: list[RequestRecord] | None = [] if keep else None
        self.f: dict[str, array] = {name: array("d") for name in _FLOAT_COLS}
        self.i: dict[str, array] = {name: array("q") for name in _INT_COLS}
        self.gaps: dict[str, array] = {name: array("d") for name in GAP_METRICS}
        self.rows = 0
        self._fns = [(self.f[name].append, m.METRICS[name].fn) for name in REQUEST_METRICS]
        f, i = self.f, self.i
        self._appends = tuple(f[k].append for k in ("output_tokens", "token_mismatch", "output_tokens_server",
                                                    "output_tokens_events", "output_tokens_retokenized",
                                                    "input_tokens")) + tuple(
            i[k].append for k in ("send_ns", "end_ns", "intended_ns", "first_token_ns", "last_token_ns", "n_events",
                                  "ok", "slo_met", "retries", "outcome", "eos_end", "turn"))
        self._ext_itl = self.gaps["itl"].extend
        self.bundled = False  #: some record bundled tokens: itl_per_token has its own array
        self._ext_itl_pt = self.gaps["itl_per_token"].extend

    def add(self, r: RequestRecord) -> None:
        self.rows += 1
        for append, fn in self._fns:
            v = fn(r)
            append(_NAN if v is None else v)
        (a_out, a_mism, a_srv, a_ev, a_ret, a_in, a_send, a_end, a_int, a_first, a_last, a_nev, a_ok, a_slo,
         a_retries, a_outcome, a_eos, a_turn) = self._appends
        v = r.turn
        a_turn(-1 if v is None else v)
        a_eos(r.finish_reason in m.EOS_FINISH_REASONS)
        a_out(m.output_tokens(r))
        mm = m.token_mismatch(r)
        a_mism(_NAN if mm is None else float(mm))
        v = r.output_tokens_server
        a_srv(_NAN if v is None else v)
        a_ev(r.output_tokens_events)
        v = r.output_tokens_retokenized
        a_ret(_NAN if v is None else v)
        v = r.input_tokens_server if r.input_tokens_server is not None else r.input_tokens_client
        a_in(_NAN if v is None else v)
        t = r.token_ns
        v = r.send_ns
        a_send(-1 if v is None else v)
        v = r.end_ns
        a_end(-1 if v is None else v)
        v = r.intended_ns
        a_int(-1 if v is None else v)
        if t:
            a_first(t[0])
            a_last(t[-1])
        else:
            a_first(-1)
            a_last(-1)
        a_nev(len(t))
        ok = r.outcome == _OK
        a_ok(ok)
        a_slo(self.slo.met_by(r) if self.slo is not None else ok)
        a_retries(r.retries)
        a_outcome(_OUTCOME_CODE.get(r.outcome, _HTTP_ERROR_CODE))
        if ok and len(t) > 1:
            itl = m.itl_ms(r)
            # itl_per_token_ms equals itl_ms exactly (gap / 1) when every event carries one token:
            # until a record bundles tokens, the per-token gaps are the itl array itself (shared).
            if max(r.tokens_per_event, default=1) <= 1:
                if self.bundled:
                    self._ext_itl_pt(itl)
            else:
                if not self.bundled:
                    self.bundled = True
                    self.gaps["itl_per_token"] = array("d", self.gaps["itl"])
                    self._ext_itl_pt = self.gaps["itl_per_token"].extend
                self._ext_itl_pt(m.itl_per_token_ms(r))
            self._ext_itl(itl)
        if self.records is not None:
            self.records.append(r)

    def arrays(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        cols: dict[str, np.ndarray] = {k: _np(v, np.float64) for k, v in self.f.items()}
        cols.update({k: _np(v, np.int64) for k, v in self.i.items()})
        gaps = {k: _np(v, np.float64) for k, v in self.gaps.items() if k != "itl_per_token" or self.bundled}
        if not self.bundled:
            gaps["itl_per_token"] = gaps["itl"]  # the same values: one array
        # ok requests with n token events contribute n - 1 gaps (itl_ms), in row order
        n = cols["n_events"]
        with_gaps = (cols["ok"] == 1) & (n > 1)
        gap_row = np.repeat(np.flatnonzero(with_gaps), n[with_gaps] - 1)
        assert len(gap_row) == len(gaps["itl"]), "gap count differs from itl_ms's"
        return cols, gaps, gap_row


def _np(a: array, dtype: type) -> np.ndarray:
    return np.frombuffer(a, dtype=dtype).copy() if len(a) else np.zeros(0, dtype=dtype)


def _finish(cols: dict[str, np.ndarray], gaps: dict[str, np.ndarray], gap_row: np.ndarray,
            slo: m.Slo | None, meta: dict, records: list[RequestRecord] | None) -> RunFrame:
    cols["ok"] = cols["ok"].astype(bool)
    cols["slo_met"] = cols["slo_met"].astype(bool)
    cols["outcome"] = cols["outcome"].astype(np.int8)
    if gaps["itl_per_token"] is not gaps["itl"] and np.array_equal(gaps["itl"], gaps["itl_per_token"]):
        gaps["itl_per_token"] = gaps["itl"]  # share memory (and the sort) when no event was bundled
    return RunFrame(cols, gaps, gap_row, slo, meta, records)


def build_frame(records: Iterable[RequestRecord], slo: m.Slo | None = None) -> RunFrame:
    """Frame of in-memory ``records`` (kept as :attr:`RunFrame.records`).

    ``slo_met`` is :meth:`Slo.met_by` per record when ``slo`` is given, else the ok flag.
    """
    b = _Builder(slo, keep=True)
    for r in records:
        b.add(r)
    return _finish(*b.arrays(), slo, {}, b.records)


def records_path(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/records.jsonl`` (or the file itself when a file is given)."""
    p = Path(run_dir)
    return p / RECORDS_FILE if p.is_dir() else p


def _load_range(path: str, start: int, end: int, slo: m.Slo | None):
    """Per-request arrays of the lines that *begin* in ``[start, end)`` of a JSONL file."""
    b = _Builder(slo, keep=False)
    loads, from_dict, new, add = json.loads, RequestRecord.from_dict, RequestRecord, b.add
    with open(path, "rb") as fh:
        if start > 0:
            fh.seek(start - 1)
            fh.readline()  # finish the line that straddles start (or just its newline)
        pos = fh.tell()
        for line in fh:
            if pos >= end:
                break
            pos += len(line)
            if len(line) < 3:
                continue
            try:
                d = loads(line)
            except ValueError:
                continue  # a process killed mid-write leaves a partial line
            try:
                rec = new(**d)  # fast path: exactly the record's fields
            except TypeError:
                try:
                    rec = from_dict(d)  # unknown keys (newer writer) are ignored
                except (TypeError, AttributeError):
                    continue
            add(rec)
    return b.arrays()


def load_frame(run_dir: str | os.PathLike[str], slo: m.Slo | None = None, workers: int | None = None) -> RunFrame:
    """Read a run's records (JSONL) into a :class:`RunFrame`; large files in parallel byte ranges."""
    path = records_path(run_dir)
    size = path.stat().st_size
    n = workers if workers is not None else (os.cpu_count() or 1)
    n = max(1, min(n, 8, size // PARALLEL_MIN_BYTES or 1))
    bounds = [size * k // n for k in range(n + 1)]
    if n == 1:
        parts = [_load_range(str(path), 0, size, slo)]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(n, mp_context=ctx) as ex:
            futs = [ex.submit(_load_range, str(path), bounds[k], bounds[k + 1], slo) for k in range(n)]
            parts = [f.result() for f in futs]
    cols = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    gaps = {"itl": np.concatenate([p[1]["itl"] for p in parts])}
    shared = all(p[1]["itl_per_token"] is p[1]["itl"] for p in parts)
    gaps["itl_per_token"] = gaps["itl"] if shared else np.concatenate([p[1]["itl_per_token"] for p in parts])
    offsets = np.cumsum([0] + [len(p[0]["send_ns"]) for p in parts])
    gap_row = np.concatenate([p[2] + off for p, off in zip(parts, offsets, strict=False)])
    return _finish(cols, gaps, gap_row, slo, {"path": str(path)}, None)
