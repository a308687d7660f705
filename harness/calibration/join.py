"""Join client token arrivals with the server's write time of the same token, and their errors.

Inputs, both in CLOCK_MONOTONIC nanoseconds of one host:
- client: :class:`~harness.records.RequestRecord` ``token_ns[i]`` = arrival of token event ``i``
  (0-based) of the request ``request_id`` (sent as the ``X-Request-Id`` header);
- server: the simulated server's ``--trace-file`` lines ``{"request_id", "index", "t_ns"}``, where
  ``index`` counts the request's token events from 1 and ``t_ns`` is taken right after the event's
  bytes were handed to the socket (see harness/server/trace.py).

The key of a token is ``(request_id, index)`` with ``index = i + 1``. Per joined token, in ms:
- ``delay = (client token_ns[i] - server t_ns[i+1]) / 1e6``: how late the client stamped the token
  (network transit on loopback, client queueing and parsing). It can be slightly negative: the
  server stamps *after* its write returned, and the client may already have read the bytes.
- TTFT error = the delay of the first token (index 1). Client TTFT is ``token_ns[0] - send_ns``
  and the ideal (server-write) TTFT from the same send is ``t_ns[1] - send_ns``; their difference
  is exactly that delay.
- ITL error = ``delay[i] - delay[i-1]`` for consecutive joined tokens ``i-1, i`` of one request,
  i.e. client gap minus server gap. Reported as a distribution of absolute values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.metrics import distribution
from harness.records import RequestRecord

#: server trace: request_id -> {index: t_ns}
ServerTrace = dict[str, dict[int, int]]


def read_trace(path: str | Path, t_min_ns: int | None = None, t_max_ns: int | None = None) -> ServerTrace:
    """Read a ``--trace-file``; lines outside ``[t_min_ns, t_max_ns]`` and unreadable lines are skipped."""
    trace: ServerTrace = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                d = json.loads(line)
                rid, index, t = d["request_id"], int(d["index"]), int(d["t_ns"])
            except (ValueError, KeyError, TypeError):
                continue
            if (t_min_ns is not None and t < t_min_ns) or (t_max_ns is not None and t > t_max_ns):
                continue
            trace.setdefault(rid, {})[index] = t
    return trace


@dataclass
class JoinResult:
    """Per-token errors of one set of records against one server trace (all in ms)."""

    ttft_error_ms: list[float] = field(default_factory=list)  #: delay of each request's first token
    itl_error_ms: list[float] = field(default_factory=list)  #: signed client gap - server gap
    delay_ms: list[float] = field(default_factory=list)  #: every joined token's delay
    client_tokens: int = 0  #: client token events considered
    joined: int = 0  #: of those, found in the server trace
    requests: int = 0  #: requests with at least one joined token

    @property
    def coverage(self) -> float:
        """joined / client_tokens (1.0 when every client token found its server line)."""
        return self.joined / self.client_tokens if self.client_tokens else 0.0

    def summary(self) -> dict:
        """``ttft_error_ms``, ``itl_abs_error_ms``, ``itl_error_ms``, ``delay_ms`` distributions
        (count, mean, min, max, p50..p99.9; harness.metrics.distribution) plus join counts."""
        return {
            "ttft_error_ms": distribution(self.ttft_error_ms),
            "itl_abs_error_ms": distribution(abs(x) for x in self.itl_error_ms),
            "itl_error_ms": distribution(self.itl_error_ms),
            "delay_ms": distribution(self.delay_ms),
            "client_tokens": self.client_tokens, "joined_tokens": self.joined,
            "join_coverage": round(self.coverage, 6), "requests": self.requests,
        }


def join(records: Iterable[RequestRecord], trace: ServerTrace, t_from_ns: int | None = None) -> JoinResult:
    """Join every record's token arrivals with ``trace`` (module docstring for the formulas).

    Only tokens whose *server* write time is ``>= t_from_ns`` count (skip a warm-up); the TTFT
    error counts only when the request's first token is in that window. Client tokens with no
    server line lower :attr:`JoinResult.coverage` and break the ITL chain at that point.
    """
    out = JoinResult()
    for rec in records:
        server = trace.get(rec.request_id)
        prev: float | None = None
        any_joined = False
        for i, t_client in enumerate(rec.token_ns):
            t_server = server.get(i + 1) if server is not None else None
            if t_from_ns is not None and (t_server if t_server is not None else t_client) < t_from_ns:
                continue  # warm-up
            out.client_tokens += 1
            if t_server is None:
                prev = None
                continue
            out.joined += 1
            any_joined = True
            delay = (t_client - t_server) / 1e6
            out.delay_ms.append(delay)
            if i == 0:
                out.ttft_error_ms.append(delay)
            elif prev is not None:
                out.itl_error_ms.append(delay - prev)
            prev = delay
        out.requests += any_joined
    return out
