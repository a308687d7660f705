"""Build a run's report: summary.json, summary.md, plots/*.png and report.html."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness import metrics as m
from harness.analysis import plots as P
from harness.analysis.frame import load_frame, records_path
from harness.analysis.html import render_report
from harness.analysis.steady import SteadyWindow
from harness.analysis.summary import analyse, parse_slo, slo_spec, write_summary
from harness.analysis.timeseries import per_second
from harness.records import BATCH_SERIES, QUEUE_SERIES, series


@dataclass
class Report:
    out_dir: Path
    summary: dict
    html: Path
    plots: list[P.Plot]
    window: SteadyWindow | None


def run_meta(run_dir: Path) -> dict:
    p = run_dir / "run.json"
    try:
        return json.loads(p.read_text()) if p.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def build_report(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
                 slo: m.Slo | str | None = None, steady: bool = True, warmup_s: float = 0.0) -> Report:
    """Everything ``harness report`` writes; ValueError when the run has no records.

    ``slo``: the SLO text as the user gave it (``"ttft_p95=500"``; the report then states it as
    "TTFT p95 <= 500 ms" with the measured value), or the parsed per-request bounds."""
    slo_terms = None
    if isinstance(slo, str):
        slo_terms = slo_spec(slo) or None
        slo = parse_slo(slo)
    run = Path(run_dir)
    path = records_path(run)
    if not path.exists() or path.stat().st_size == 0:
        raise ValueError(f"{run}: no records ({path.name} missing or empty)")
    out = P.ensure_dir(out_dir or (run if run.is_dir() else run.parent))
    frame = load_frame(path, slo)
    if len(frame) == 0:
        raise ValueError(f"{path}: no readable records")
    summary, window = analyse(frame, slo, steady, warmup_s)
    full_outcomes = m.outcome_counts(frame.records)
    summary["whole_run"] = {"requests": len(frame), "outcomes": full_outcomes}
    meta = {**run_meta(run if run.is_dir() else run.parent), "run_dir": str(run)}
    summary["run"] = {k: meta.get(k) for k in ("run_id", "scenario", "host", "users", "protocol",
                                                      "client_bound", "client_bound_reasons", "complete", "interrupted")
                      if k in meta}
    if meta.get("clock_sync"):  # distributed run: the workers' clock alignment, beside the series
        summary["clock_sync"] = meta["clock_sync"]
    write_summary(summary, out, f"Run summary: {meta.get('scenario') or run.name}")
    pdir = P.ensure_dir(out / "plots")
    ts = per_second(frame)
    plots = [P.latency_cdfs(frame, pdir)]
    if ts is not None:
        plots.append(P.time_series(ts, window, pdir))
        server = {"queue size": series(run, QUEUE_SERIES), "batch size": series(run, BATCH_SERIES)}
        sp = P.server_vs_client(server, ts, window, pdir)
        if sp is not None:
            plots.append(sp)
        plots.append(P.timeline(frame, window, ts.t0_ns, pdir))
    plots.append(P.outcomes(full_outcomes, pdir))
    plots.append(P.token_agreement(frame, pdir))
    plots += [p for fn in P.EXTRA_PLOTS.values() if (p := fn(frame, pdir)) is not None]
    note = (window.reason if window is not None else "no requests") if summary["steady_window_info"] and \
        summary["steady_window_info"]["applied"] else "not applied; whole run used" + (
            f" ({window.reason})" if window is not None else "")
    html = out / "report.html"
    html.write_text(render_report(summary, full_outcomes, [(p.title, p.path) for p in plots], meta, note,
                                  slo_terms), encoding="utf-8")
    return Report(out, summary, html, plots, window)
