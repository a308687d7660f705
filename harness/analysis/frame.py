"""Records -> one frame of per-request values, computed by the metric dictionary.

:class:`RunFrame` holds, per record, every per-request metric of :mod:`harness.metrics` (one call of
each dictionary function per record, nothing re-derived here) as numpy columns, plus the flat arrays
of all inter-token gaps of ok requests (ITL is a distribution over gaps). Run-level metrics are
computed later by the dictionary's run functions over ``records``; for frames read from a file the
records are kept *without* their token lists (``token_ns`` and ``tokens_per_event`` released after the
per-request pass) so that a million records fit in memory. Run functions only read scalar fields; the
SLO verdict of each request (:meth:`harness.metrics.Slo.met_by`, which needs the token times) is taken
during the per-request pass and kept in ``slo_met``.

Units: ``*_ns`` columns are monotonic-clock nanoseconds, latency columns ms (NaN = "not defined for
this request", e.g. TTFT of a request that produced no token), token columns counts.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np

from harness import metrics as m
from harness.records import RECORDS_FILE, RequestRecord

#: per-request dictionary functions that give one float (ms) or None, by metric name
REQUEST_METRICS: tuple[str, ...] = tuple(name for name, d in m.METRICS.items() if d.scope == "request")
#: per-gap dictionary functions that give a list of floats (ms), by metric name
GAP_METRICS: tuple[str, ...] = tuple(name for name, d in m.METRICS.items() if d.scope == "gap")

_NAN = float("nan")
_EMPTY: list[int] = []


@dataclass
class RunFrame:
    """Per-request columns (numpy, one row per record) and flat gap arrays of ok requests."""

    records: list[RequestRecord]
    cols: dict[str, np.ndarray]
    gaps: dict[str, np.ndarray]  #: metric name -> all gaps (ms) of ok requests
    gap_row: np.ndarray  #: row index of the request each gap belongs to
    slo: m.Slo | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, rows: np.ndarray) -> RunFrame:
        """Frame restricted to ``rows`` (a boolean mask or index array over records)."""
        idx = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows, dtype=np.int64)
        keep = np.zeros(len(self.records), dtype=bool)
        keep[idx] = True
        remap = np.cumsum(keep) - 1
        gmask = keep[self.gap_row] if len(self.gap_row) else np.zeros(0, dtype=bool)
        recs = self.records
        return RunFrame(
            records=[recs[i] for i in idx.tolist()],
            cols={k: v[idx] for k, v in self.cols.items()},
            gaps={k: v[gmask] for k, v in self.gaps.items()},
            gap_row=remap[self.gap_row[gmask]],
            slo=self.slo,
            meta=self.meta,
        )

    def to_pandas(self):  # -> pandas.DataFrame
        """The per-request columns as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.cols)


class _Builder:
    """Accumulates per-request values; one dictionary call per metric per record."""

    def __init__(self, slo: m.Slo | None, strip: bool) -> None:
        self.slo = slo
        self.strip = strip
        self.records: list[RequestRecord] = []
        self.f: dict[str, array] = {name: array("d") for name in REQUEST_METRICS}
        for name in ("output_tokens", "token_mismatch", "output_tokens_server", "output_tokens_events",
                     "output_tokens_retokenized", "input_tokens"):
            self.f[name] = array("d")
        self.i: dict[str, array] = {name: array("q") for name in
                                    ("send_ns", "end_ns", "intended_ns", "first_token_ns", "last_token_ns",
                                     "n_events", "ok", "slo_met", "retries")}
        self.outcome: list[str] = []
        self.gaps: dict[str, array] = {name: array("d") for name in GAP_METRICS}
        self.gap_row = array("q")
        self._fns = [(self.f[name], m.METRICS[name].fn) for name in REQUEST_METRICS]
        self._gap_fns = [(self.gaps[name], m.METRICS[name].fn) for name in GAP_METRICS]

    def add(self, r: RequestRecord) -> None:
        row = len(self.records)
        for col, fn in self._fns:
            v = fn(r)
            col.append(_NAN if v is None else v)
        f, i = self.f, self.i
        f["output_tokens"].append(m.output_tokens(r))
        mm = m.token_mismatch(r)
        f["token_mismatch"].append(_NAN if mm is None else float(mm))
        f["output_tokens_server"].append(_NAN if r.output_tokens_server is None else r.output_tokens_server)
        f["output_tokens_events"].append(r.output_tokens_events)
        f["output_tokens_retokenized"].append(
            _NAN if r.output_tokens_retokenized is None else r.output_tokens_retokenized)
        it = r.input_tokens_server if r.input_tokens_server is not None else r.input_tokens_client
        f["input_tokens"].append(_NAN if it is None else it)
        t = r.token_ns
        i["send_ns"].append(r.send_ns if r.send_ns is not None else -1)
        i["end_ns"].append(r.end_ns if r.end_ns is not None else -1)
        i["intended_ns"].append(r.intended_ns if r.intended_ns is not None else -1)
        i["first_token_ns"].append(t[0] if t else -1)
        i["last_token_ns"].append(t[-1] if t else -1)
        i["n_events"].append(len(t))
        ok = r.ok
        i["ok"].append(ok)
        i["slo_met"].append(self.slo.met_by(r) if self.slo is not None else ok)
        i["retries"].append(r.retries)
        self.outcome.append(r.outcome)
        if ok and len(t) > 1:
            for col, fn in self._gap_fns:
                col.extend(fn(r))
            self.gap_row.extend(repeat(row, len(t) - 1))  # itl_ms gives len(token_ns) - 1 gaps
        if self.strip:
            r.token_ns = _EMPTY
            r.tokens_per_event = _EMPTY
            r.text = None
        self.records.append(r)

    def build(self, meta: dict | None = None) -> RunFrame:
        cols: dict[str, np.ndarray] = {k: np.frombuffer(v, dtype=np.float64) if len(v) else np.zeros(0)
                                       for k, v in self.f.items()}
        for k, v in self.i.items():
            cols[k] = np.frombuffer(v, dtype=np.int64) if len(v) else np.zeros(0, dtype=np.int64)
        cols["ok"] = cols["ok"].astype(bool)
        cols["slo_met"] = cols["slo_met"].astype(bool)
        cols["outcome"] = np.asarray(self.outcome, dtype=object)
        gaps = {k: np.frombuffer(v, dtype=np.float64) if len(v) else np.zeros(0) for k, v in self.gaps.items()}
        gap_row = np.frombuffer(self.gap_row, dtype=np.int64) if len(self.gap_row) else np.zeros(0, np.int64)
        return RunFrame(self.records, cols, gaps, gap_row, self.slo, meta or {})


def build_frame(records: Iterable[RequestRecord], slo: m.Slo | None = None, strip: bool = False) -> RunFrame:
    """Frame of ``records``; ``strip`` releases each record's token lists after its values are taken.

    ``slo_met`` is :meth:`Slo.met_by` per record when ``slo`` is given, else the ok flag.
    """
    b = _Builder(slo, strip)
    for r in records:
        b.add(r)
    return b.build()


def _iter_jsonl(path: Path) -> Iterator[RequestRecord]:
    """Records of a JSONL file; a truncated or corrupt line (process killed mid-write) is skipped."""
    loads = json.loads
    from_dict = RequestRecord.from_dict
    with open(path, "rb") as fh:
        for line in fh:
            if len(line) < 3:
                continue
            try:
                yield from_dict(loads(line))
            except (ValueError, TypeError):
                continue


def records_path(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/records.jsonl`` (or the file itself when a file is given)."""
    p = Path(run_dir)
    return p / RECORDS_FILE if p.is_dir() else p


def load_frame(run_dir: str | os.PathLike[str], slo: m.Slo | None = None) -> RunFrame:
    """Read a run's records (JSONL, streamed) into a stripped :class:`RunFrame`."""
    path = records_path(run_dir)
    b = _Builder(slo, strip=True)
    for r in _iter_jsonl(path):
        b.add(r)
    return b.build({"path": str(path)})
