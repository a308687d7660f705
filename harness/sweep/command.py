"""`harness sweep`: the CLI and the loop over caps x loads with its progress display (see the package doc)."""

from __future__ import annotations

import argparse
import sys

from harness.analysis.sweep_report import SweepPlan, failure_lines, write_sweep_outputs
from harness.server_process import ServerProcess, free_port
from harness.sweep.plan import make_plan
from harness.sweep.points import completed_point, run_point, server_command
from harness.usage import CliError


def run_sweep(args: argparse.Namespace, plan: SweepPlan, console=None) -> dict:
    """Run every point not yet completed; returns sweep.json's content (also written, with sweep.html)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    plan.out.mkdir(parents=True, exist_ok=True)
    points: list[dict] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("sweep", total=plan.total)
        for cap in plan.caps:
            server: ServerProcess | None = None
            try:
                for load in plan.loads:
                    done = completed_point(plan, cap, load)
                    label = f"{'' if cap is None else f'cap {cap}, '}{plan.axis} {load:g}"
                    if done is not None:
                        points.append(done)
                        progress.update(task, advance=1, description=f"{label}: done earlier")
                        continue
                    if args.host:
                        host, scrape = args.host, args.scrape_metrics
                    else:
                        if server is None or args.restart_each_point:
                            if server is not None:
                                server.stop()
                            port = free_port()
                            server = ServerProcess(server_command(args, cap, port), port,
                                                   plan.out / f"cap-{cap}" / "server.log")
                            progress.update(task, description=f"cap {cap}: starting server")
                            server.start(args.server_timeout)
                        host, scrape = server.url, True
                    progress.update(task, description=f"{label}: running {args.duration + args.warmup:g} s")
                    points.append(run_point(args, plan, cap, load, host, scrape))
                    progress.update(task, advance=1)
            finally:
                if server is not None:
                    server.stop()
    return write_sweep_outputs(plan, points, args.slo, args.max_error_rate)


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
    p.add_argument("--no-point-reports", action="store_true", help="skip report.html for each point")
    p.add_argument("--out", default=None, help="sweep directory (default ./reports/sweeps/<timestamp>, under the current directory)")


def run(args: argparse.Namespace) -> int:
    try:
        plan = make_plan(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        data = run_sweep(args, plan)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    for line in failure_lines(data):  # before any figure: points whose failures dominate
        print(f"failures: {line}")
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
