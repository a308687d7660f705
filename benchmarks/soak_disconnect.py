"""Disconnect storm against the reference server: N streams cut at random points, then checks that
nothing leaked. Prints one JSON object (and writes it with ``--json-out``).

Each request picks a route (``/generate_stream``, ``/`` with ``stream``, ``/v1/chat/completions``,
``/v1/completions``, ``/generate``) and a cut, all from one seeded generator:

- ``partial_body``: headers and half the body sent, then the socket closes (server still reading);
- ``before_headers``: the whole request sent, closed at once (before any response byte);
- ``prefill``: closed at a random moment inside the scripted TTFT (queued / prefilling);
- ``mid_stream``: closed after a random number (>= 1) of token events;
- ``reset``: like ``mid_stream`` but with an RST (``SO_LINGER`` 0) instead of a FIN;
- ``complete``: read to the end (control: these must end with the final event).

Afterwards (``check``): ``tgi_batch_current_size`` and ``tgi_queue_size`` back to 0, a full cap of
concurrent new streams all get a first token (no permit leaked), and the server's RSS
(``VmRSS`` of ``/proc/PID/status``) measured after a warm-up vs after the storm.

    python benchmarks/soak_disconnect.py --requests 10000            # starts its own simulated server
    python benchmarks/soak_disconnect.py --requests 100 --model tiny
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
CUTS = ("partial_body", "before_headers", "prefill", "mid_stream", "reset", "complete")
STREAM_ROUTES = ("/generate_stream", "/", "/v1/chat/completions", "/v1/completions")
ROUTES = (*STREAM_ROUTES, "/generate")
PROMPT = "the stream token server model batch latency request queue"


def request_bytes(route: str, max_new_tokens: int, prompt: str = PROMPT) -> bytes:
    """One HTTP/1.1 POST for ``route`` (streaming where the route streams)."""
    if route in ("/generate_stream", "/generate"):
        body = {"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens}}
    elif route == "/":
        body = {"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens}, "stream": True}
    elif route == "/v1/chat/completions":
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_new_tokens, "stream": True}
    else:
        body = {"prompt": prompt, "max_tokens": max_new_tokens, "stream": True}
    raw = json.dumps(body).encode()
    return (f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n").encode() + raw


def _final(route: str, buf: bytes) -> bool:
    """True once ``buf`` holds the route's last event (or, for /generate, a whole JSON answer)."""
    if route == "/generate":
        return buf.rstrip().endswith(b"}")
    if route.startswith("/v1/"):
        return b"data: [DONE]" in buf
    return b'"generated_text":"' in buf or b'"error_type"' in buf


@dataclass
class StormResult:
    requests: int = 0
    seconds: float = 0.0
    cuts: Counter = field(default_factory=Counter)
    routes: Counter = field(default_factory=Counter)
    completed: int = 0  #: "complete" requests that got their final event
    incomplete_controls: int = 0  #: "complete" requests that did not (must be 0 below the cap)
    overloaded: int = 0  #: answers that said overloaded (a leaked permit shows up here)
    errors: int = 0  #: connect/IO errors on the client side

    def as_dict(self) -> dict:
        return {"requests": self.requests, "seconds": round(self.seconds, 2),
                "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds else None,
                "cuts": dict(self.cuts), "routes": dict(self.routes), "completed": self.completed,
                "incomplete_controls": self.incomplete_controls, "overloaded": self.overloaded,
                "client_errors": self.errors}


async def _one(port: int, rng: random.Random, ttft_s: float, res: StormResult,
               max_new: tuple[int, int], timeout_s: float) -> None:
    route = rng.choice(ROUTES)
    cut = rng.choice(CUTS)
    if route == "/generate" and cut in ("mid_stream", "reset"):
        cut = "prefill"  # no events to count on the non-stream route: cut while it generates
    n_new = rng.randint(*max_new)
    payload = request_bytes(route, n_new)
    res.cuts[cut] += 1
    res.routes[route] += 1
    reader = writer = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if cut == "partial_body":
            writer.write(payload[: len(payload) - max(1, (len(payload) - payload.index(b"\r\n\r\n")) // 2)])
            await writer.drain()
            await asyncio.sleep(rng.random() * 0.01)
            return
        writer.write(payload)
        await writer.drain()
        if cut == "before_headers":
            return
        if cut == "prefill":
            await asyncio.sleep(rng.random() * ttft_s * 0.9)
            return
        want = rng.randint(1, max(1, n_new - 1)) if cut in ("mid_stream", "reset") else None
        buf = b""
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buf += chunk
                if b'overloaded' in buf:
                    res.overloaded += 1
                    return
                if want is not None and buf.count(b"data: {") >= want:
                    if cut == "reset":
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if want is None and _final(route, buf):
                    res.completed += 1
                    return
        if want is None:
            res.incomplete_controls += 1
    except (OSError, TimeoutError):
        res.errors += 1
    finally:
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


async def storm(port: int, n: int, *, concurrency: int, ttft_s: float, seed: int = 0,
                max_new: tuple[int, int] = (4, 40), timeout_s: float = 60.0) -> StormResult:
    """Send ``n`` requests, ``concurrency`` at a time, each cut as described in the module docstring."""
    rng = random.Random(seed)
    res = StormResult(requests=n)
    sem = asyncio.Semaphore(concurrency)
    t0 = time.monotonic()

    async def guarded() -> None:
        async with sem:
            await _one(port, rng, ttft_s, res, max_new, timeout_s)

    await asyncio.gather(*(guarded() for _ in range(n)))
    res.seconds = time.monotonic() - t0
    return res


def scrape(url: str) -> dict[str, float]:
    """The server's /metrics as {name{labels}: value} (plain Prometheus text, no HELP parsing needed)."""
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_idle(url: str, timeout_s: float = 20.0) -> tuple[float, dict[str, float]]:
    """Poll /metrics until tgi_batch_current_size and tgi_queue_size are 0; (seconds taken, last scrape).
    Raises AssertionError with the last values when they stay above 0."""
    t0 = time.monotonic()
    while True:
        m = scrape(url)
        if m.get("tgi_batch_current_size") == 0 and m.get("tgi_queue_size") == 0:
            return time.monotonic() - t0, m
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"batch rows linger after {timeout_s}s: batch={m.get('tgi_batch_current_size')} "
                                 f"queue={m.get('tgi_queue_size')}")
        time.sleep(0.05)


async def _first_token(port: int, route: str, answered: list[str], hold: asyncio.Event, max_new: int) -> None:
    """Open a stream, append the kind of its first event to ``answered`` ('token', 'overloaded',
    'other' or 'closed'), then keep it open until ``hold`` is set."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    kind = "closed"
    try:
        writer.write(request_bytes(route, max_new))
        await writer.drain()
        buf = b""
        async with asyncio.timeout(120):
            while b"data: {" not in buf or b"\n\n" not in buf[buf.index(b"data: {"):]:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buf += chunk
        event = buf[buf.index(b"data: {"):].split(b"\n\n", 1)[0]
        kind = "overloaded" if b"overloaded" in event else "token" if b'"token"' in event \
            or b'"delta"' in event or b'"text"' in event else "other"
        answered.append(kind)
        await hold.wait()
    finally:
        if kind == "closed":
            answered.append(kind)
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def full_cap(port: int, cap: int, max_new: int = 200) -> Counter:
    """``cap`` concurrent new streams; the Counter of their first events (all 'token' when no permit
    leaked). Every stream is held open until all have answered, so they really are concurrent."""
    hold = asyncio.Event()
    answered: list[str] = []
    tasks = [asyncio.create_task(_first_token(port, STREAM_ROUTES[i % len(STREAM_ROUTES)], answered, hold, max_new))
             for i in range(cap)]
    async with asyncio.timeout(180):
        while len(answered) < cap and not all(t.done() for t in tasks):
            await asyncio.sleep(0.02)
    hold.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return Counter(answered)


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_server(args: list[str], log_path: Path) -> tuple[subprocess.Popen, str, int]:
    """``python -m harness serve ARGS`` on a free loopback port; waits for /health 200."""
    s = ServerProcess.serve(args, log_path.parent, 300, log_name=log_path.name)
    assert s.proc is not None
    return s.proc, s.url, s.port


def run_soak(port: int, url: str, pid: int, *, requests: int, cap: int, concurrency: int, ttft_s: float,
             seed: int = 0, warmup: int = 300, max_new: tuple[int, int] = (4, 40), settle_s: float = 0.0) -> dict:
    """Warm-up storm, RSS, the storm, idle wait, RSS, full-cap check, and after ``settle_s`` (longer than
    the server's full-collection interval, HARNESS_GC_INTERVAL_S) RSS again: the figures as a dict."""
    warm = asyncio.run(storm(port, warmup, concurrency=concurrency, ttft_s=ttft_s, seed=seed + 1,
                             max_new=max_new)) if warmup else None
    if warmup:
        wait_idle(url)
    rss0 = rss_kb(pid)
    res = asyncio.run(storm(port, requests, concurrency=concurrency, ttft_s=ttft_s, seed=seed, max_new=max_new))
    idle_s, metrics = wait_idle(url)
    rss1 = rss_kb(pid)
    cap_check = asyncio.run(full_cap(port, cap))
    _, after = wait_idle(url)
    rss2 = None
    if settle_s > 0:
        time.sleep(settle_s)
        rss2 = rss_kb(pid)
    return {"rss_kb_after_settle": rss2, "settle_s": settle_s,
            "rss_growth_after_settle_kb": None if rss2 is None else rss2 - rss0,
            "storm": res.as_dict(), "warmup_requests": warm.requests if warm else 0,
            "idle_after_s": round(idle_s, 3), "full_cap": dict(cap_check), "cap": cap,
            "rss_kb_after_warmup": rss0, "rss_kb_after_storm": rss1, "rss_growth_kb": rss1 - rss0,
            "rss_growth_per_request_b": round((rss1 - rss0) * 1024 / max(requests, 1), 1),
            "server_failures": {k: v for k, v in metrics.items() if k.startswith("tgi_request_failure")},
            "server_request_count": metrics.get("tgi_request_count"),
            "batch_after": after.get("tgi_batch_current_size"), "queue_after": after.get("tgi_queue_size")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--model", default="simulated", help="simulated (default) or tiny")
    ap.add_argument("--cap", type=int, default=64, help="server --max-concurrent-requests")
    ap.add_argument("--concurrency", type=int, default=48, help="storm streams in flight")
    ap.add_argument("--ttft-ms", type=float, default=30.0)
    ap.add_argument("--itl-ms", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--settle-s", type=float, default=35.0,
                    help="then wait this long (> the server's 30 s full-collection interval) and read RSS again")
    a = ap.parse_args()
    if a.model == "simulated":
        args = ["--model", "simulated", "--sim-ttft-ms", str(a.ttft_ms), "--sim-itl-ms", str(a.itl_ms),
                "--sim-output-tokens", "0"]
        ttft_s, max_new = a.ttft_ms / 1e3, (4, 40)
    else:
        args = ["--model", a.model]
        ttft_s, max_new = 0.05, (2, 12)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, port = start_server([*args, "--max-concurrent-requests", str(a.cap)], Path(tmp) / "server.log")
        try:
            out = run_soak(port, url, proc.pid, requests=a.requests, cap=a.cap, concurrency=a.concurrency,
                           ttft_s=ttft_s, seed=a.seed, max_new=max_new, settle_s=a.settle_s)
        finally:
            proc.terminate()
            code = proc.wait(30)
        out["server_exit"] = code
        out["model"] = a.model
        log = (Path(tmp) / "server.log").read_text(errors="replace")
        out["server_log_tracebacks"] = log.count("Traceback")
    out["ok"] = (out["full_cap"] == {"token": a.cap} and out["batch_after"] == 0 and out["queue_after"] == 0
                 and out["storm"]["incomplete_controls"] == 0 and out["server_log_tracebacks"] == 0
                 and out["server_exit"] == 0)
    text = json.dumps(out, indent=2)
    print(text)
    if a.json_out:
        Path(a.json_out).write_text(text + "\n")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
