"""One sweep point: the server's and Locust's command lines, the headless run, its analysis and point.json."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness.analysis.boundary import bootstrap_ci
from harness.analysis.frame import load_frame, records_path
from harness.analysis.report import build_report
from harness.analysis.summary import analyse, parse_slo, slo_spec, split_key, write_summary
from harness.analysis.sweep_report import SweepPlan
from harness.server_process import ServerProcess, free_port, serve_command

POINT_FILE = "point.json"


def server_command(args: argparse.Namespace, cap: int, port: int) -> list[str]:
    """The server of one cap: ``--server-cmd`` with ``{port}``/``{cap}``, else the bundled ``harness serve``."""
    if args.server_cmd:
        try:
            return shlex.split(args.server_cmd.format(port=port, cap=cap))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"--server-cmd: bad template ({exc}); use {{port}} and {{cap}}") from None
    return serve_command(["--model", args.model, "--max-concurrent-requests", str(cap),
                          "--graceful-termination-timeout", "5", *shlex.split(args.server_args or "")], port)


class CapTarget:
    """Where one cap's points send their load: ``--host`` as given, or the bundled server (or
    ``--server-cmd``) for this cap, started before the first point that runs (again before each point
    with ``--restart-each-point``) and stopped by :meth:`stop`. Calling it gives ``(url, scrape)``."""

    def __init__(self, args: argparse.Namespace, out: Path, cap: int | None,
                 on_start: Callable[[], None] | None = None) -> None:
        self.args, self.out, self.cap, self.on_start = args, out, cap, on_start
        self.server: ServerProcess | None = None

    def __call__(self) -> tuple[str, bool]:
        args = self.args
        if args.host:
            return args.host, args.scrape_metrics
        if self.server is None or args.restart_each_point:
            self.stop()
            port = free_port()
            self.server = ServerProcess(server_command(args, self.cap, port), port,
                                        self.out / f"cap-{self.cap}" / "server.log")
            if self.on_start is not None:
                self.on_start()
            self.server.start(args.server_timeout)
        return self.server.url, True

    def stop(self) -> None:
        """Stop the server of this cap, if one runs."""
        if self.server is not None:
            self.server.stop()
            self.server = None


def locust_command(args: argparse.Namespace, plan: SweepPlan, host: str, load: float, run_dir: Path,
                   scrape: bool, duration: float | None = None) -> list[str]:
    """``locust --headless`` for one point (closed loop: -u LOAD; open loop: --rate LOAD) into ``run_dir``;
    it runs ``warmup + duration`` s (``duration`` default ``args.duration``)."""
    duration = args.duration if duration is None else duration
    run_s = max(1, int(round(duration + args.warmup)))
    cmd = [sys.executable, "-m", "locust", "-f", str(args.scenario), "--host", host, "--headless",
           "-t", f"{run_s}s", "--run-dir", str(run_dir), "--only-summary", "--loglevel", "WARNING",
           "--input-tokens", args.input_tokens, "--output-tokens", args.output_tokens]
    if plan.axis == "users":
        cmd += ["-u", str(int(load)), "-r", str(int(load))]
    else:
        cmd += ["-u", "1", "-r", "1", "--rate", f"{load:g}"]
    if scrape:
        cmd.append("--scrape-metrics")
    return cmd + shlex.split(args.locust_args or "")


def run_point(args: argparse.Namespace, plan: SweepPlan, cap: int | None, load: float, host: str,
              scrape: bool, duration: float | None = None) -> dict:
    """Run Locust for one point (``duration`` measured s, default ``args.duration``), analyse it, write
    point.json; returns the point's record (``duration_s``: the measured seconds it ran for)."""
    duration = args.duration if duration is None else duration
    d = plan.point_dir(cap, load)
    if d.exists():  # an interrupted earlier attempt (or a point being extended): start the point afresh
        (d / POINT_FILE).unlink(missing_ok=True)
        for name in ("records.jsonl", "server_metrics.jsonl", "summary.json", "summary.md", "run.json"):
            (d / name).unlink(missing_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    cmd = locust_command(args, plan, host, load, d, scrape, duration)
    (d / "locust.cmd").write_text(shlex.join(cmd) + "\n")
    timeout = duration + args.warmup + 120
    with open(d / "locust.log", "wb") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=d, timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = -9
    rp = records_path(d)
    point = {"cap": cap, "load": load, "axis": plan.axis, "run_dir": str(d), "locust_exit_code": rc,
             "complete": False, "duration_s": duration}
    if not rp.exists() or rp.stat().st_size == 0:
        point["error"] = f"locust exited with {rc} and wrote no records; see {d / 'locust.log'}"
        return point
    slo = parse_slo(args.slo)
    frame = load_frame(d, slo)
    summary, _ = analyse(frame, slo, warmup_s=args.warmup)
    write_summary(summary, d / "analysis", f"cap {cap} / {plan.axis} {load:g}")
    if not args.no_point_reports:
        build_report(d, d / "report", slo, warmup_s=args.warmup)
    point.update(complete=rc in (0, 1), summary=summary,
                 steady_window=summary.get("steady_window_info"))
    point["ci"] = slo_intervals(args.slo, plan.axis, d, point)
    if rc not in (0, 1):
        point["error"] = f"locust exited with {rc}; see {d / 'locust.log'}"
    (d / POINT_FILE).write_text(json.dumps(point, indent=2))
    return point


def slo_intervals(slo_text: str | None, axis: str, run_dir: Path, point: dict) -> dict[str, dict]:
    """Evidence of a point's verdict: per SLO statistic it is judged on (``ttft_p95_ms``, ...), the
    estimate and 95 % cluster-bootstrap interval, ms (:func:`harness.analysis.boundary.bootstrap_ci`:
    requests resampled with all their values) over its steady window's ok requests, with the bound."""
    from harness.sweep.search import term_values  # the search's reading of a statistic's values (kept once)

    out: dict[str, dict] = {}
    for key, bound in slo_spec(slo_text, intended=axis == "rate").values():
        parts = split_key(key)
        if parts is None:
            continue
        values, rows = term_values(run_dir, point, key, slo_text)
        out[key] = {**bootstrap_ci(values, rows, parts[1]).as_dict(), "bound_ms": bound}
    return out


def completed_point(plan: SweepPlan, cap: int | None, load: float) -> dict | None:
    """The point's record when an earlier run completed it (resume), else None."""
    p = plan.point_dir(cap, load) / POINT_FILE
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if data.get("complete") else None
