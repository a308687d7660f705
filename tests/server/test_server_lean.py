"""The lean path (harness.server.lean) answers byte for byte as the framework routes do
(``HARNESS_LEAN=0``): seeded native streams, the compat route, OpenAI chat (usage, logprobs, tool
calls) and completion streams, error events, overloaded answers (also pipelined, kept alive or not),
keep-alive comments; and its trace has one line per token event."""

from __future__ import annotations

import json
import re
import socket
import time

from server_sse_util import start_server

ARGS = ["--model", "simulated", "--sim-ttft-ms", "150", "--sim-itl-ms", "2", "--sim-output-tokens", "0",
        "--max-concurrent-requests", "1"]
CASES = [
    (b"/generate_stream", b'{"inputs":"a b c","parameters":{"max_new_tokens":4,"details":true,"seed":3,"do_sample":true}}'),
    (b"/generate_stream", b'{"inputs":"a b","parameters":{"top_n_tokens":2,"stop":["the"],"max_new_tokens":30}}'),
    (b"/", b'{"inputs":"a b c","stream":true,"parameters":{"max_new_tokens":3,"details":true}}'),
    (b"/generate_stream", b'{"inputs":"a b c","parameters":{"top_k":0}}'),
    (b"/generate_stream", b'not json'),
    (b"/generate", b'{"inputs":"a","parameters":{"max_new_tokens":2,"best_of":2}}'),
    (b"/v1/chat/completions", b'{"messages":[{"role":"user","content":"hi"}],"stream":true,"temperature":0,'
                              b'"max_tokens":3,"logprobs":true,"top_logprobs":2,"stream_options":{"include_usage":true}}'),
    (b"/v1/chat/completions", b'{"messages":[{"role":"user","content":"hi"}],"stream":true,"temperature":0,'
                              b'"tools":[{"type":"function","function":{"name":"get","parameters":{"type":"object",'
                              b'"properties":{"city":{"type":"string"}}}}}]}'),
    (b"/v1/chat/completions", b'{"messages":[{"role":"user","content":"hi"}],"stream":true,"top_p":7}'),
    (b"/v1/completions", b'{"prompt":"a b","max_tokens":3,"stream":true,"temperature":0}'),
    (b"/v1/completions", b'{"prompt":["a b","c"],"max_tokens":2,"stream":true,"temperature":0}'),
    (b"/generate_stream?q=1", b'{"inputs":"a b","parameters":{"max_new_tokens":2,"seed":1,"do_sample":true}}'),
]
#: refused while the permit is held, on one connection: two pipelined keep-alive requests, then
#: HTTP/1.0 (not kept alive); the server closes after the last
_REFUSED_BODY = b'{"inputs":"a b","parameters":{"max_new_tokens":2}}'
PIPELINED = b"".join(
    b"POST %s HTTP/1.%d\r\nHost: x\r\nx-request-id: p%d\r\nContent-Length: %d\r\n\r\n%s"
    % (path, minor, i, len(_REFUSED_BODY), _REFUSED_BODY)
    for i, (path, minor) in enumerate([(b"/generate", 1), (b"/generate_stream", 1), (b"/", 0)]))


def _raw(port: int, path: bytes, body: bytes, rid: bytes) -> bytes:
    return _exchange(port, b"POST %s HTTP/1.1\r\nHost: x\r\nx-request-id: %s\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % (path, rid, len(body)) + body)


def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, read until the server closes; date and created stamps blanked."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return re.sub(rb'"created":\d+', b'"created":0', re.sub(rb"date: [^\r]*", b"date: -", out))


def _answers(tmp_path, lean: str) -> tuple[list[bytes], list[dict]]:
    trace = tmp_path / f"trace{lean}.jsonl"
    srv = start_server([*ARGS, "--trace-file", str(trace)], tmp_path / lean,
                       env={"HARNESS_LEAN": lean, "HARNESS_SSE_KEEPALIVE_S": "0.1"})
    try:
        out = [_raw(srv.port, p, b, b"r%d" % i) for i, (p, b) in enumerate(CASES)]
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as hold:  # takes the one permit
            body = b'{"inputs":"hold","parameters":{"max_new_tokens":3000}}'
            hold.sendall(b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            while b"data:" not in hold.recv(65536):
                pass
            out += [_raw(srv.port, p, b, b"o%d" % i) for i, (p, b) in enumerate(CASES)]
            out.append(_exchange(srv.port, PIPELINED))
    finally:
        assert srv.stop() == 0
    return out, [json.loads(line) for line in trace.read_text().splitlines()]


def test_lean_answers_match_the_framework_routes(tmp_path) -> None:
    lean, lean_trace = _answers(tmp_path, "1")
    framework, _ = _answers(tmp_path, "0")
    assert lean == framework
    assert b":\n\n" in lean[0] and b'"error_type":"overloaded"' in lean[len(CASES)]
    assert lean[len(CASES) + 5].startswith(b"HTTP/1.1 429 ")  # /generate refused while the permit is held
    assert b'"usage":{' in lean[6] and b'"tool_calls":[' in lean[7] and b"data: [DONE]" in lean[9]
    assert b'"error_type":"overloaded"' in lean[2 * len(CASES) - 1]  # refused on a route with a query string
    pipelined = lean[-1]
    assert pipelined.count(b"HTTP/1.1 ") == 3 and pipelined.count(b"connection: close") == 1
    assert pipelined.startswith(b"HTTP/1.1 429 ") and b"\r\n0\r\n\r\nHTTP/1.1 429 " in pipelined
    r0 = sorted(x["index"] for x in lean_trace if x["request_id"] == "r0")
    assert r0 == [1, 2, 3, 4]


def test_lean_stream_waits_for_a_slow_reader(tmp_path) -> None:
    """A client that stops reading (21 MB of events wait) gets every event in order once it reads
    again: the lean path waits for the transport to drain instead of dropping or reordering."""
    trace = tmp_path / "trace.jsonl"
    n = 30000
    srv = start_server(["--model", "simulated", "--sim-ttft-ms", "1", "--sim-itl-ms", "0.01", "--sim-output-tokens",
                        "0", "--max-input-tokens", "16", "--max-total-tokens", "40000", "--trace-file", str(trace)],
                       tmp_path / "srv")
    try:
        with socket.socket() as s:
            s.settimeout(60)
            s.connect(("127.0.0.1", srv.port))
            body = b'{"inputs":"a","parameters":{"max_new_tokens":%d,"top_n_tokens":5}}' % n
            s.sendall(b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nx-request-id: slow\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n" % len(body) + body)
            time.sleep(1.0)  # the server fills the socket buffers and the transport's, then waits
            out = b""
            while chunk := s.recv(65536):
                out += chunk
    finally:
        assert srv.stop() == 0
    indices = [json.loads(line[6:])["index"] for line in out.decode().split("\n") if line.startswith("data: {")]
    assert indices == list(range(1, n + 1))
    assert out.endswith(b"\r\n0\r\n\r\n")
    traced = sorted(json.loads(line)["index"] for line in trace.read_text().splitlines())
    assert traced == list(range(1, n + 1))
