"""`harness sweep`: the CLI and the loop over caps x loads with its progress display (see the package doc).

Output: one line per finished point (cap, load, TTFT p95, ITL p99, goodput, error rate, verdict with its
evidence), flushed as the point ends - above the live bar on a terminal, on stdout when it is not one
(CI logs, pipes). Ctrl-C stops the sweep, prints the exact command that resumes it and exits 130.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from harness.analysis.boundary import interval_text
from harness.analysis.capacity import (
    DEFAULT_MIN_REQUESTS,
    DEFAULT_MIN_WINDOW_S,
    EXTENDABLE,
    Check,
    check_point,
)
from harness.analysis.summary import slo_spec
from harness.analysis.sweep_report import SweepPlan, failure_lines, inconclusive_lines, write_sweep_outputs
from harness.sweep import search
from harness.sweep.plan import (
    SettingsMismatch,
    check_settings,
    discard_points,
    fingerprint,
    make_plan,
    write_settings,
)
from harness.sweep.points import POINT_FILE, CapTarget, completed_point, run_point
from harness.usage import CliError


def judge(args: argparse.Namespace, plan: SweepPlan, point: dict) -> Check:
    """The point's verdict under the sweep's SLO, error-rate and evidence settings."""
    return check_point(point.get("summary") or {}, slo_spec(args.slo, intended=plan.axis == "rate"),
                       args.max_error_rate, getattr(args, "min_requests", DEFAULT_MIN_REQUESTS),
                       getattr(args, "min_window", DEFAULT_MIN_WINDOW_S))


def _ms(v: object) -> str:
    return f"{v:.1f} ms" if isinstance(v, int | float) else "-"


def point_line(plan: SweepPlan, point: dict, check: Check) -> str:
    """``cap 4, users 8: TTFT p95 412.0 ms, ITL p99 35.2 ms, goodput 3.10 req/s, errors 0.0%: pass
    (n 93, window 24.6 s; ttft_p95_ms 412.0 [380.2, 450.9])``: the verdict's evidence is n, the window
    and each SLO statistic's estimate [95 % interval]; an incomplete point names its error."""
    cap = "" if point["cap"] is None else f"cap {point['cap']}, "
    head = f"{cap}{plan.axis} {point['load']:g}"
    if not point.get("complete"):
        return f"{head}: incomplete: {point.get('error', '?')}"
    s = point.get("summary") or {}
    ttft = s.get("ttft_intended_p95_ms") if plan.axis == "rate" else None
    ttft = s.get("ttft_p95_ms") if ttft is None else ttft
    err = (s.get("error_rate") or 0.0) - (s.get("error_rate_cancelled") or 0.0)
    good = s.get("goodput")
    good_txt = f"{good:.2f} req/s" if isinstance(good, int | float) else "- (no SLO)"
    why = f" ({'; '.join(check.failures)})" if check.failures and not check.inconclusive else ""
    ci = "".join(f"; {k} {interval_text(t)}" for k, t in (point.get("ci") or {}).items())
    return (f"{head}: TTFT p95 {_ms(ttft)}, ITL p99 {_ms(s.get('itl_p99_ms'))}, goodput {good_txt}, "
            f"errors {err:.1%}: {check.label}{why} (n {check.n}, window {check.window_s:.1f} s{ci})")


def resume_command(out: Path, argv: list[str] | None = None) -> str:
    """The command that resumes this sweep: the same arguments without ``--restart``, with an absolute
    ``--out``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    kept: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif a != "--restart" and not a.startswith("--out="):
            kept.append(a)
    prog = ["harness"] if Path(sys.argv[0]).name == "harness" else [sys.executable, "-m", "harness"]
    return shlex.join([*prog, *kept, "--out", str(out)])


def prepare_out(args: argparse.Namespace, plan: SweepPlan) -> None:
    """Check ``--out`` against this sweep's settings (SettingsMismatch on a difference) or, with
    ``--restart``, discard the points it holds; then record the settings."""
    fp = fingerprint(args, plan)
    if getattr(args, "restart", False):
        discard_points(plan.out)
    else:
        check_settings(plan, fp)
    write_settings(plan, fp, sys.argv[1:])


def run_sweep(args: argparse.Namespace, plan: SweepPlan, console=None) -> dict:
    """Run every point not yet completed; returns sweep.json's content (also written, with sweep.html).

    Raises :class:`harness.sweep.plan.SettingsMismatch` (a ValueError) when ``plan.out`` holds a sweep
    made with other settings (see :func:`prepare_out`).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    prepare_out(args, plan)
    extend = getattr(args, "extend_inconclusive", False)
    points: list[dict] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:

        def emit(line: str) -> None:
            if console.is_terminal:  # above the live bar
                progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
                if sys.stdout.isatty():
                    return
            print(line, flush=True)

        task = progress.add_task("sweep", total=plan.total)
        for cap in plan.caps:
            target = CapTarget(args, plan.out, cap,
                               lambda cap=cap: progress.update(task, description=f"cap {cap}: starting server"))

            try:
                for load in plan.loads:
                    label = f"{'' if cap is None else f'cap {cap}, '}{plan.axis} {load:g}"
                    point = completed_point(plan, cap, load)
                    if point is not None:
                        check = judge(args, plan, point)
                        progress.update(task, description=f"{label}: done earlier")
                        emit(f"done earlier: {point_line(plan, point, check)}")
                    else:
                        host, scrape = target()
                        progress.update(task, description=f"{label}: running {args.duration + args.warmup:g} s")
                        point = run_point(args, plan, cap, load, host, scrape)
                        check = judge(args, plan, point)
                        emit(point_line(plan, point, check))
                    if extend and check.why in EXTENDABLE and not point.get("extended") and point.get("complete"):
                        longer = 2 * float(point.get("duration_s") or args.duration)
                        emit(f"{label}: inconclusive ({check.why}); running it once more for {longer:g} s")
                        host, scrape = target()
                        progress.update(task, description=f"{label}: extending, {longer + args.warmup:g} s")
                        point = run_point(args, plan, cap, load, host, scrape, duration=longer)
                        point["extended"] = True
                        if point.get("complete"):
                            (Path(point["run_dir"]) / POINT_FILE).write_text(json.dumps(point, indent=2))
                        emit(point_line(plan, point, judge(args, plan, point)))
                    points.append(point)
                    progress.update(task, advance=1)
            finally:
                target.stop()
    return write_sweep_outputs(plan, points, args.slo, args.max_error_rate,
                               getattr(args, "min_requests", DEFAULT_MIN_REQUESTS),
                               getattr(args, "min_window", DEFAULT_MIN_WINDOW_S))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--caps", default="", help="server --max-concurrent-requests values, e.g. 4,8,16,32 "
                                             "(bundled server or --server-cmd; not with --host)")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--users", default="", help="closed loop: concurrent users per point, e.g. 1,2,4,8")
    load.add_argument("--rates", default="", help="open loop: arrival rates per point, requests/s, e.g. 1,2,4")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per point (default 30)")
    p.add_argument("--warmup", type=float, default=5.0,
                   help="seconds run before the measured part of each point, cut from the numbers (default 5)")
    p.add_argument("--scenario", default=None,
                   help="locustfile (default: the packaged chat_stream scenario; open_loop with --rates; "
                        "see `harness scenarios`)")
    p.add_argument("--slo", default=None, help="SLO for capacity, ms: e.g. ttft_p95=500,itl_p99=50")
    p.add_argument("--max-error-rate", type=float, default=0.01,
                   help="a point meets the SLO only with at most this fraction of failed requests (default 0.01)")
    p.add_argument("--model", default="smollm2", help="model of the bundled server (default smollm2; 'simulated' for CI)")
    p.add_argument("--server-args", default="", help="extra arguments for `harness serve`, one string")
    p.add_argument("--server-cmd", default="",
                   help="start another server instead: a command template with {port} and {cap}")
    p.add_argument("--server-timeout", type=float, default=300.0, help="seconds to wait for /health (default 300)")
    p.add_argument("--restart-each-point", action="store_true", help="restart the server for every point")
    p.add_argument("--host", default="", help="external target URL: sweep only the load axis")
    p.add_argument("--scrape-metrics", action="store_true", help="with --host: scrape its /metrics")
    p.add_argument("--input-tokens", default="fixed:64", help="prompt length distribution (default fixed:64)")
    p.add_argument("--output-tokens", default="fixed:64", help="max_new_tokens distribution (default fixed:64)")
    p.add_argument("--locust-args", default="", help="extra Locust arguments, one string")
    p.add_argument("--min-requests", type=int, default=DEFAULT_MIN_REQUESTS,
                   help="a point with fewer ok requests in its steady window is inconclusive, neither pass nor "
                        f"fail (default {DEFAULT_MIN_REQUESTS}: below 20 values a p95 is just the maximum)")
    p.add_argument("--min-window", type=float, default=DEFAULT_MIN_WINDOW_S,
                   help="a point whose steady window is shorter (s) is inconclusive "
                        f"(default {DEFAULT_MIN_WINDOW_S:g})")
    p.add_argument("--extend-inconclusive", action="store_true",
                   help="rerun a point inconclusive for too few requests or a short window once, for twice "
                        "--duration (also points done earlier, on resume)")
    p.add_argument("--restart", action="store_true",
                   help="discard the points --out holds (e.g. made with other settings) and start afresh")
    p.add_argument("--no-point-reports", action="store_true", help="skip report.html for each point")
    p.add_argument("--out", default=None, help="sweep directory (default ./reports/sweeps/<timestamp>, under the current directory)")
    search.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "search", None):  # the adaptive boundary search instead of a grid
        return search.run_command(args)
    try:
        plan = make_plan(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        data = run_sweep(args, plan)
    except (RuntimeError, SettingsMismatch) as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: {resume_command(plan.out)}", file=sys.stderr, flush=True)
        return 130
    for line in failure_lines(data):  # before any figure: points whose failures dominate
        print(f"failures: {line}")
    for line in inconclusive_lines(data):
        print(f"inconclusive: {line}")
    rec = data["recommended"]
    if plan.caps == [None]:
        print(f"capacity: {rec['reason']}")
    else:
        print(f"recommended cap: {rec['cap'] if rec['cap'] is not None else 'none'} - {rec['reason']}")
    print(f"sweep report: {plan.out / 'sweep.html'}")
    failed = [p for p in data["points"] if not p.get("complete")]
    if failed:
        print(f"{len(failed)} point(s) did not complete: " + "; ".join(p.get("error", "?") for p in failed),
              file=sys.stderr)
        return 1
    return 0
