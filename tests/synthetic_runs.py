"""Synthetic request records with known distributions, for tests, examples and benchmarks.

A closed-loop run of ``users`` streams: each request has TTFT ``ttft_ms`` (+ seeded lognormal noise
when ``noise`` > 0), ``n_tokens`` token events ``itl_ms`` apart, and the next request of the user
starts right after the previous one ends. ``overloaded_every`` makes every k-th request a 429.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from harness.records import RecordSink, RequestRecord, write_run_meta

NS_PER_MS = 1_000_000


def closed_loop(n: int, users: int = 4, ttft_ms: float = 50.0, itl_ms: float = 10.0, n_tokens: int = 8,
                noise: float = 0.0, overloaded_every: int = 0, seed: int = 0, t0_ns: int = 10**12,
                server_tokens_delta: int = 0) -> list[RequestRecord]:
    """``n`` records; with ``noise`` = 0 every ok request has exactly the given TTFT and ITL."""
    rng = np.random.default_rng(seed)
    clock = [t0_ns + u * 1000 for u in range(users)]
    out = []
    for i in range(n):
        u = i % users
        send = clock[u]
        rid = f"r{i}"
        if overloaded_every and (i + 1) % overloaded_every == 0:
            end = send + NS_PER_MS
            out.append(RequestRecord(run_id="synthetic", scenario="synthetic", user=str(u), request_id=rid,
                                     protocol="tgi", intended_ns=send, send_ns=send, attempt_send_ns=send,
                                     headers_ns=end, end_ns=end, http_status=429, outcome="overloaded",
                                     error_text="Model is overloaded"))
            clock[u] = end + 1000
            continue
        f = float(rng.lognormal(0.0, noise)) if noise else 1.0
        first = send + int(ttft_ms * f * NS_PER_MS)
        gaps = [int(itl_ms * (float(rng.lognormal(0.0, noise)) if noise else 1.0) * NS_PER_MS)
                for _ in range(n_tokens - 1)]
        toks = [first]
        for g in gaps:
            toks.append(toks[-1] + g)
        end = toks[-1] + 100_000
        out.append(RequestRecord(run_id="synthetic", scenario="synthetic", user=str(u), request_id=rid,
                                 protocol="tgi", intended_ns=send, send_ns=send, attempt_send_ns=send,
                                 headers_ns=send + 500_000, token_ns=toks, tokens_per_event=[1] * n_tokens,
                                 end_ns=end, http_status=200, outcome="ok", finish_reason="length",
                                 input_tokens_server=16, output_tokens_server=n_tokens + server_tokens_delta,
                                 output_tokens_events=n_tokens))
        clock[u] = end + 1000
    return out


def write_run(run_dir: str | os.PathLike[str], records: list[RequestRecord], **meta: object) -> Path:
    """Write ``records`` as a run dir (records.jsonl + run.json)."""
    d = Path(run_dir)
    with RecordSink(d) as sink:
        for r in records:
            sink.write(r)
    write_run_meta(d, **{"scenario": "synthetic", **meta})
    return d
