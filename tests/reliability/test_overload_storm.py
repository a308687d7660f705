"""Overload storm: 10x the server's cap offered while the cap is held by admitted streams. The server
stays up and healthy (/health 200 during and after), overloaded answers stay fast (p99 < 100 ms, a
loose bound for a noisy 2-core machine; the strict target belongs to benchmarks/server_overhead.py),
and the admitted streams' ITL p99 stays within 1.5x of the same streams' unloaded figure. ITL is taken
from the server's --trace-file (write time of each token event), so the test's own readers add no noise."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from rel_util import no_tracebacks

from harness.metrics import percentile

CAP = 16
ITL_MS = 20.0
TOKENS = 100
PAUSE_S = float(os.environ.get("HARNESS_STORM_PAUSE_S", "0.1"))  #: each storm client's back-off after a refusal


async def admitted_streams(port: int, tag: str, started: asyncio.Event | None = None) -> list[str]:
    """CAP streams of TOKENS tokens with x-request-id tag-i; returns the last event of each."""
    body = json.dumps({"inputs": "steady stream", "parameters": {"max_new_tokens": TOKENS}}).encode()
    first = 0

    async def one(i: int) -> str:
        nonlocal first
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((f"POST /generate_stream HTTP/1.1\r\nHost: x\r\nx-request-id: {tag}-{i}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                      ).encode() + body)
        buf, counted = b"", False
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            buf += chunk
            if not counted and b"data: {" in buf:
                counted = True
                first += 1
                if started is not None and first == CAP:
                    started.set()
        writer.close()
        return [x for x in buf.split(b"\n\n") if b"data: " in x][-1].decode()

    return await asyncio.gather(*(one(i) for i in range(CAP)))


def itl_ms(trace: Path, tag: str, after_ns: int = 0) -> list[float]:
    """Gaps between consecutive token writes of the tag's requests (both ends after ``after_ns``)."""
    by_req: dict[str, list[int]] = {}
    for line in trace.read_text().splitlines():
        row = json.loads(line)
        if row["request_id"].startswith(tag + "-") and row["t_ns"] >= after_ns:
            by_req.setdefault(row["request_id"], []).append(row["t_ns"])
    gaps = []
    for ts in by_req.values():
        ts.sort()
        gaps += [(b - a) / 1e6 for a, b in zip(ts, ts[1:], strict=False)]
    return gaps


def storm_round(s, trace: Path, a: int, health: list) -> dict:
    """Unloaded CAP streams, then CAP streams under the storm; the figures of the round."""
    last = asyncio.run(admitted_streams(s.port, f"calm{a}"))
    assert all('"generated_text":"' in e for e in last)
    storm_out: dict = {}
    stop = threading.Event()

    def poll_health() -> None:
        with httpx.Client(timeout=5) as c:
            while not stop.is_set():
                try:
                    health.append(c.get(s.url + "/health").status_code)
                except httpx.HTTPError as exc:
                    health.append(repr(exc))
                time.sleep(0.1)

    async def loaded() -> list[str]:
        started = asyncio.Event()
        task = asyncio.create_task(admitted_streams(s.port, f"storm{a}", started))
        await started.wait()
        t_storm = time.monotonic_ns()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).with_name("overload_client.py")), str(s.port), str(10 * CAP),
            str(TOKENS * ITL_MS / 1e3 - 0.6), str(PAUSE_S), stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        storm_out.update(json.loads(out), t_storm=t_storm)
        return await task

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        last = asyncio.run(loaded())
    finally:
        stop.set()
        poller.join()
    assert all('"generated_text":"' in e for e in last), last  # every admitted stream completed
    assert storm_out["errors"] == [], storm_out["errors"][:3]
    kinds = storm_out["kinds"]
    assert set(kinds) == {"429 overloaded", "200 overloaded"}, kinds
    lat = sorted(storm_out["latencies_ms"])
    assert len(lat) > 20 * CAP, len(lat)  # the storm really ran
    time.sleep(1.3)  # the trace is written every second
    calm = itl_ms(trace, f"calm{a}")
    # gaps once the storm is in steady state (its process start and 160 connects are not the point)
    loaded_gaps = itl_ms(trace, f"storm{a}", after_ns=storm_out["t_storm"] + 500_000_000)
    assert len(calm) > CAP * (TOKENS - 5) and len(loaded_gaps) > CAP * TOKENS // 3
    first = sorted(storm_out["first_latencies_ms"])
    out = {"overloaded_p50_ms": percentile(lat, 50), "overloaded_p99_ms": percentile(lat, 99),
           "overloaded_answers": len(lat), "first_answer_max_ms": first[-1],
           "itl_p99_calm_ms": percentile(sorted(calm), 99), "itl_p99_storm_ms": percentile(sorted(loaded_gaps), 99)}
    print({k: round(v, 2) for k, v in out.items()})
    return out


def test_overload_storm_10x_cap(serve, tmp_path) -> None:
    """Up to 3 rounds (the machine is shared and noisy): one round must meet both bounds; /health
    answers 200 throughout every round and after."""
    trace = tmp_path / "trace.jsonl"
    s = serve(["--model", "simulated", "--sim-ttft-ms", "5", "--sim-itl-ms", str(ITL_MS), "--sim-jitter-ms", "0",
               "--sim-batch-slowdown", "0", "--sim-output-tokens", "0", "--max-concurrent-requests", str(CAP),
               "--trace-file", str(trace)])
    health: list = []
    rounds = []
    for a in range(3):
        r = storm_round(s, trace, a, health)
        rounds.append(r)
        if r["overloaded_p99_ms"] < 100.0 and r["itl_p99_storm_ms"] <= 1.5 * r["itl_p99_calm_ms"]:
            break
    assert health and all(h == 200 for h in health), [h for h in health if h != 200]
    assert httpx.get(s.url + "/health", timeout=5).status_code == 200  # and after
    best = rounds[-1]
    assert best["overloaded_p99_ms"] < 100.0, rounds
    assert best["itl_p99_storm_ms"] <= 1.5 * best["itl_p99_calm_ms"], rounds
    assert s.stop() == 0
    no_tracebacks(s.log())
