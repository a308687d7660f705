"""Operational behaviour on `--model simulated`: trace file, incremental delivery, keep-alive,
auth, payload limit, EOS / stop sequences, option errors, graceful SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import httpx
from server_sse_util import sse_events

SIM = ["--model", "simulated", "--sim-ttft-ms", "2", "--sim-itl-ms", "2"]


def test_trace_file_one_line_per_token(serve, tmp_path) -> None:
    trace = tmp_path / "trace.jsonl"
    s = serve([*SIM, "--trace-file", str(trace)])
    t0 = time.monotonic_ns()
    resp, ev = sse_events(s.url + "/generate_stream", {"inputs": "a b", "parameters": {"max_new_tokens": 6}},
                          headers={"x-request-id": "req-1"})
    _, ev2 = sse_events(s.url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                        "max_tokens": 3, "stream": True})
    t1 = time.monotonic_ns()
    assert resp.headers["x-request-id"] == "req-1" and len(ev) == 6 and len(ev2) == 4
    assert s.stop() == 0  # flushes at shutdown
    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    mine = [x for x in lines if x["request_id"] == "req-1"]
    assert [x["index"] for x in mine] == [1, 2, 3, 4, 5, 6]
    assert all(t0 < x["t_ns"] < t1 for x in lines)
    assert [x["t_ns"] for x in mine] == sorted(x["t_ns"] for x in mine)
    assert len(lines) == 6 + 3  # [DONE] is not a token


def test_tokens_arrive_as_generated_raw_socket(serve) -> None:
    """What `curl -N` shows: the first event arrives long before the last one is generated."""
    s = serve(["--model", "simulated", "--sim-ttft-ms", "10", "--sim-itl-ms", "100"])
    body = json.dumps({"inputs": "a", "parameters": {"max_new_tokens": 8}}).encode()
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        t_send = time.monotonic()
        buf, t_first, t_last = b"", None, None
        while b'"generated_text":"' not in buf:
            chunk = sock.recv(65536)
            assert chunk
            buf += chunk
            if t_first is None and b"data: " in buf:
                t_first = time.monotonic()
        t_last = time.monotonic()
    assert b"transfer-encoding: chunked" in buf.lower()
    assert t_first - t_send < 0.5 and t_last - t_first > 0.5


def test_keepalive_comment(serve) -> None:
    s = serve(["--model", "simulated", "--sim-ttft-ms", "700", "--sim-itl-ms", "1"],
              env={"HARNESS_SSE_KEEPALIVE_S": "0.2"})
    with httpx.stream("POST", s.url + "/generate_stream", json={"inputs": "a", "parameters": {"max_new_tokens": 2}},
                      timeout=10) as r:
        raw = b"".join(r.iter_raw())
    assert raw.startswith(b":\n\n") and raw.count(b"data: ") == 2


def test_auth_payload_eos_stop(serve) -> None:
    s = serve(["--model", "simulated", "--sim-ttft-ms", "1", "--sim-itl-ms", "1", "--sim-output-tokens", "4",
               "--api-key", "Secret", "--payload-limit", "1000"])
    body = {"inputs": "a", "parameters": {"max_new_tokens": 10, "details": True}}
    for route in ("/generate", "/generate_stream", "/", "/v1/completions"):
        r = httpx.post(s.url + route, json=body)
        assert (r.status_code, r.content) == (401, b""), route
    assert httpx.post(s.url + "/generate", json=body, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(s.url + "/info").status_code == 200  # GET routes stay open
    auth = {"Authorization": "bearer SECRET"}  # case-insensitive, as TGI
    r = httpx.post(s.url + "/generate", json={"inputs": "a" * 2000}, headers=auth)
    assert r.status_code == 413 and r.json()["error"].startswith("Failed to buffer the request body")
    # EOS: the 4th token is </s> (special), streamed, and left out of generated_text.
    _, ev = sse_events(s.url + "/generate_stream", body, headers=auth)
    assert len(ev) == 4 and ev[-1]["token"]["special"] and ev[-1]["token"]["text"] == "</s>"
    assert ev[-1]["details"]["finish_reason"] == "eos_token"
    assert ev[-1]["generated_text"] == "".join(e["token"]["text"] for e in ev[:-1])
    # length wins over EOS when both happen at the same token
    _, ev = sse_events(s.url + "/generate_stream", {**body, "parameters": {"max_new_tokens": 4, "details": True}},
                       headers=auth)
    assert ev[-1]["details"]["finish_reason"] == "length"
    # a stop sequence ends the stream and stays in the text (greedy output is deterministic)
    stop = ev[1]["token"]["text"]
    _, ev = sse_events(s.url + "/generate_stream", {**body, "parameters": {
        "max_new_tokens": 10, "details": True, "stop": [stop]}}, headers=auth)
    assert ev[-1]["details"]["finish_reason"] == "stop_sequence" and ev[-1]["generated_text"].endswith(stop)
    r = httpx.post(s.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}]},
                   headers=auth)
    assert r.json()["choices"][0]["finish_reason"] == "stop"


def test_bad_options_one_line_nonzero_exit() -> None:
    for args in (["--max-concurrent-requests", "0"], ["--port", "x"], ["--sim-itl-ms", "-1"],
                 ["--max-input-tokens", "10", "--max-total-tokens", "10"], ["--log-level", "loud"]):
        p = subprocess.run([sys.executable, "-m", "harness", "serve", "--model", "simulated", *args],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0, args
        assert "Traceback" not in p.stderr and p.stderr.strip(), args


def test_sigterm_lets_streams_finish(serve) -> None:
    s = serve(["--model", "simulated", "--sim-ttft-ms", "1", "--sim-itl-ms", "50",
               "--graceful-termination-timeout", "20"])
    with httpx.stream("POST", s.url + "/generate_stream", json={"inputs": "a", "parameters": {"max_new_tokens": 20}},
                      timeout=30) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        s.proc.send_signal(signal.SIGTERM)
        rest = [line for line in lines if line.startswith("data:")]
    assert json.loads(first[5:])["index"] == 1
    assert json.loads(rest[-1][5:])["details"] is None and json.loads(rest[-1][5:])["generated_text"]
    assert len(rest) == 19
    assert s.proc.wait(20) == 0
