"""`harness comply`: the CLI, one judged open-loop run per rate, and the search for the highest VALID rate."""

from __future__ import annotations

import argparse
import json
import math
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from harness.analysis.sweep_report import SweepPlan
from harness.comply.judge import Verdict, judge, shortened
from harness.comply.report import write_report
from harness.comply.rulesets import MLPERF_MIN_DURATION_S, MLPERF_MIN_QUERIES, Ruleset, load_ruleset, packaged
from harness.records import iter_records
from harness.scenarios import scenario_path
from harness.server_process import ServerProcess, free_port
from harness.sweep.points import run_point, server_command
from harness.usage import CliError

__all__ = ["add_arguments", "find_max_rate", "run", "run_length_s"]


def run_length_s(rules: Ruleset, rate: float, drain_s: float) -> float:
    """Seconds of Poisson arrivals for one run: long enough that the judged window (``min_duration_s``, and
    ``min_queries`` arrivals: expected ``min_queries / rate``, with 25 % + 3 mean gaps of margin) is
    scheduled, plus ``drain_s`` more of the same arrivals while the judged queries finish."""
    return max(rules.min_duration_s, (1.25 * rules.min_queries + 3) / rate) + drain_s


def find_max_rate(try_rate: Callable[[float], bool], start: float, floor: float, cap: float,
                  precision: float, max_runs: int) -> tuple[float | None, list[tuple[float, bool]]]:
    """The highest rate for which ``try_rate`` is True: bracket, then bisect.

    Bracket: from ``start`` double while VALID (up to ``cap``), or halve while INVALID (down to
    ``floor``), until one VALID and one INVALID rate enclose the answer. Bisect: try the midpoint of
    the VALID ``lo`` and INVALID ``hi`` until ``hi / lo - 1 <= precision``. At most ``max_runs`` trials.
    Returns (highest VALID rate tried or None, [(rate, valid), ...] in trial order).
    """
    trials: list[tuple[float, bool]] = []
    lo: float | None = None
    hi: float | None = None
    r = start
    while len(trials) < max_runs:
        ok = try_rate(r)
        trials.append((r, ok))
        if ok:
            lo = r
            if hi is not None or r * 2 > cap:
                break
            r *= 2
        else:
            hi = r
            if lo is not None or r / 2 < floor:
                break
            r /= 2
    while lo is not None and hi is not None and hi / lo - 1 > precision and len(trials) < max_runs:
        mid = float(f"{(lo + hi) / 2:.3g}")
        if mid <= lo or mid >= hi:
            break
        ok = try_rate(mid)
        trials.append((mid, ok))
        lo, hi = (mid, hi) if ok else (lo, mid)
    return lo, trials


def add_arguments(p: argparse.ArgumentParser) -> None:
    rs = p.add_mutually_exclusive_group()
    rs.add_argument("--ruleset", default=None, help="packaged ruleset, e.g. llama3.1-8b-server (see --list)")
    rs.add_argument("--rules", default=None, help="a custom ruleset TOML file (docs/comply.md)")
    p.add_argument("--list", action="store_true", help="list the packaged rulesets and exit")
    p.add_argument("--rate", type=float, default=None,
                   help="Poisson arrival rate, requests/s (with --find-max-rate: the first rate tried)")
    p.add_argument("--find-max-rate", action="store_true", help="search the highest VALID rate (bracket + bisect)")
    p.add_argument("--max-rate", type=float, default=1024.0, help="search: never try above this rate (default 1024)")
    p.add_argument("--min-rate", type=float, default=0.01, help="search: never try below this rate (default 0.01)")
    p.add_argument("--precision", type=float, default=0.1,
                   help="search: stop when the INVALID rate is within this fraction of the VALID one (default 0.1)")
    p.add_argument("--max-runs", type=int, default=10, help="search: at most this many runs (default 10)")
    p.add_argument("--min-duration", type=float, default=None,
                   help="override the ruleset's minimum duration, s (below 600 only with --shorten)")
    p.add_argument("--min-queries", type=int, default=None,
                   help="override the ruleset's minimum query count (below 100 only with --shorten)")
    p.add_argument("--shorten", action="store_true",
                   help="allow minimums below MLPerf's; every result is marked 'not MLPerf-valid: shortened'")
    p.add_argument("--drain", type=float, default=30.0,
                   help="seconds of further arrivals after the judged window, so its queries can finish (default 30)")
    p.add_argument("--host", default="", help="the endpoint under test (else the bundled server is started)")
    p.add_argument("--model", default="smollm2", help="bundled server's model (default smollm2; 'simulated' for CI)")
    p.add_argument("--server-args", default="", help="extra arguments for `harness serve`, one string")
    p.add_argument("--server-cmd", default="", help="start another server: a command template with {port} and {cap}")
    p.add_argument("--server-cap", type=int, default=256,
                   help="bundled server's --max-concurrent-requests (default 256)")
    p.add_argument("--server-timeout", type=float, default=300.0, help="seconds to wait for /health (default 300)")
    p.add_argument("--scenario", default=None, help="open-loop locustfile (default: the packaged open_loop)")
    p.add_argument("--input-tokens", default="fixed:64", help="prompt length distribution (default fixed:64)")
    p.add_argument("--output-tokens", default="fixed:64", help="max_new_tokens distribution (default fixed:64)")
    p.add_argument("--locust-args", default="", help="extra Locust arguments, one string (e.g. '--processes 4 -u 4')")
    p.add_argument("--point-reports", action="store_true", help="also write report.html for each run")
    p.add_argument("--out", default=None, help="output directory (default ./reports/comply/<timestamp>)")


def _rules(args: argparse.Namespace) -> Ruleset:
    if not (args.ruleset or args.rules):
        raise CliError("give --ruleset NAME (see --list) or --rules PATH")
    try:
        rules = load_ruleset(args.ruleset or args.rules)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.min_duration is not None:
        if args.min_duration <= 0:
            raise CliError("--min-duration must be > 0")
        rules = replace(rules, min_duration_s=args.min_duration)
    if args.min_queries is not None:
        if args.min_queries <= 0:
            raise CliError("--min-queries must be > 0")
        rules = replace(rules, min_queries=args.min_queries)
    if shortened(rules) and not args.shorten:
        raise CliError(f"minimums {rules.min_duration_s:g} s / {rules.min_queries} queries are below MLPerf's "
                       f"({MLPERF_MIN_DURATION_S:g} s / {MLPERF_MIN_QUERIES}); add --shorten to run a "
                       "shortened, not MLPerf-valid check")
    return rules


def _validate(args: argparse.Namespace) -> None:
    if args.rate is None or not args.rate > 0:
        raise CliError("--rate must be given and > 0 (requests/s)")
    if args.host and not args.host.startswith(("http://", "https://")):
        raise CliError(f"--host {args.host!r}: expected a URL such as http://127.0.0.1:3000")
    if args.drain < 0 or args.precision <= 0 or args.max_runs < 1 or not 0 < args.min_rate <= args.max_rate:
        raise CliError("--drain >= 0, --precision > 0, --max-runs >= 1 and 0 < --min-rate <= --max-rate")
    if args.scenario is None:
        args.scenario = str(scenario_path("open_loop"))
    if not Path(args.scenario).is_file():
        raise CliError(f"--scenario {args.scenario}: no such file")
    args.scenario = str(Path(args.scenario).resolve())


def _reachable(url: str, timeout_s: float = 5.0) -> None:
    """CliError unless a TCP connection to ``url``'s host and port opens (a long run against nothing is no check)."""
    u = urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        socket.create_connection((u.hostname or "", port), timeout=timeout_s).close()
    except OSError as exc:
        raise CliError(f"--host {url}: cannot connect ({exc.strerror or exc})") from None


def _line(rate: float, v: Verdict) -> str:
    f = v.facts
    ttft, tpot = f.get("ttft", {}), f.get("tpot", {})
    p = f.get("ruleset", {}).get("percentile", 99.0)
    head = (f"rate {rate:g}/s: {v.label}  {f.get('queries', 0)} queries over {f.get('duration_s', 0):.1f} s; "
            f"TTFT p{p:g} {ttft.get('p', math.nan):.1f} ms ({ttft.get('over_limit', 0)} over), "
            f"TPOT p{p:g} {tpot.get('p', math.nan):.1f} ms ({tpot.get('over_limit', 0)} over)")
    return head + "".join(f"\n    - {r}" for r in v.reasons)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, path in packaged().items():
            r = load_ruleset(str(path))
            print(f"{name:28s} TTFT p{r.percentile:g} <= {r.ttft_ms:g} ms, TPOT p{r.percentile:g} <= {r.tpot_ms:g} ms")
        return 0
    rules = _rules(args)
    _validate(args)
    out = Path(args.out or Path("reports") / "comply" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cap = None if args.host else args.server_cap
    plan = SweepPlan([cap], "rate", [], out)
    runs: list[dict] = []
    server: ServerProcess | None = None

    def try_rate(rate: float) -> bool:
        ns = argparse.Namespace(**vars(args))
        ns.duration, ns.warmup, ns.slo = run_length_s(rules, rate, args.drain), 0.0, None
        ns.no_point_reports = not args.point_reports
        print(f"rate {rate:g}/s: running {ns.duration:.0f} s of Poisson arrivals ...", flush=True)
        point = run_point(ns, plan, cap, rate, args.host or server.url, scrape=False)  # type: ignore[union-attr]
        d = Path(point["run_dir"])
        verdict = judge(list(iter_records(d)), rules)
        if point.get("error"):
            verdict.valid = False
            verdict.reasons.append(point["error"])
        entry = {"rate": rate, "run_dir": str(d), **verdict.as_dict()}
        (d / "comply.json").write_text(json.dumps(entry, indent=2, default=str))
        runs.append(entry)
        print(_line(rate, verdict), flush=True)
        return verdict.valid

    if args.host:
        _reachable(args.host)
    try:
        if not args.host:
            port = free_port()
            try:
                server = ServerProcess(server_command(args, args.server_cap, port), port, out / "server.log")
            except ValueError as exc:
                raise CliError(str(exc)) from None
            print(f"starting the bundled server ({args.model}) ...", flush=True)
            try:
                server.start(args.server_timeout)
            except RuntimeError as exc:
                raise CliError(str(exc).splitlines()[0]) from None
        if args.find_max_rate:
            best, _ = find_max_rate(try_rate, args.rate, args.min_rate, args.max_rate, args.precision,
                                    args.max_runs)
        else:
            best = args.rate if try_rate(args.rate) else None
    finally:
        if server is not None:
            server.stop()
    result = {"ruleset": rules.as_dict(), "target": args.host or f"bundled server ({args.model})",
              "search": bool(args.find_max_rate), "max_valid_rate": best, "runs": runs,
              "marks": runs[-1]["marks"] if runs else [],
              "note": "checks an endpoint against MLPerf's published latency constraints; not an MLPerf submission"}
    (out / "comply.json").write_text(json.dumps(result, indent=2, default=str))
    write_report(result, out / "comply.html")
    for mark in result["marks"]:
        print(f"!! {mark}")
    if args.find_max_rate:
        print(f"highest VALID rate: {best:g} requests/s" if best is not None else
              "no VALID rate found (lowest tried was INVALID)")
    else:
        print(f"result: {'VALID' if best is not None else 'INVALID'}")
    print(f"report: {out / 'comply.html'}")
    return 0 if best is not None else 1
