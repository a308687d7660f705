"""Request rate per worker: client CPU per request (apart from its CPU per token) and the requests/s
one Locust process sustains, open loop against the simulated server with tiny outputs.

Server: TTFT 20 ms, ``--tokens`` token events 5 ms apart (default 8; the issue's short-request
script), no jitter, a cap well above the load. Client: one headless Locust process running
scenarios/open_loop.py (Poisson arrivals at ``--rate``; ``--max-inflight`` streams, an arrival beyond
them is dropped). Per rate, over the window after ``--warmup`` (CPU from /proc via psutil):

- ``cpu_us_per_request`` = client CPU s / requests sent in the window x 1e6 (tokens included);
- schedule lag = send_ns - intended_ns (p50/p99, ms), drops (outcome ``dropped``), and TTFT from the
  intended start (p99, ms; the script's TTFT is 20 ms);
- split: the same rate is run again with ``--tokens-b`` tokens (default 32); with per-request cost
  ``a`` and per-token cost ``b`` (cpu/request = a + b x tokens): ``b = (c_B - c_A) / (tokens_b - tokens)``,
  ``a = c_A - b x tokens``;
- ``requests_per_core_s`` = 1e6 / cpu_us_per_request: the rate at which the client's process would
  fill one core of its own (an upper bound: lag grows before a core is full); with two or more rates
  also the marginal cost (:func:`marginal`: the fixed CPU of an idle Locust process, its 1 s
  flusher and stats, apart).

Server and client share the machine; on a loaded machine lag and drops measure the machine as
much as the client (the load average is printed and kept in the JSON).

    .venv/bin/python benchmarks/request_rate.py [--rates 200,500] [--duration 12] [--tokens 8 --tokens-b 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

from harness.metrics import distribution
from harness.records import Outcome, iter_records
from harness.server_process import ServerProcess

SCENARIO = benchlib.ROOT / "scenarios" / "open_loop.py"
TTFT_MS, ITL_MS = 20.0, 5.0


def _cpu_s(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def run_rate(rate: float, tokens: int, duration_s: float, warmup_s: float, max_inflight: int, out: Path) -> dict:
    """One open-loop run at ``rate`` requests/s of ``tokens`` tokens; figures of its window (module doc)."""
    out.mkdir(parents=True, exist_ok=True)
    server = ServerProcess.serve(["--model", "simulated", "--sim-ttft-ms", f"{TTFT_MS:g}",
                                  "--sim-ttft-per-input-token-ms", "0", "--sim-itl-ms", f"{ITL_MS:g}",
                                  "--sim-jitter-ms", "0", "--sim-batch-slowdown", "0", "--sim-output-tokens", "0",
                                  "--max-concurrent-requests", str(max(1024, 2 * max_inflight)),
                                  "--log-level", "warning"], out, 60.0, log_name="server.log")
    run_dir = out / "run"
    cmd = [sys.executable, "-m", "locust", "-f", str(SCENARIO), "--host", server.url, "--headless", "-u", "1",
           "-r", "1", "-t", f"{max(2, round(duration_s))}s", "--stop-timeout", "0", "--only-summary",
           "--loglevel", "WARNING", "--run-dir", str(run_dir), "--rate", f"{rate:g}",
           "--max-inflight", str(max_inflight), "--input-tokens", "fixed:8", "--output-tokens", f"fixed:{tokens}"]
    try:
        with open(out / "locust.log", "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=out)
            time.sleep(1.0 + warmup_s)  # Locust's start-up, then the warm-up
            assert server.proc is not None
            c0, s0, m0 = _cpu_s(proc.pid), _cpu_s(server.proc.pid), time.monotonic_ns()
            time.sleep(max(0.5, duration_s - warmup_s - 0.5))
            c1, s1, m1 = _cpu_s(proc.pid), _cpu_s(server.proc.pid), time.monotonic_ns()
            rc = proc.wait(timeout=duration_s + 60)
    finally:
        server.stop()
    records = list(iter_records(run_dir / "records.jsonl"))
    win = [r for r in records if r.intended_ns is not None and m0 <= r.intended_ns < m1]
    sent = [r for r in win if r.send_ns is not None]
    drops = sum(1 for r in win if r.outcome == Outcome.DROPPED.value)
    lag = distribution((r.send_ns - r.intended_ns) / 1e6 for r in sent)
    ttft = distribution((r.token_ns[0] - r.intended_ns) / 1e6 for r in sent if r.ok and r.token_ns)
    cpu_s = c1 - c0
    return {"rate": rate, "tokens": tokens, "locust_exit_code": rc, "window_s": round((m1 - m0) / 1e9, 3),
            "arrivals": len(win), "sent": len(sent), "ok": sum(1 for r in sent if r.ok), "dropped": drops,
            "achieved_rate": round(len(sent) / ((m1 - m0) / 1e9), 1), "client_cpu_s": round(cpu_s, 3),
            "client_cpu_percent": round(100 * cpu_s / ((m1 - m0) / 1e9), 1),
            "server_cpu_percent": round(100 * (s1 - s0) / ((m1 - m0) / 1e9), 1),
            "cpu_us_per_request": round(cpu_s / len(sent) * 1e6, 1) if sent else None,
            "lag_ms": lag, "ttft_from_intended_ms": ttft, "load_avg_1m": round(os.getloadavg()[0], 2)}


def marginal(rows: list[dict]) -> dict | None:
    """Client CPU as ``fixed + rate x per_request`` fitted through the lowest and highest rate (``--tokens``
    runs): per_request = (CPU/s at r2 - CPU/s at r1) / (r2 - r1) from the achieved rates, and
    requests_per_core_s = (1 - fixed) / per_request. None with fewer than two rates or no slope."""
    pts = sorted((r["a"]["achieved_rate"], r["a"]["client_cpu_percent"] / 100) for r in rows)
    if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
        return None
    (r1, c1), (r2, c2) = pts[0], pts[-1]
    per = (c2 - c1) / (r2 - r1)
    if per <= 0:
        return None
    fixed = c1 - per * r1
    return {"us_per_request": round(per * 1e6, 1), "fixed_percent": round(100 * fixed, 1),
            "requests_per_core_s": round((1 - fixed) / per, 0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="200,500", help="comma-separated requests/s (default 200,500)")
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--tokens-b", type=int, default=32, help="second token count for the per-token split")
    ap.add_argument("--duration", type=float, default=12.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--max-inflight", type=int, default=256)
    ap.add_argument("--out", default=None, help="JSON dir (default reports/bench)")
    a = ap.parse_args()
    try:
        rates = [float(x) for x in a.rates.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--rates: not a list of numbers: {a.rates!r}")
    if not rates or min(rates) <= 0 or a.tokens < 1 or a.tokens_b <= a.tokens or a.duration < a.warmup + 2:
        ap.error("need positive --rates, 1 <= --tokens < --tokens-b and --duration >= --warmup + 2")
    st = benchlib.stamp()
    rows = []
    with tempfile.TemporaryDirectory(prefix="request-rate-") as tmp:
        for rate in rates:
            ra = run_rate(rate, a.tokens, a.duration, a.warmup, a.max_inflight, Path(tmp) / f"{rate:g}-a")
            rb = run_rate(rate, a.tokens_b, a.duration, a.warmup, a.max_inflight, Path(tmp) / f"{rate:g}-b")
            row = {"rate": rate, "a": ra, "b": rb}
            ca, cb = ra["cpu_us_per_request"], rb["cpu_us_per_request"]
            if ca and cb:
                per_token = (cb - ca) / (a.tokens_b - a.tokens)
                row.update(cpu_us_per_token=round(per_token, 2), cpu_us_per_request_alone=round(ca - per_token * a.tokens, 1),
                           requests_per_core_s=round(1e6 / ca, 0))
            rows.append(row)
            print(f"  {rate:g}/s x {a.tokens} tokens: sent {ra['achieved_rate']:g}/s, dropped {ra['dropped']}, lag p50 "
                  f"{ra['lag_ms']['p50']:.2f} p99 {ra['lag_ms']['p99']:.2f} ms, TTFT from intended p99 "
                  f"{ra['ttft_from_intended_ms']['p99']:.1f} ms, client CPU {ra['client_cpu_percent']:.0f}% (server {ra['server_cpu_percent']:.0f}%) = "
                  f"{ca} us/request (x {a.tokens_b} tokens: {cb}) -> {row.get('cpu_us_per_request_alone')} us per "
                  f"request + {row.get('cpu_us_per_token')} us per token; {row.get('requests_per_core_s')} "
                  f"requests/s per core; load {ra['load_avg_1m']}")
    slope = marginal(rows)
    if slope:
        print(f"  marginal: {slope['us_per_request']:.1f} us of client CPU per request (slope of CPU/s over the rates), "
              f"fixed {slope['fixed_percent']:.1f}% of a core -> {slope['requests_per_core_s']:.0f} requests/s per core")
    best = slope["requests_per_core_s"] if slope else max((r.get("requests_per_core_s") or 0 for r in rows), default=0)
    checks = [benchlib.check("requests/s per worker core (CPU-derived)", best, 2000, ">=", "req/s")]
    doc = {"benchmark": "request_rate", **st, "tokens": a.tokens, "tokens_b": a.tokens_b, "duration_s": a.duration,
           "rows": rows, "marginal": slope, "checks": checks}
    print(f"wrote {benchlib.write('request_rate', doc, a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
