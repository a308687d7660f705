"""Server overhead with the simulated backend: N concurrent streams, tokens/s, server-added jitter,
and overloaded-answer latency while saturated. Prints one JSON object.

Three processes: the server (``harness serve --model simulated``), a load client and this one;
server and client each in their own session (so, under Linux scheduler autogroups, each gets its
own CPU share instead of splitting one with the other).
With ``--pin`` (default when the host has >= 2 CPUs) the server runs on CPU 0 and the client on
CPU 1, so the client does not steal the server's core; both processes' CPU time over the
measured window is reported (``*_cpu_us_per_token`` = CPU seconds / tokens * 1e6, and
``*_cpu_util`` = CPU seconds / window seconds) so the figures can be judged honestly.

Client: a uvloop ``asyncio.Protocol`` per connection that only counts ``data:`` occurrences in
what it receives and sends the next request (keep-alive) when the chunked terminator
``0\\r\\n\\r\\n`` ends the received bytes. No parsing, no per-line reads.

Arrivals: the client opens its connections spread over one stream length (``--spread``, the
default), so requests arrive and restart at a steady rate, as in a long-running service; with
``--no-spread`` all streams start at once and restart in one wave every stream length (512 arrivals
within milliseconds: each costs the server ~0.15 ms, so the wave delays the next tokens by tens of
ms). The measured window starts after the ramp and ``--warmup``.

Jitter comes from the server's own ``--trace-file`` (time right after each token event's send
returned), run with ``--sim-jitter-ms 0`` so the script is exactly ``t_k = t_1* + (k-1) * itl``:

- ``jitter_ms_*`` (write time vs schedule): per request, ``d_k = t_k - (k-1) * itl``; the
  schedule origin is estimated as ``min_k d_k`` (the least-delayed token; a lower bound of the
  true delay, so this under-estimates by at most that token's delay) and each token's delay is
  ``d_k - min d``. Percentiles over all tokens after the warm-up.
- ``gap_jitter_ms_*``: ``|t_{k+1} - t_k - itl|`` over consecutive token pairs (the older figure).

Overloaded latency: while every permit is held (``--max-concurrent-requests`` = streams), this
process sends sequential requests on one keep-alive connection with blocking sockets and times
each until its full answer: ``POST /generate`` (429 JSON) and ``POST /generate_stream`` (200 with
the SSE error event). Answers that were admitted (a permit was free between two streams) are
skipped.

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

import psutil

from harness.server_process import ServerProcess


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


# -- load client (a separate process) -----------------------------------------------------------
class _Conn(asyncio.Protocol):
    """One keep-alive connection running stream after stream; counts ``data:`` only.

    A refused stream (the overloaded event: a permit was briefly taken by the overloaded probe) is
    counted in ``counter[2]``, not as a token, and the request is sent again 1 ms later instead of at
    once (at once, a connection would spin on refusals while the probe holds the permit).
    """

    __slots__ = ("req", "counter", "tail", "transport", "refused")

    def __init__(self, req: bytes, counter: list[int]) -> None:
        self.req, self.counter, self.tail, self.refused = req, counter, b"", False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.write(self.req)

    def _send(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.req)

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data
        self.counter[0] += buf.count(b"data:") - self.tail.count(b"data:")
        self.refused = self.refused or b'"overloaded"' in data
        self.tail = buf[-8:]
        if buf.endswith(b"\r\n0\r\n\r\n"):
            self.tail = b""
            if self.refused:
                self.refused = False
                self.counter[0] -= 1
                self.counter[2] += 1
                asyncio.get_running_loop().call_later(0.001, self._send)
            else:
                self.counter[1] += 1
                self._send()


async def _client(port: int, streams: int, max_new: int, warmup: float, duration: float,
                  server_pid: int, spread_s: float = 0.0) -> dict:
    """Open ``streams`` connections, the i-th at ``i * spread_s / streams`` (so requests arrive and
    restart spread over one stream's length instead of in one wave of ``streams`` arrivals every
    stream length), then measure ``duration`` seconds after ``warmup``."""
    loop = asyncio.get_running_loop()
    body = json.dumps({"inputs": "a b c", "parameters": {"max_new_tokens": max_new}}).encode()
    req = (b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    counter = [0, 0, 0]
    conns = []
    start = time.perf_counter()
    for i in range(streams):
        delay = start + i * spread_s / streams - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conns.append(await loop.create_connection(lambda: _Conn(req, counter), "127.0.0.1", port))
    server, me = psutil.Process(server_pid), psutil.Process()
    await asyncio.sleep(warmup)
    c0, s0, m0, t0 = counter[0], server.cpu_times(), me.cpu_times(), time.perf_counter()
    await asyncio.sleep(duration)
    c1, s1, m1, t1 = counter[0], server.cpu_times(), me.cpu_times(), time.perf_counter()
    for tr, _ in conns:
        tr.close()
    n, wall = c1 - c0, t1 - t0
    s_cpu = (s1.user + s1.system) - (s0.user + s0.system)
    m_cpu = (m1.user + m1.system) - (m0.user + m0.system)
    return {"tokens_per_s": round(n / wall, 1), "tokens": n, "window_s": round(wall, 3),
            "requests_done": counter[1], "client_refused": counter[2],
            "server_cpu_util": round(s_cpu / wall, 3), "client_cpu_util": round(m_cpu / wall, 3),
            "server_cpu_us_per_token": round(s_cpu / max(n, 1) * 1e6, 2),
            "client_cpu_us_per_token": round(m_cpu / max(n, 1) * 1e6, 2)}


def client_main(a: argparse.Namespace) -> int:
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a server dependency
        pass
    max_new = max(2, int(a.stream_s * 1000 / a.itl_ms))
    spread = a.stream_s if a.spread else 0.0
    out = asyncio.run(_client(a.port, a.streams, max_new, a.warmup, a.duration, a.server_pid, spread))
    print(json.dumps(out), flush=True)
    return 0


# -- overloaded probe (this process, blocking sockets) ------------------------------------------
def _read_answer(sock: socket.socket, buf: bytearray) -> tuple[bytes, bytes]:
    """(status line, body) of one HTTP/1.1 answer (Content-Length or chunked)."""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in lines[1:])}
    if b"content-length" in headers:
        n = int(headers[b"content-length"])
        while len(buf) < n:
            buf += sock.recv(65536)
        body = bytes(buf[:n])
        del buf[:n]
        return lines[0], body
    while b"\r\n0\r\n\r\n" not in buf and not buf.startswith(b"0\r\n\r\n"):
        buf += sock.recv(65536)
    end = buf.find(b"0\r\n\r\n") if buf.startswith(b"0\r\n\r\n") else buf.find(b"\r\n0\r\n\r\n") + 2
    body = bytes(buf[:end])
    del buf[:end + 5]
    return lines[0], body


def overloaded_latency(port: int, path: str, n: int) -> list[float]:
    """ms to the complete answer of ``n`` sequential requests that were refused as overloaded."""
    body = b'{"inputs":"x","parameters":{"max_new_tokens":2}}'
    req = (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
           % (path.encode(), len(body))) + body
    out: list[float] = []
    buf = bytearray()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            t = time.perf_counter()
            sock.sendall(req)
            status, answer = _read_answer(sock, buf)
            dt = (time.perf_counter() - t) * 1e3
            if b" 429 " in status or b'"overloaded"' in answer:
                out.append(dt)
            time.sleep(0.005)
    return out


def _summary(values: list[float]) -> dict:
    return {"n": len(values), "p50": round(statistics.median(values), 3) if values else None,
            "p99": round(pct(values, 0.99), 3) if values else None,
            "max": round(max(values), 3) if values else None}


def jitter(trace: Path, t_from_ns: float, itl_ms: float) -> dict:
    """Write time vs schedule and gap jitter (module docstring) from the trace file."""
    by_req: dict[str, list[tuple[int, int]]] = {}
    for line in trace.read_text().splitlines():
        x = json.loads(line)
        by_req.setdefault(x["request_id"], []).append((x["index"], x["t_ns"]))
    itl_ns = itl_ms * 1e6
    delay: list[float] = []
    gaps: list[float] = []
    for pts in by_req.values():
        pts.sort()
        d = [t - (i - 1) * itl_ns for i, t in pts]
        origin = min(d)
        delay += [(di - origin) / 1e6 for di, (_, t) in zip(d, pts, strict=True) if t > t_from_ns]
        gaps += [abs((b - a) / 1e6 - itl_ms) for (ia, a), (ib, b) in zip(pts, pts[1:], strict=False)
                 if ib == ia + 1 and a > t_from_ns]
    return {"jitter_ms_p50": round(pct(delay, 0.5), 3), "jitter_ms_p99": round(pct(delay, 0.99), 3),
            "jitter_ms_max": round(max(delay), 3) if delay else None,
            "gap_jitter_ms_p50": round(pct(gaps, 0.5), 3), "gap_jitter_ms_p99": round(pct(gaps, 0.99), 3),
            "tokens_traced": len(delay)}


def _pressure() -> str:
    """The first line of /proc/pressure/cpu (``some avg10=...``), or n/a."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "n/a"


def _renice(pid: int, nice: int) -> None:
    """Niceness of ``pid`` and of its scheduler autogroup (with autogroups on, which Linux
    desktops and many VMs enable, CPU is shared per session first, so the process nice alone
    does not weigh against other sessions; server and client each run in their own session)."""
    os.setpriority(os.PRIO_PROCESS, pid, nice)
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=512)
    ap.add_argument("--itl-ms", type=float, default=25.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--stream-s", type=float, default=4.0, help="length of each stream in seconds")
    ap.add_argument("--probes", type=int, default=200, help="overloaded requests per route")
    ap.add_argument("--spread", action=argparse.BooleanOptionalAction, default=True,
                    help="open the streams spread over one stream length (default), so arrivals are "
                         "steady; --no-spread opens them at once: every stream restarts in one wave")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
                    help="server on CPU 0, client on CPU 1 (default: on with >= 2 CPUs)")
    ap.add_argument("--nice", type=int, default=0,
                    help="scheduling niceness for server and client (negative needs root): on a "
                         "shared host, keeps other jobs from starving the measured processes")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.client:
        return client_main(a)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp())
    trace = tmp / "trace.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = ServerProcess.serve(["--model", "simulated", "--sim-ttft-ms", "5", "--sim-itl-ms", str(a.itl_ms),
                                  "--sim-output-tokens", "0", "--max-concurrent-requests", str(a.streams),
                                  "--trace-file", str(trace), "--log-level", "warning"], tmp, 60, port=port,
                                 log_name="server.log", new_session=True)
    proc = server.proc
    assert proc is not None
    client = None
    try:
        if a.pin:
            os.sched_setaffinity(proc.pid, {0})
        if a.nice:
            _renice(proc.pid, a.nice)
        t_start = time.monotonic_ns()
        client = subprocess.Popen([sys.executable, __file__, "--client", "--port", str(port),
                                   "--server-pid", str(proc.pid), "--streams", str(a.streams),
                                   "--itl-ms", str(a.itl_ms), "--duration", str(a.duration),
                                   "--warmup", str(a.warmup), "--stream-s", str(a.stream_s),
                                   "--spread" if a.spread else "--no-spread"],
                                  stdout=subprocess.PIPE, env=env, start_new_session=True)
        if a.pin:
            os.sched_setaffinity(client.pid, {1})
        if a.nice:
            _renice(client.pid, a.nice)
        ramp_s = a.stream_s if a.spread else 0.0
        time.sleep(ramp_s + a.warmup + 0.5)
        over = overloaded_latency(port, "/generate", a.probes)
        over_stream = overloaded_latency(port, "/generate_stream", a.probes)
        out, _ = client.communicate(timeout=ramp_s + a.duration + a.warmup + 120)
        result = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        proc.terminate()
        proc.wait(30)
    result.update(jitter(trace, t_start + (ramp_s + a.warmup) * 1e9, a.itl_ms))
    o, os_ = _summary(over), _summary(over_stream)
    result.update({"overloaded_ms_p50": o["p50"], "overloaded_ms_p99": o["p99"], "overloaded_ms_max": o["max"],
                   "overloaded_n": o["n"], "overloaded_stream_ms_p50": os_["p50"],
                   "overloaded_stream_ms_p99": os_["p99"], "overloaded_stream_ms_max": os_["max"],
                   "overloaded_stream_n": os_["n"]})
    result.update({"streams": a.streams, "itl_ms": a.itl_ms, "offered_tokens_per_s": round(a.streams * 1e3 / a.itl_ms),
                   "pinned": a.pin, "cpus": os.cpu_count(), "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
                   "cpu_pressure_at_end": _pressure(),
                   "nice": a.nice, "spread": a.spread,
                   "targets": {"tokens_per_s": ">= 20000", "jitter_ms_p99": "<= 2", "server_cpu_us_per_token": "<= 20",
                               "overloaded_ms_p99": "<= 1"}})
    print(json.dumps(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
