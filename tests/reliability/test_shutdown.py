"""Graceful SIGTERM beyond tests/server (which checks that an in-flight stream finishes and exit 0):
after SIGTERM no new request is admitted, and a stream longer than --graceful-termination-timeout is
cut at the timeout, after which the server still exits 0."""

from __future__ import annotations

import json
import signal
import socket
import time

import httpx


def test_sigterm_stops_admitting_and_cuts_at_the_timeout(serve) -> None:
    s = serve(["--model", "simulated", "--sim-ttft-ms", "1", "--sim-itl-ms", "100", "--sim-output-tokens", "0",
               "--graceful-termination-timeout", "1.5"])
    with httpx.Client(timeout=30) as keep:  # a keep-alive connection opened before the signal
        assert keep.get(s.url + "/info").status_code == 200
        with httpx.stream("POST", s.url + "/generate_stream", timeout=30,
                          json={"inputs": "a", "parameters": {"max_new_tokens": 200}}) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data:"))
            t_term = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            # new connections are refused, and a request on an old keep-alive connection is not admitted
            try:
                with socket.create_connection(("127.0.0.1", s.port), timeout=2):
                    refused = False
            except OSError:
                refused = True
            assert refused
            try:
                late = keep.post(s.url + "/generate", json={"inputs": "a", "parameters": {"max_new_tokens": 2}})
                assert late.status_code == 429 and late.json()["error_type"] == "overloaded", late.text
            except httpx.TransportError:
                pass  # the server closed the idle connection: not admitted either
            rest = []
            try:
                for line in lines:
                    if line.startswith("data:"):
                        rest.append(line)
            except httpx.RemoteProtocolError:
                pass  # cut at the timeout: the body ends without its last chunk
            t_cut = time.monotonic()
    # the 200-token stream (20 s) was cut near the 1.5 s timeout, without a final event
    assert 1.0 < t_cut - t_term < 6.0, t_cut - t_term
    assert rest and json.loads(rest[-1][5:]).get("generated_text") is None
    assert s.proc.wait(20) == 0
