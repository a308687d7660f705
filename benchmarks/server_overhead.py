"""Server overhead with the simulated backend: N concurrent streams, tokens/s, server-added jitter,
and overloaded-answer latency while saturated. Prints one JSON object.

Jitter is measured on the server's own ``--trace-file`` (write time of every token event): for
each consecutive pair of a request's tokens, ``|gap - itl|`` with ``--sim-jitter-ms 0``, so it is
exactly the delay the HTTP layer and event loop add to the scripted schedule. The client is a
minimal asyncio socket reader that counts events. Overloaded latency: with every permit held,
sequential ``POST /generate`` on one keep-alive connection, time to the full 429 answer.

    python benchmarks/server_overhead.py --streams 512 --itl-ms 25 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def stream(port: int, max_new: int, counter: list[int], stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"inputs": "a b c", "parameters": {"max_new_tokens": max_new}}).encode()
    while not stop.is_set():
        writer.write(b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                counter[0] += 1
                if b'"generated_text":"' in line or b'"error"' in line:
                    break
        await reader.readuntil(b"0\r\n\r\n")  # chunked terminator
    writer.close()


async def overloaded_latency(port: int, n: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"inputs":"x","parameters":{"max_new_tokens":2}}'
    req = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    out = []
    for _ in range(n):
        t = time.perf_counter()
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1])
        await reader.readexactly(length)
        if b" 429 " in head.split(b"\r\n")[0]:  # between two requests of a stream a permit may be free
            out.append((time.perf_counter() - t) * 1e3)
        await asyncio.sleep(0.005)
    writer.close()
    return out


async def main_async(a: argparse.Namespace, port: int) -> dict:
    counter = [0]
    stop = asyncio.Event()
    max_new = max(2, int(a.stream_s * 1000 / a.itl_ms))
    tasks = [asyncio.create_task(stream(port, max_new, counter, stop)) for _ in range(a.streams)]
    await asyncio.sleep(a.warmup)
    c0, t0 = counter[0], time.perf_counter()
    over = await overloaded_latency(port, 200)
    await asyncio.sleep(max(0.0, a.duration - (time.perf_counter() - t0)))
    rate = (counter[0] - c0) / (time.perf_counter() - t0)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"tokens_per_s": round(rate, 1), "overloaded_n": len(over),
            "overloaded_ms_p50": round(statistics.median(over), 3) if over else None,
            "overloaded_ms_p99": round(pct(over, 0.99), 3) if over else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=512)
    ap.add_argument("--itl-ms", type=float, default=25.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--stream-s", type=float, default=4.0, help="length of each stream in seconds")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp())
    trace = tmp / "trace.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--model", "simulated", "--port", str(port),
                             "--sim-ttft-ms", "5", "--sim-itl-ms", str(a.itl_ms), "--sim-output-tokens", "0",
                             "--max-concurrent-requests", str(a.streams), "--trace-file", str(trace),
                             "--log-level", "warning"], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        t_start = time.monotonic_ns()
        result = asyncio.run(main_async(a, port))
    finally:
        proc.terminate()
        proc.wait(30)
    by_req: dict[str, list[int]] = {}
    for line in trace.read_text().splitlines():
        x = json.loads(line)
        if x["t_ns"] > t_start + a.warmup * 1e9:
            by_req.setdefault(x["request_id"], []).append(x["t_ns"])
    dev = []
    for ts in by_req.values():
        dev += [abs((b - a_) / 1e6 - a.itl_ms) for a_, b in zip(ts, ts[1:], strict=False)]
    result.update({"streams": a.streams, "itl_ms": a.itl_ms, "jitter_ms_p50": round(pct(dev, 0.5), 3),
                   "jitter_ms_p99": round(pct(dev, 0.99), 3), "gaps": len(dev), "cpus": os.cpu_count(),
                   "targets": {"tokens_per_s": ">= 20000", "jitter_ms_p99": "<= 2", "overloaded_ms_p99": "<= 5"}})
    print(json.dumps(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
