"""`harness sweep`: server concurrency caps x offered load, one headless Locust run per point.

For each cap the bundled server (``python -m harness serve --model M --max-concurrent-requests CAP``,
or ``--server-cmd`` with ``{port}`` and ``{cap}``) is started on a free loopback port and stopped
after that cap's load points (``--restart-each-point``: restarted for every point). Against an
external ``--host`` only the load axis is swept. Each point runs ``locust --headless`` as a
subprocess into its own run dir (kept), is analysed like ``harness report`` (steady window, at
least ``--warmup`` seconds cut) and gets a ``point.json`` completion marker; a rerun of the same
sweep skips completed points (resume). At the end ``sweep.json`` and ``sweep.html`` hold the
percentiles, throughput, overload rate and goodput vs load per cap, the capacity table and the
recommended cap (harness.analysis.capacity). Closed-loop users back off after failed or refused
requests (``--failure-backoff`` of the scenario, default 0.1,5 s), so users above a cap show the overload
without flooding the server; a point whose attempts mostly failed for another reason than overload is
reported as inconclusive, never as a capacity figure, and is printed first.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POINT_FILE = "point.json"
@dataclass
class SweepPlan:
    caps: list[int | None]
    axis: str  #: "users" (closed loop) or "rate" (open loop)
    loads: list[float]
    out: Path

    def point_dir(self, cap: int | None, load: float) -> Path:
        cap_part = "external" if cap is None else f"cap-{cap}"
        return self.out / cap_part / f"{self.axis}-{load:g}"

    @property
    def total(self) -> int:
        return len(self.caps) * len(self.loads)


def parse_list(text: str | None, kind: type, name: str) -> list:
    """``"4,8,16"`` -> ``[4, 8, 16]``; ValueError naming the option on anything else."""
    if not text:
        return []
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = kind(part)
        except ValueError:
            raise ValueError(f"{name}: {part!r} is not a {'whole number' if kind is int else 'number'}") from None
        if v <= 0:
            raise ValueError(f"{name}: {part!r} must be positive")
        out.append(v)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: repeated values in {text!r}")
    return sorted(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process for one cap, on a free loopback port; ready when /health answers 200."""

    def __init__(self, cmd: list[str], port: int, log_path: Path) -> None:
        self.cmd, self.port, self.log_path = cmd, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float) -> None:
        import httpx

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with status {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def server_command(args: argparse.Namespace, cap: int, port: int) -> list[str]:
    if args.server_cmd:
        try:
            return shlex.split(args.server_cmd.format(port=port, cap=cap))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"--server-cmd: bad template ({exc}); use {{port}} and {{cap}}") from None
    return [sys.executable, "-m", "harness", "serve", "--model", args.model, "--host", "127.0.0.1",
            "--port", str(port), "--max-concurrent-requests", str(cap), "--graceful-termination-timeout", "5",
            *shlex.split(args.server_args or "")]


def locust_command(args: argparse.Namespace, plan: SweepPlan, host: str, load: float, run_dir: Path,
                   scrape: bool) -> list[str]:
    run_s = max(1, int(round(args.duration + args.warmup)))
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
              scrape: bool) -> dict:
    """Run Locust for one point, analyse it, write point.json; returns the point's record."""
    from harness.analysis.frame import load_frame, records_path
    from harness.analysis.summary import analyse, parse_slo, write_summary

    d = plan.point_dir(cap, load)
    if d.exists():  # an interrupted earlier attempt: start the point afresh
        for name in ("records.jsonl", "server_metrics.jsonl", "summary.json", "summary.md", "run.json"):
            (d / name).unlink(missing_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    cmd = locust_command(args, plan, host, load, d, scrape)
    (d / "locust.cmd").write_text(shlex.join(cmd) + "\n")
    timeout = args.duration + args.warmup + 120
    with open(d / "locust.log", "wb") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = -9
    rp = records_path(d)
    point = {"cap": cap, "load": load, "axis": plan.axis, "run_dir": str(d), "locust_exit_code": rc,
             "complete": False}
    if not rp.exists() or rp.stat().st_size == 0:
        point["error"] = f"locust exited with {rc} and wrote no records; see {d / 'locust.log'}"
        return point
    slo = parse_slo(args.slo)
    frame = load_frame(d, slo)
    summary, _ = analyse(frame, slo, warmup_s=args.warmup)
    write_summary(summary, d / "analysis", f"cap {cap} / {plan.axis} {load:g}")
    if not args.no_point_reports:
        from harness.analysis.report import build_report

        build_report(d, d / "report", slo, warmup_s=args.warmup)
    point.update(complete=rc in (0, 1), summary=summary,
                 steady_window=summary.get("steady_window_info"))
    if rc not in (0, 1):
        point["error"] = f"locust exited with {rc}; see {d / 'locust.log'}"
    (d / POINT_FILE).write_text(json.dumps(point, indent=2))
    return point


def completed_point(plan: SweepPlan, cap: int | None, load: float) -> dict | None:
    """The point's record when an earlier run completed it (resume), else None."""
    p = plan.point_dir(cap, load) / POINT_FILE
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if data.get("complete") else None


def run_sweep(args: argparse.Namespace, plan: SweepPlan, console=None) -> dict:
    """Run every point not yet completed; returns sweep.json's content (also written, with sweep.html)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.analysis.sweep_report import write_sweep_outputs

    console = console or Console(stderr=True)
    plan.out.mkdir(parents=True, exist_ok=True)
    points: list[dict] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("sweep", total=plan.total)
        for cap in plan.caps:
            server: Server | None = None
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
                            server = Server(server_command(args, cap, port), port,
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
                   help="locustfile (default scenarios/chat_stream.py; scenarios/open_loop.py with --rates)")
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
    p.add_argument("--out", default=None, help="sweep directory (default reports/sweeps/<timestamp>)")


def make_plan(args: argparse.Namespace) -> SweepPlan:
    """Validate the arguments into a plan; ValueError with one line on bad input."""
    caps = parse_list(args.caps, int, "--caps")
    if args.host and caps:
        raise ValueError("--caps restarts the bundled server; with an external --host only the load axis is swept")
    if not args.host and not caps:
        raise ValueError("give --caps (bundled server or --server-cmd) or an external --host")
    if args.host and not args.host.startswith(("http://", "https://")):
        raise ValueError(f"--host {args.host!r}: expected a URL such as http://127.0.0.1:3000")
    if args.rates:
        axis, loads = "rate", parse_list(args.rates, float, "--rates")
    else:
        axis, loads = "users", parse_list(args.users or "1,2,4,8", int, "--users")
    if args.duration <= 0 or args.warmup < 0:
        raise ValueError("--duration must be > 0 and --warmup >= 0")
    if args.scenario is None:
        args.scenario = str(ROOT / "scenarios" / ("open_loop.py" if axis == "rate" else "chat_stream.py"))
    if not Path(args.scenario).exists():
        raise ValueError(f"--scenario {args.scenario}: no such file")
    args.scenario = str(Path(args.scenario).resolve())  # Locust runs with another working directory
    from harness.analysis.summary import parse_slo

    parse_slo(args.slo)
    # absolute: each point's Locust runs in ROOT, so a relative --out would land in the checkout
    out = Path(args.out).resolve() if args.out else ROOT / "reports" / "sweeps" / time.strftime("%Y%m%d-%H%M%S")
    return SweepPlan(caps or [None], axis, [float(x) for x in loads], out)


def run(args: argparse.Namespace) -> int:
    from harness.cli import CliError

    try:
        plan = make_plan(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        data = run_sweep(args, plan)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    from harness.analysis.sweep_report import failure_lines

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
