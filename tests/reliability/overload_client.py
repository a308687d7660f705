"""Overload storm generator, run as its own process so its CPU does not disturb the test's readers:
``python overload_client.py PORT CONCURRENCY SECONDS [PAUSE_S]`` -> one JSON line on stdout with the latency of
every answer (ms, request written -> whole answer read; a connection's first answer, which also pays
for the server accepting the connection, listed apart) and the count of each answer kind.

Each of CONCURRENCY connections loops on keep-alive: alternately ``POST /generate`` (expects 429) and
``POST /generate_stream`` (expects a 200 whose only event is the overloaded error), pausing PAUSE_S
(exponential, mean PAUSE_S, default 0; random start within PAUSE_S) after each answer, as
unsynchronised clients honouring a short back-off."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

BODY = json.dumps({"inputs": "over load", "parameters": {"max_new_tokens": 4}}).encode()


def request(route: str) -> bytes:
    return (f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY


async def worker(port: int, until: float, lat: list[float], first: list[float], kinds: dict[str, int],
                 pause_s: float) -> None:
    rng = random.Random(id(lat) ^ id(kinds) ^ time.monotonic_ns())
    if pause_s:  # unsynchronised clients: random start, exponential pauses
        await asyncio.sleep(rng.uniform(0, pause_s))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while time.monotonic() < until:
            route = "/generate" if i % 2 == 0 else "/generate_stream"
            i += 1
            t0 = time.perf_counter()
            writer.write(request(route))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if b"content-length" in head.lower():
                n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(n)
            else:  # chunked SSE: read to the terminating chunk
                body = b""
                while not body.endswith(b"0\r\n\r\n"):
                    body += await reader.read(65536)
            (lat if i > 1 else first).append((time.perf_counter() - t0) * 1e3)
            kind = f"{status} overloaded" if b"overloaded" in body else f"{status} other"
            kinds[kind] = kinds.get(kind, 0) + 1
            if pause_s:
                await asyncio.sleep(rng.expovariate(1 / pause_s))
    finally:
        writer.close()


async def main(port: int, conc: int, seconds: float, pause_s: float = 0.0) -> dict:
    until = time.monotonic() + seconds
    lat: list[float] = []
    first: list[float] = []
    kinds: dict[str, int] = {}
    results = await asyncio.gather(*(worker(port, until, lat, first, kinds, pause_s) for _ in range(conc)), return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return {"latencies_ms": lat, "first_latencies_ms": first, "kinds": kinds, "errors": errors}


if __name__ == "__main__":
    pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    print(json.dumps(asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), pause))))
