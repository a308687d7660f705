"""Overload latency: how fast the saturated server says "overloaded".

The simulated server runs with ``--max-concurrent-requests CAP`` (default 256) and one headless
Locust process (harness/calibration/locustfile.py) holds CAP long streams (10k tokens/s in total
at 256), so every permit is taken and the server is busy writing tokens. A probe in this process
then sends, one at a time on keep-alive sockets with TCP_NODELAY, ``--probes`` requests to each of
- ``POST /generate`` (answer: 429 ``overloaded`` JSON),
- ``POST /generate_stream`` (answer: 200 + one SSE error event ``overloaded``, TGI's way),
- ``GET /health`` (the baseline: the cheapest answer of the same busy server, same moment),
and measures send -> complete answer (ms). Probes that found a free permit (a stream ending) are
left out. Target (issue 17): overloaded answers p99 <= 1 ms; the ratio to /health shows what admission costs.

    .venv/bin/python benchmarks/overload_latency.py [--cap 256 --probes 300]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import benchlib

from harness.calibration.levels import OUTPUT_TOKENS, TTFT_MS, Level, locust_command, server_args
from harness.metrics import distribution
from harness.server_process import ServerProcess

TARGET_P99_MS = 1.0


class Probe:
    """One keep-alive connection; :meth:`ask` returns (ms to the complete answer, status, body)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fp = self.sock.makefile("rb")

    def ask(self, method: str, path: str, body: bytes = b"") -> tuple[float, int, bytes]:
        req = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        t = time.perf_counter_ns()
        self.sock.sendall(req)
        status = int(self.fp.readline().split()[1])
        headers = {}
        while (line := self.fp.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            data = self.fp.read(int(headers["content-length"]))
        else:  # chunked
            parts = []
            while (size := int(self.fp.readline().split(b";")[0], 16)) > 0:
                parts.append(self.fp.read(size + 2)[:-2])
            self.fp.readline()
            data = b"".join(parts)
        return (time.perf_counter_ns() - t) / 1e6, status, data

    def close(self) -> None:
        self.fp.close()
        self.sock.close()


def probe(port: int, n: int, gap_s: float) -> dict[str, list[float]]:
    body = b'{"inputs":"a b c","parameters":{"max_new_tokens":4}}'
    targets = {"generate_429": ("POST", "/generate", body), "generate_stream_event": ("POST", "/generate_stream", body),
               "health": ("GET", "/health", b"")}
    conns = {k: Probe(port) for k in targets}
    out: dict[str, list[float]] = {k: [] for k in targets}
    admitted = 0
    try:
        for _ in range(n):
            for key, (method, path, b) in targets.items():
                ms, status, data = conns[key].ask(method, path, b)
                if key == "health" or (b"overloaded" in data and (status == 429 or key == "generate_stream_event")):
                    out[key].append(ms)
                else:
                    admitted += 1
                time.sleep(gap_s)
    finally:
        for c in conns.values():
            c.close()
    out["_admitted"] = [float(admitted)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap", type=int, default=256, help="--max-concurrent-requests; also the streams held")
    ap.add_argument("--tokens-per-s", type=float, default=10_000, help="token rate of the held streams in total")
    ap.add_argument("--probes", type=int, default=300, help="requests per probe route (default 300)")
    ap.add_argument("--gap-ms", type=float, default=5.0, help="pause between probes")
    ap.add_argument("--warmup", type=float, default=4.0, help="seconds of load before probing")
    ap.add_argument("--out", default=None, help="JSON dir (default reports/bench)")
    a = ap.parse_args()
    level = Level(a.cap, a.tokens_per_s)
    stream_tokens = 2000  # a held stream lasts ~50 s: permits stay taken for the whole probe
    with tempfile.TemporaryDirectory(prefix="overload-") as tmp:
        d = Path(tmp)
        args = server_args(level, d / "trace.jsonl")
        args[args.index("--max-concurrent-requests") + 1] = str(a.cap)
        server = ServerProcess.serve(args, d, 60, log_name="server.log")
        port = server.port
        locust = None
        try:
            run_s = a.warmup + a.probes * 3 * (a.gap_ms / 1e3 + 0.005) + 30
            cmd = locust_command(level, server.url, d / "run", run_s, ramp_s=1.0)
            cmd[cmd.index("--output-tokens") + 1] = f"fixed:{stream_tokens}"
            with open(d / "locust.log", "wb") as log:
                locust = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=d)
            time.sleep(a.warmup)
            t0 = time.monotonic()
            res = probe(port, a.probes, a.gap_ms / 1e3)
            probe_s = time.monotonic() - t0
        finally:
            if locust is not None:
                locust.terminate()
                try:
                    locust.wait(20)
                except subprocess.TimeoutExpired:
                    locust.kill()
            server.stop()
    admitted = int(res.pop("_admitted")[0])
    dist = {k: distribution(v) for k, v in res.items()}
    print(f"overload latency: cap {a.cap} held by {a.cap} streams (script {TTFT_MS:g} ms TTFT, ITL "
          f"{level.itl_ms:.1f} ms, {OUTPUT_TOKENS}+ tokens), {a.probes} probes per route over {probe_s:.1f} s, "
          f"{admitted} admitted (left out)")
    for k, v in dist.items():
        if v.get("count"):
            print(f"  {k:<22} n {v['count']:4d}  p50 {v['p50']:7.3f}  p99 {v['p99']:7.3f}  max {v['max']:7.3f} ms")
    checks = [benchlib.check(f"{k} p99", dist[k]["p99"], TARGET_P99_MS, "<=", "ms")
              for k in ("generate_429", "generate_stream_event") if dist[k].get("count")]
    ratios = {f"{k}_p99_vs_health": dist[k]["p99"] / dist["health"]["p99"]
              for k in ("generate_429", "generate_stream_event") if dist[k].get("count") and dist["health"].get("count")}
    print("  ratio vs /health p99: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    doc = {"benchmark": "overload_latency", **benchlib.stamp(), "cap": a.cap, "level": level.label,
           "probes": a.probes, "admitted": admitted, "latency_ms": dist, "ratios": ratios, "checks": checks,
           "pass": bool(checks) and all(c["pass"] for c in checks)}
    print(f"wrote {benchlib.write('overload_latency', doc, a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
