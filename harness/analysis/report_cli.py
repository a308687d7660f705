"""`harness report RUN_DIR [--out DIR] [--slo ttft_p95=500,...]`: summary.json, summary.md, plots, report.html."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding records.jsonl")
    p.add_argument("--out", default=None, help="output directory (default: RUN_DIR)")
    p.add_argument("--slo", default=None,
                   help="per-request SLO bounds in ms for goodput, e.g. ttft_p95=500,itl_p99=50,e2e=5000")
    p.add_argument("--whole-run", action="store_true",
                   help="headline numbers over the whole run instead of the detected steady window")
    p.add_argument("--warmup", type=float, default=0.0, metavar="S",
                   help="also skip at least S seconds from the first send (warm-up)")


def run(args: argparse.Namespace) -> int:
    from harness.analysis.report import build_report, run_meta
    from harness.analysis.summary import parse_slo, run_state
    from harness.usage import CliError

    run_dir = Path(args.run_dir)
    if not run_dir.exists():
        raise CliError(f"{run_dir}: no such run directory")
    try:
        parse_slo(args.slo)  # bad SLO text: one line before any work
        rep = build_report(run_dir, args.out, args.slo or None, steady=not args.whole_run, warmup_s=args.warmup)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    s = rep.summary
    print(f"{s['requests']:,} requests ({s['ok']:,} ok) in the steady window; "
          f"TTFT p50 {s.get('ttft_p50_ms') or 0:.1f} ms, ITL p50 {s.get('itl_p50_ms') or 0:.1f} ms, "
          f"{s['output_tokens_per_s']:.1f} tokens/s, overload rate {s['overload_rate']:.2%}")
    if state := run_state(run_meta(run_dir if run_dir.is_dir() else run_dir.parent)):
        print(state)
    print(f"report: {rep.html}")
    return 0
