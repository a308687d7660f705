"""pandas for users: ``harness.load_run(RUN_DIR)`` and ``harness export RUN_DIR --format csv|parquet``.

:func:`load_run` returns one row per request of the run (``records.jsonl``; a truncated last line is
skipped) with:

- identity and outcome: ``request_id``, ``scenario``, ``worker``, ``user``, ``protocol``, ``target``,
  ``outcome`` (:class:`harness.records.Outcome`), ``ok`` (bool), ``http_status``, ``finish_reason``,
  ``error_text``, ``retries``;
- every per-request metric of the dictionary (:data:`harness.metrics.METRICS`, scope ``request``) as
  ``<name>_ms``: ``ttft_ms``, ``ttft_intended_ms``, ``ttfb_ms``, ``tpot_ms``, ``e2e_ms``,
  ``e2e_intended_ms``, ``schedule_lag_ms`` (NaN where the metric is not defined for the request);
- every gap metric (scope ``gap``) as a list column ``<name>_ms`` (``itl_ms``: all inter-token gaps of
  the request) and its largest gap ``<name>_max_ms``;
- token counts: ``output_tokens`` (:func:`harness.metrics.output_tokens`), ``output_tokens_server``,
  ``output_tokens_events``, ``output_tokens_retokenized``, ``input_tokens_server``,
  ``input_tokens_client``, and ``token_mismatch``;
- ``send_ns`` and ``end_ns`` (monotonic ns) and ``send_time`` (wall clock, from run.json's anchor).

Latency percentiles of the reports are taken over ok requests only: filter with ``df[df.ok]``. The
fast analysis path (reports, gates, sweeps) stays on numpy (:mod:`harness.analysis.frame`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from harness import metrics as m
from harness.records import RECORDS_FILE, iter_records, records_file

IDENTITY = ("request_id", "scenario", "worker", "user", "protocol", "target", "outcome", "http_status",
            "finish_reason", "error_text", "retries")
TOKEN_FIELDS = ("output_tokens_server", "output_tokens_events", "output_tokens_retokenized",
                "input_tokens_server", "input_tokens_client")
FORMATS = ("csv", "parquet")


def _anchor(run_dir: Path) -> tuple[int, int] | None:
    try:
        meta = json.loads((run_dir / "run.json").read_text())
        return int(meta["wall_anchor_ns"]), int(meta["mono_anchor_ns"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_run(run_dir: str | os.PathLike[str]):  # -> pandas.DataFrame
    """One row per request of ``run_dir`` (or a records.jsonl path); columns in the module docstring.

    ValueError when the run has no records file.
    """
    import pandas as pd

    path = records_file(run_dir)
    if not path.exists():
        raise ValueError(f"{run_dir}: no {RECORDS_FILE}")
    nan = math.nan
    request = [(f"{name}_{d.unit}", d.fn) for name, d in m.METRICS.items() if d.scope == "request"]
    gaps = [(f"{name}_{d.unit}", d.fn) for name, d in m.METRICS.items() if d.scope == "gap"]
    rows = []
    for r in iter_records(path):
        row: dict = {k: getattr(r, k) for k in IDENTITY}
        row["ok"] = r.ok
        for col, fn in request:
            v = fn(r)
            row[col] = nan if v is None else v
        for col, fn in gaps:
            g = fn(r)
            row[col] = g
            row[col.removesuffix("_ms") + "_max_ms"] = max(g) if g else nan
        row["output_tokens"] = m.output_tokens(r)
        for k in TOKEN_FIELDS:
            row[k] = getattr(r, k)
        mism = m.token_mismatch(r)
        row["token_mismatch"] = None if mism is None else bool(mism)
        row["send_ns"], row["end_ns"] = r.send_ns, r.end_ns
        rows.append(row)
    columns = [*IDENTITY, "ok", *(c for c, _ in request), *(c for g, _ in gaps for c in (g, g[:-3] + "_max_ms")),
               "output_tokens", *TOKEN_FIELDS, "token_mismatch", "send_ns", "end_ns"]
    df = pd.DataFrame.from_records(rows, columns=columns)
    for k in TOKEN_FIELDS + ("http_status", "send_ns", "end_ns"):
        df[k] = df[k].astype("Int64")
    anchor = _anchor(path.parent)
    if anchor is not None:
        wall, mono = anchor
        df["send_time"] = pd.to_datetime(df["send_ns"].astype("Float64") - mono + wall, unit="ns", utc=True)
    return df


def export(run_dir: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str] | None = None) -> Path:
    """Write :func:`load_run`'s frame as CSV (list columns as JSON arrays) or parquet; returns the path.

    Default ``out``: ``RUN_DIR/requests.<fmt>``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    df = load_run(run_dir)
    base = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
    dest = Path(out) if out else base / f"requests.{fmt}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        df.to_parquet(dest, index=False)
    else:
        flat = df.copy()
        for col in flat.columns:
            if col.endswith("_ms") and flat[col].dtype == object:
                flat[col] = flat[col].map(json.dumps)
        flat.to_csv(dest, index=False)
    return dest


# --------------------------------------------------------------------------- `harness export`


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding records.jsonl")
    p.add_argument("--format", default="csv", choices=FORMATS, help="csv (default) or parquet")
    p.add_argument("--out", default=None, help="output file (default RUN_DIR/requests.<format>)")


def run(args: argparse.Namespace) -> int:
    from harness.usage import CliError

    if not Path(args.run_dir).exists():
        raise CliError(f"{args.run_dir}: no such run directory")
    try:
        dest = export(args.run_dir, args.format, args.out)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {dest}")
    return 0
