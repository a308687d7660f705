"""Build a run's report: summary.json, summary.md, plots/*.png and report.html."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness import metrics as m
from harness.analysis import plots as P
from harness.analysis.frame import GAP_METRICS, REQUEST_METRICS, load_frame, records_path
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
                 slo: m.Slo | str | None = None, steady: bool = True, warmup_s: float = 0.0,
                 stream: bool | None = None, chunk_bytes: int | None = None,
                 budget_bytes: int | None = None) -> Report:
    """Everything ``harness report`` writes; ValueError when the run has no records.

    ``slo``: the SLO text as the user gave it (``"ttft_p95=500"``; the report then states it as
    "TTFT p95 <= 500 ms" with the measured value), or the parsed per-request bounds.

    ``stream``: read the records in chunks (:mod:`harness.analysis.stream`); default: when the file is
    larger than :data:`harness.analysis.stream.STREAM_MIN_BYTES`. ``chunk_bytes`` and ``budget_bytes``
    override the chunk size and the exact-values budget of that reader (tests)."""
    from harness.analysis import stream as S

    slo_terms = None
    if isinstance(slo, str):
        slo_terms = slo_spec(slo) or None
        slo = parse_slo(slo)
    run = Path(run_dir)
    path = records_path(run)
    if not path.exists() or path.stat().st_size == 0:
        raise ValueError(f"{run}: no records ({path.name} missing or empty)")
    out = P.ensure_dir(out_dir or (run if run.is_dir() else run.parent))
    if stream is None:
        stream = path.stat().st_size > S.STREAM_MIN_BYTES
    meta = {**run_meta(run if run.is_dir() else run.parent), "run_dir": str(run)}
    pdir = P.ensure_dir(out / "plots")
    if stream:
        opts = {k: v for k, v in (("chunk_bytes", chunk_bytes), ("budget_bytes", budget_bytes)) if v is not None}
        st = S.read_stream(path, slo, **opts)  # type: ignore[arg-type]
        try:
            if len(st) == 0:
                raise ValueError(f"{path}: no readable records")
            summary, window = S.analyse_stream(st, slo, steady, warmup_s)
        finally:
            S.close(st)
        full_outcomes = S.outcome_counts(st)
        n_requests = len(st)
        ts = S.per_second(st)
        sample = st.sample
        whole = st.whole.sums
        plots = [P.draw_cdfs(S.cdf_panels(st), pdir)]
        timeline_args: tuple = (S.timeline_frame(st), len(st))
        rate = whole["mismatched"] / whole["compared"] if whole["compared"] else 0.0
    else:
        frame = load_frame(path, slo)
        if len(frame) == 0:
            raise ValueError(f"{path}: no readable records")
        summary, window = analyse(frame, slo, steady, warmup_s)
        summary["percentiles"] = S.percentile_note(
            {name: "exact" for name in (*REQUEST_METRICS, *GAP_METRICS, *(n for n, _ in S.TOKEN_DISTS))})
        full_outcomes = m.outcome_counts(frame.records)
        n_requests = len(frame)
        ts = per_second(frame)
        sample, rate = frame, None
        plots = [P.latency_cdfs(frame, pdir)]
        timeline_args = (frame, None)
    summary["whole_run"] = {"requests": n_requests, "outcomes": full_outcomes}
    summary["run"] = {k: meta.get(k) for k in ("run_id", "scenario", "host", "users", "protocol",
                                                      "client_bound", "client_bound_reasons", "complete", "interrupted")
                      if k in meta}
    if meta.get("clock_sync"):  # distributed run: the workers' clock alignment, beside the series
        summary["clock_sync"] = meta["clock_sync"]
    write_summary(summary, out, f"Run summary: {meta.get('scenario') or run.name}")
    if ts is not None:
        plots.append(P.time_series(ts, window, pdir))
        server = {"queue size": series(run, QUEUE_SERIES), "batch size": series(run, BATCH_SERIES)}
        sp = P.server_vs_client(server, ts, window, pdir)
        if sp is not None:
            plots.append(sp)
        plots.append(P.timeline(timeline_args[0], window, ts.t0_ns, pdir, total=timeline_args[1]))
    plots.append(P.outcomes(full_outcomes, pdir))
    plots.append(P.token_agreement(sample, pdir, rate=rate))
    # a large run's extra plots see an evenly spread sample of its requests (RunFrame.meta["sample"])
    plots += [p for fn in P.EXTRA_PLOTS.values() if (p := fn(sample, pdir)) is not None]
    note = (window.reason if window is not None else "no requests") if summary["steady_window_info"] and \
        summary["steady_window_info"]["applied"] else "not applied; whole run used" + (
            f" ({window.reason})" if window is not None else "")
    html = out / "report.html"
    html.write_text(render_report(summary, full_outcomes, [(p.title, p.path) for p in plots], meta, note,
                                  slo_terms), encoding="utf-8")
    return Report(out, summary, html, plots, window)
