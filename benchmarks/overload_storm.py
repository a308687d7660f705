"""Overload storm: do refused requests disturb the admitted streams? Prints one JSON object.

The simulated server (``--max-concurrent-requests`` = ``--streams``, ``--trace-file``) runs
``--streams`` admitted streams (a load client keeps every permit held: each connection starts the
next stream when one ends). Two windows of ``--duration`` seconds each:

1. unloaded: only the admitted streams;
2. storm: a second client also sends ``--rate`` requests/s that are all refused (the cap is full)
   over ``--conns`` keep-alive connections, half ``POST /generate`` (429 JSON), half
   ``POST /generate_stream`` (200 + the overloaded SSE event), each connection paced at
   ``rate / conns`` and timing each request from its send to its complete answer.

Reported: the admitted streams' ITL (gaps between consecutive token events of a request, from the
server's trace: what the server wrote, in ms) p50/p99 per window and the ratio storm/unloaded of
the p99 (target <= 1.5); rejections/s achieved and overloaded answer latency p50/p99/max (target
p99 <= 1 ms); server CPU per rejection = (server CPU in the storm window - server CPU in the
unloaded window x tokens in storm / tokens in unloaded) / rejections, in us (target <= 20); the
server's CPU utilisation per window; load average and ``/proc/pressure/cpu`` at start and end.

Processes: server (CPU 0 with ``--pin``, the default with >= 2 CPUs), the stream client and the
storm client (both CPU 1 with ``--pin``), each in its own session.

    python benchmarks/overload_storm.py --streams 128 --itl-ms 20 --rate 5000 --duration 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from harness.server_process import ServerProcess


def pct(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3) if values else None


def pressure() -> str:
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "n/a"


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _request(path: str) -> bytes:
    body = b'{"inputs":"x","parameters":{"max_new_tokens":2}}' if path != "/generate_stream" else \
        b'{"inputs":"a b c","parameters":{"max_new_tokens":%d}}'
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %%d\r\n\r\n"
            % path.encode()), body


# -- admitted streams (a separate process) ------------------------------------------------------
class _Stream(asyncio.Protocol):
    """One keep-alive connection running stream after stream (the next on the chunked terminator)."""

    def __init__(self, req: bytes) -> None:
        self.req, self.tail = req, b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.write(self.req)

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data
        self.tail = buf[-8:]
        if buf.endswith(b"\r\n0\r\n\r\n"):
            self.tail = b""
            self.transport.write(self.req)  # type: ignore[union-attr]


async def _streams(port: int, streams: int, max_new: int) -> None:
    loop = asyncio.get_running_loop()
    head, body = _request("/generate_stream")
    body = body % max_new
    req = head % len(body) + body
    for _ in range(streams):
        await loop.create_connection(lambda: _Stream(req), "127.0.0.1", port)
    await asyncio.sleep(3600)


# -- storm (a separate process) -----------------------------------------------------------------
class _Storm(asyncio.Protocol):
    """Paced requests on one keep-alive connection; each answer timed from send to its end."""

    def __init__(self, req: bytes, stream: bool, interval: float, out: list, stop_at: float,
                 start_at: float) -> None:
        self.req, self.stream, self.interval, self.out = req, stream, interval, out
        self.stop_at, self.start_at = stop_at, start_at
        self.buf = b""
        self.sent = 0.0
        self.next = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.next = time.perf_counter()
        self._send()

    def _send(self) -> None:
        now = time.perf_counter()
        if now >= self.stop_at:
            self.transport.close()  # type: ignore[union-attr]
            return
        if now < self.next:
            asyncio.get_running_loop().call_later(self.next - now, self._send)
            return
        self.next += self.interval
        if self.next < now - 1.0:  # far behind: do not burst to catch up
            self.next = now
        self.sent = time.perf_counter()
        self.transport.write(self.req)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.stream:
            done = self.buf.endswith(b"\r\n0\r\n\r\n")
        else:
            head, sep, body = self.buf.partition(b"\r\n\r\n")
            done = bool(sep) and body.endswith(b"}")
        if not done:
            return
        t = time.perf_counter()
        refused = b" 429 " in self.buf[:16] or b'"overloaded"' in self.buf
        if self.sent >= self.start_at:
            self.out.append(((t - self.sent) * 1e3, refused))
        self.buf = b""
        self._send()


async def _storm(port: int, rate: float, conns: int, ramp: float, duration: float, server_pid: int) -> dict:
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    start_at, stop_at = t0 + ramp, t0 + ramp + duration
    out: list = []
    for i in range(conns):
        path = "/generate" if i % 2 == 0 else "/generate_stream"
        head, body = _request(path)
        if b"%d" in body:
            body = body % 2
        req = head % len(body) + body
        await loop.create_connection(
            lambda r=req, s=path == "/generate_stream": _Storm(r, s, conns / rate, out, stop_at, start_at),
            "127.0.0.1", port)
    server = psutil.Process(server_pid)
    await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    c0, w0 = cpu_s(server), time.monotonic_ns()
    await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
    c1, w1 = cpu_s(server), time.monotonic_ns()
    await asyncio.sleep(0.2)
    lat = [ms for ms, refused in out if refused]
    return {"window_ns": [w0, w1], "server_cpu_s": c1 - c0, "answers": len(out), "refused": len(lat),
            "latency_ms": lat}


def _run_role(a: argparse.Namespace) -> int:
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a server dependency
        pass
    if a.role == "streams":
        asyncio.run(_streams(a.port, a.streams, max(2, int(a.stream_s * 1000 / a.itl_ms))))
        return 0
    res = asyncio.run(_storm(a.port, a.rate, a.conns, a.ramp, a.duration, a.server_pid))
    print(json.dumps(res), flush=True)
    return 0


# -- analysis -----------------------------------------------------------------------------------
def itl_ms(trace: Path, windows: list[tuple[int, int]]) -> tuple[list[list[float]], list[int]]:
    """Per window: the gaps (ms) between consecutive token events whose later event is inside it,
    and the number of token events inside it."""
    by_req: dict[str, list[tuple[int, int]]] = {}
    for line in trace.read_text().splitlines():
        x = json.loads(line)
        by_req.setdefault(x["request_id"], []).append((x["index"], x["t_ns"]))
    gaps: list[list[float]] = [[] for _ in windows]
    counts = [0 for _ in windows]
    for pts in by_req.values():
        pts.sort()
        for w, (lo, hi) in enumerate(windows):
            counts[w] += sum(1 for _, t in pts if lo <= t < hi)
            gaps[w] += [(b - a) / 1e6 for (ia, a), (ib, b) in zip(pts, pts[1:], strict=False)
                        if ib == ia + 1 and lo <= b < hi]
    return gaps, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=128, help="admitted streams (= the admission cap)")
    ap.add_argument("--itl-ms", type=float, default=20.0)
    ap.add_argument("--stream-s", type=float, default=4.0, help="length of each admitted stream in seconds")
    ap.add_argument("--rate", type=float, default=5000.0, help="refused requests per second offered")
    ap.add_argument("--conns", type=int, default=16, help="storm connections")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per window")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
                    help="server on CPU 0, both clients on CPU 1 (default: on with >= 2 CPUs)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--role", choices=["streams", "storm"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--ramp", type=float, default=0.5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role:
        return _run_role(a)
    if a.streams < 1 or a.rate <= 0 or a.conns < 2 or a.duration <= 0:
        print("overload_storm: --streams >= 1, --rate > 0, --conns >= 2, --duration > 0", file=sys.stderr)
        return 2
    start = {"loadavg": os.getloadavg(), "cpu_pressure": pressure()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp())
    trace = tmp / "trace.jsonl"
    server = ServerProcess.serve(["--model", "simulated", "--sim-ttft-ms", "5", "--sim-itl-ms", str(a.itl_ms),
                                  "--sim-output-tokens", "0", "--max-concurrent-requests", str(a.streams),
                                  "--trace-file", str(trace), "--log-level", "warning"], tmp, 60, port=port,
                                 log_name="server.log", new_session=True)
    proc = server.proc
    assert proc is not None
    me = [sys.executable, __file__, "--port", str(port), "--server-pid", str(proc.pid), "--streams", str(a.streams),
          "--itl-ms", str(a.itl_ms), "--stream-s", str(a.stream_s), "--rate", str(a.rate), "--conns",
          str(a.conns), "--duration", str(a.duration), "--ramp", str(a.ramp)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kids: list[subprocess.Popen] = []
    try:
        if a.pin:
            os.sched_setaffinity(proc.pid, {0})
        kids.append(subprocess.Popen([*me, "--role", "streams"], env=env, start_new_session=True))
        if a.pin:
            os.sched_setaffinity(kids[0].pid, {1})
        sproc = psutil.Process(proc.pid)
        time.sleep(a.warmup)
        c0, u0 = cpu_s(sproc), time.monotonic_ns()
        time.sleep(a.duration)
        c1, u1 = cpu_s(sproc), time.monotonic_ns()
        storm = subprocess.Popen([*me, "--role", "storm"], env=env, stdout=subprocess.PIPE, start_new_session=True)
        kids.append(storm)
        if a.pin:
            os.sched_setaffinity(storm.pid, {1})
        out, _ = storm.communicate(timeout=a.ramp + a.duration + 60)
        st = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        for k in kids:
            if k.poll() is None:
                k.kill()
                k.wait()
        proc.terminate()
        proc.wait(30)
    s0, s1 = st["window_ns"]
    (g_unl, g_storm), (n_unl, n_storm) = itl_ms(trace, [(u0, u1), (s0, s1)])
    win_s = (s1 - s0) / 1e9
    unl_cpu = c1 - c0
    extra = st["server_cpu_s"] - unl_cpu * (n_storm / max(n_unl, 1))
    lat = st["latency_ms"]
    p99_u, p99_s = pct(g_unl, 0.99), pct(g_storm, 0.99)
    result = {
        "streams": a.streams, "itl_ms": a.itl_ms, "rate_offered": a.rate, "conns": a.conns,
        "unloaded": {"itl_ms_p50": pct(g_unl, 0.5), "itl_ms_p99": p99_u, "itl_ms_max": pct(g_unl, 1.0),
                     "tokens_per_s": round(n_unl / ((u1 - u0) / 1e9), 1),
                     "server_cpu_util": round(unl_cpu / ((u1 - u0) / 1e9), 3)},
        "storm": {"itl_ms_p50": pct(g_storm, 0.5), "itl_ms_p99": p99_s, "itl_ms_max": pct(g_storm, 1.0),
                  "tokens_per_s": round(n_storm / win_s, 1),
                  "server_cpu_util": round(st["server_cpu_s"] / win_s, 3)},
        "itl_p99_ratio": round(p99_s / p99_u, 3) if p99_u and p99_s else None,
        "rejections_per_s": round(len(lat) / win_s, 1), "answers_not_refused": st["answers"] - st["refused"],
        "overloaded_ms_p50": pct(lat, 0.5), "overloaded_ms_p99": pct(lat, 0.99), "overloaded_ms_max": pct(lat, 1.0),
        "server_cpu_us_per_rejection": round(extra / max(len(lat), 1) * 1e6, 2),
        "pinned": a.pin, "cpus": os.cpu_count(), "start": start,
        "end": {"loadavg": os.getloadavg(), "cpu_pressure": pressure()},
        "targets": {"itl_p99_ratio": "<= 1.5", "rejections_per_s": ">= 5000", "overloaded_ms_p99": "<= 1",
                    "server_cpu_us_per_rejection": "<= 20"}}
    print(json.dumps(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
