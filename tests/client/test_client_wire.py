"""Parser and classification tests over a real loopback HTTP peer that writes exact bytes.

Covers: split UTF-8 across reads and chunks, CRLF framing, comments, multi-line data, truncated
streams, error events mid-stream, a 429 JSON body on an SSE route, bundled tokens per event,
content-length and close-delimited bodies, keep-alive reuse, retries with Retry-After, timeouts,
connection refused, API-key hygiene.
"""

from __future__ import annotations

import json
import time

import pytest
from client_rawserver import CLOSE, END, RawServer, chunk, json_response, sse_head

from harness.client import RetryPolicy, Timeouts, make_client
from harness.client.errors import classify_status, parse_retry_after
from harness.records import Outcome, RequestRecord


def tgi_event(i: int, text: str, last: bool = False, n: int = 3) -> bytes:
    obj = {"index": i, "token": {"id": i, "text": text, "logprob": -0.1, "special": False},
           "generated_text": "done" if last else None,
           "details": {"finish_reason": "length", "generated_tokens": n, "seed": None, "input_length": 5}
           if last else None}
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def oa_chunk(content: str | None = None, role: bool = False, finish: str | None = None, **delta) -> bytes:
    d = dict(delta)
    if role:
        d["role"] = "assistant"
    if content is not None:
        d["content"] = content
    obj = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}\n\n'


@pytest.fixture
def server():
    started: list[RawServer] = []

    def _make(script):
        s = RawServer(script)
        started.append(s)
        return s

    yield _make
    for s in started:
        s.close()


def test_tgi_stream_ok_with_details_and_body(server):
    s = server(lambda req: [(0, sse_head()), (0, chunk(tgi_event(1, " a"))), (0.02, chunk(tgi_event(2, " b"))),
                            (0.02, chunk(tgi_event(3, " c", last=True))), (0, END)])
    c = make_client("tgi", s.url, max_new_tokens=3)
    r = c.stream("hello", keep_text=True)
    assert r.outcome == Outcome.OK and r.http_status == 200
    assert r.text == " a b c" and len(r.token_ns) == 3 and r.tokens_per_event == [1, 1, 1]
    assert r.output_tokens_server == 3 and r.input_tokens_server == 5 and r.finish_reason == "length"
    assert r.send_ns <= r.headers_ns <= r.token_ns[0] <= r.end_ns and r.intended_ns == r.send_ns
    gaps = [(b - a) / 1e6 for a, b in zip(r.token_ns, r.token_ns[1:], strict=False)]
    assert all(g >= 15 for g in gaps)  # each token stamped on its own arrival, not in a block
    body = s.requests[0].json()
    assert body == {"inputs": "hello", "parameters": {"details": True, "max_new_tokens": 3}}
    assert s.requests[0].path == "/generate_stream" and s.requests[0].headers["x-request-id"] == r.request_id


def test_tgi_compat_route_adds_stream_true(server):
    s = server(lambda req: [(0, sse_head()), (0, chunk(tgi_event(1, "x", last=True, n=1))), (0, END)])
    r = make_client("tgi", s.url, endpoint="/").stream("p")
    assert r.outcome == Outcome.OK
    assert s.requests[0].path == "/" and s.requests[0].json()["stream"] is True


def test_split_utf8_across_chunks_and_reads(server):
    ev = tgi_event(1, "中文é", last=True, n=1)
    cut = ev.index("中".encode()) + 1  # inside the first multibyte character
    s = server(lambda req: [(0, sse_head()), (0, chunk(ev[:cut])), (0.05, chunk(ev[cut:])), (0, END)])
    r = make_client("tgi", s.url).stream("p", keep_text=True)
    assert r.outcome == Outcome.OK and r.text == "中文é" and "\ufffd" not in r.text


def test_crlf_comments_and_multiline_data(server):
    ev1 = b'data: {"index":1,"token":{"id":1,"text":"A","special":false},\r\ndata: "generated_text":null}\r\n\r\n'
    ev2 = tgi_event(2, "B", last=True, n=2).replace(b"\n", b"\r\n")
    s = server(lambda req: [(0, sse_head()), (0, chunk(b":\r\n\r\n")), (0, chunk(ev1)),
                            (0, chunk(b": keep-alive\n\n")), (0, chunk(ev2)), (0, END)])
    r = make_client("tgi", s.url).stream("p", keep_text=True)
    assert r.outcome == Outcome.OK and r.text == "AB" and len(r.token_ns) == 2


def test_one_chunk_holding_many_events_and_events_split_over_chunks(server):
    evs = tgi_event(1, "a") + tgi_event(2, "b") + tgi_event(3, "c", last=True)
    s = server(lambda req: [(0, sse_head()), (0, chunk(evs[:10])), (0, chunk(evs[10:70])), (0, chunk(evs[70:])),
                            (0, END)])
    r = make_client("tgi", s.url).stream("p", keep_text=True)
    assert r.outcome == Outcome.OK and r.text == "abc"


def test_truncated_stream_is_incomplete_never_ok(server):
    s = server(lambda req: [(0, sse_head()), (0, chunk(tgi_event(1, "a"))), (0, chunk(tgi_event(2, "b")[:20])),
                            (0, CLOSE)])
    r = make_client("tgi", s.url).stream("p")
    assert r.outcome == Outcome.INCOMPLETE and len(r.token_ns) == 1 and r.end_ns is not None


def test_stream_ending_cleanly_without_final_event_is_incomplete(server):
    s = server(lambda req: [(0, sse_head()), (0, chunk(tgi_event(1, "a"))), (0, END)])
    r = make_client("tgi", s.url).stream("p")
    assert r.outcome == Outcome.INCOMPLETE and "final event" in r.error_text


@pytest.mark.parametrize(("etype", "outcome"), [
    ("overloaded", Outcome.OVERLOADED), ("validation", Outcome.VALIDATION), ("generation", Outcome.GENERATION),
    ("incomplete_generation", Outcome.INCOMPLETE), ("incomplete_generation_stream", Outcome.INCOMPLETE),
])
def test_tgi_error_event_mid_stream(server, etype, outcome):
    err = json.dumps({"error": f"boom {etype}", "error_type": etype}).encode()
    s = server(lambda req: [(0, sse_head()), (0, chunk(tgi_event(1, "a"))),
                            (0, chunk(b"data: " + err + b"\n\n")), (0, END)])
    c = make_client("tgi", s.url)
    r = c.stream("p")
    assert r.outcome == outcome and r.http_status == 200 and f"boom {etype}" in r.error_text
    assert len(r.token_ns) == 1
    assert c.stream("p").outcome == outcome and s.connections == 1  # the body was drained: reused


def test_429_json_body_on_sse_route(server):
    s = server(lambda req: [(0, json_response(429, {"error": "Model is overloaded", "error_type": "overloaded"},
                                              "Retry-After: 2\r\n"))])
    r = make_client("tgi", s.url).stream("p")
    assert r.outcome == Outcome.OVERLOADED and r.http_status == 429
    assert r.error_text == "HTTP 429 overloaded: Model is overloaded" and r.retry_after_s == 2.0
    assert r.token_ns == [] and r.retries == 0


@pytest.mark.parametrize(("status", "body", "outcome"), [
    (503, {"error": "Model is overloaded", "error_type": "overloaded"}, Outcome.OVERLOADED),
    # a 503 refuses work for now whatever its body says (vLLM, llama.cpp while loading, proxies)
    (503, {"error": "unhealthy", "error_type": "healthcheck"}, Outcome.OVERLOADED),
    (422, {"error": "Input validation error: bad", "error_type": "validation"}, Outcome.VALIDATION),
    (424, {"error": "Request failed during generation: x", "error_type": "generation"}, Outcome.GENERATION),
    (401, {"error": {"message": "invalid key", "type": "auth"}}, Outcome.HTTP_ERROR),
])
def test_non_2xx_classification_and_error_text(server, status, body, outcome):
    s = server(lambda req: [(0, json_response(status, body))])
    r = make_client("openai", s.url).stream("p")
    assert r.outcome == outcome and r.http_status == status
    msg = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
    assert msg in r.error_text


def test_openai_chat_tokens_roles_reasoning_usage_done(server):
    pieces = [oa_chunk(role=True), oa_chunk("", role=True), oa_chunk(reasoning_content="think"),
              oa_chunk(reasoning="more"), oa_chunk("Hel"), oa_chunk("lo", finish="stop"), USAGE, DONE]
    s = server(lambda req: [(0, sse_head()), *[(0.005, chunk(p)) for p in pieces], (0, END)])
    r = make_client("openai", s.url, model_name="m", max_new_tokens=9).stream("hi", keep_text=True)
    assert r.outcome == Outcome.OK
    assert len(r.token_ns) == 4 and r.reasoning_events == 2  # role-only and empty deltas are not tokens
    assert r.output_tokens_server == 2 and r.input_tokens_server == 7 and r.finish_reason == "stop"
    assert r.text == "thinkmoreHello"
    body = s.requests[0].json()
    assert body["messages"] == [{"role": "user", "content": "hi"}] and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True} and body["model"] == "m" and body["max_tokens"] == 9
    assert s.requests[0].path == "/v1/chat/completions"


def test_openai_completions_and_bundled_tokens_per_event(server):
    def comp(text, n):
        lp = {"tokens": [f"t{i}" for i in range(n)], "token_logprobs": [0.0] * n}
        return b"data: " + json.dumps({"choices": [{"index": 0, "text": text, "logprobs": lp,
                                                    "finish_reason": ""}]}).encode() + b"\n\n"
    s = server(lambda req: [(0, sse_head()), (0, chunk(comp("ab", 2))), (0, chunk(comp("cde", 3))),
                            (0, chunk(comp("f", 1))), (0, chunk(DONE)), (0, END)])
    r = make_client("openai", s.url, endpoint="/v1/completions").stream("p")
    assert r.outcome == Outcome.OK and r.tokens_per_event == [2, 3, 1] and r.output_tokens_events == 6
    assert s.requests[0].json()["prompt"] == "p" and s.requests[0].path == "/v1/completions"


def test_openai_missing_done_and_finish_reason_is_incomplete(server):
    s = server(lambda req: [(0, sse_head()), (0, chunk(oa_chunk("a"))), (0, END)])
    r = make_client("openai", s.url).stream("p")
    assert r.outcome == Outcome.INCOMPLETE and len(r.token_ns) == 1


@pytest.mark.parametrize(("err", "outcome"), [
    ({"error": {"message": "Model is overloaded", "http_status_code": 422}}, Outcome.OVERLOADED),
    ({"error": {"message": "Input validation error: x", "http_status_code": 422}}, Outcome.VALIDATION),
    ({"error": "Request failed during generation: y", "error_type": "generation"}, Outcome.GENERATION),
])
def test_openai_error_object_mid_stream_then_done_is_not_ok(server, err, outcome):
    s = server(lambda req: [(0, sse_head()), (0, chunk(oa_chunk("a"))),
                            (0, chunk(b"data: " + json.dumps(err).encode() + b"\n\n")), (0, chunk(DONE)), (0, END)])
    r = make_client("openai", s.url).stream("p")
    assert r.outcome == outcome and len(r.token_ns) == 1


def test_content_length_and_close_delimited_sse_bodies(server):
    body = tgi_event(1, "a") + tgi_event(2, "b", last=True, n=2)
    s1 = server(lambda req: [(0, sse_head(chunked=False, extra=f"Content-Length: {len(body)}\r\n") + body)])
    c = make_client("tgi", s1.url)
    assert c.stream("p").outcome == Outcome.OK and c.stream("p").outcome == Outcome.OK
    assert s1.connections == 1
    s2 = server(lambda req: [(0, sse_head(chunked=False) + body), (0, CLOSE)])
    c2 = make_client("tgi", s2.url)
    assert c2.stream("p").outcome == Outcome.OK and c2.stream("p").outcome == Outcome.OK
    assert s2.connections == 2


def test_stale_keepalive_connection_is_reopened_transparently(server):
    state = {"n": 0}

    def script(req):
        state["n"] += 1
        out = [(0, sse_head()), (0, chunk(tgi_event(1, "a", last=True, n=1))), (0, END)]
        return out + [(0, CLOSE)] if state["n"] == 1 else out  # server drops the idle connection

    s = server(script)
    c = make_client("tgi", s.url)
    assert c.stream("p").outcome == Outcome.OK
    time.sleep(0.05)
    r = c.stream("p")
    assert r.outcome == Outcome.OK and r.retries == 0 and s.connections == 2


def test_retry_on_429_honours_retry_after_and_keeps_first_send(server):
    state = {"n": 0}

    def script(req):
        state["n"] += 1
        if state["n"] <= 2:
            return [(0, json_response(429, {"error": "Model is overloaded", "error_type": "overloaded"},
                                      "Retry-After: 0.2\r\n"))]
        return [(0, sse_head()), (0, chunk(tgi_event(1, "a", last=True, n=1))), (0, END)]

    s = server(script)
    r = make_client("tgi", s.url, retry=RetryPolicy(max_retries=3, base_backoff_s=0.01)).stream("p")
    assert r.outcome == Outcome.OK and r.retries == 2 and r.retry_after_s == 0.2
    assert r.attempt_send_ns - r.send_ns >= 0.4e9  # two back-offs of Retry-After 0.2 s
    assert (r.token_ns[0] - r.send_ns) > (r.token_ns[0] - r.attempt_send_ns)  # user-perceived TTFT includes retries


def test_retry_on_overloaded_event_and_give_up_after_max(server):
    err = b'data: {"error":"Model is overloaded","error_type":"overloaded"}\n\n'
    s = server(lambda req: [(0, sse_head()), (0, chunk(err)), (0, END)])
    r = make_client("tgi", s.url, retry=RetryPolicy(max_retries=2, base_backoff_s=0.01)).stream("p")
    assert r.outcome == Outcome.OVERLOADED and r.retries == 2 and len(s.requests) == 3


def test_backoff_formula():
    p = RetryPolicy(max_retries=5, max_backoff_s=1.0, base_backoff_s=0.1)
    assert [p.backoff_s(k, None) for k in (1, 2, 3, 4, 5)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    assert p.backoff_s(1, 0.5) == 0.5 and p.backoff_s(1, 30) == 1.0


def test_read_timeout_between_tokens(server):
    s = server(lambda req: [(0, sse_head()), (0, chunk(tgi_event(1, "a"))), (2.0, chunk(tgi_event(2, "b")))])
    r = make_client("tgi", s.url, timeouts=Timeouts(read_s=0.3)).stream("p")
    assert r.outcome == Outcome.TIMEOUT and len(r.token_ns) == 1
    assert 0.25e9 <= r.end_ns - r.token_ns[0] < 1.5e9


def test_total_timeout(server):
    s = server(lambda req: [(0, sse_head()), *[(0.1, chunk(tgi_event(i, "a"))) for i in range(1, 30)]])
    r = make_client("tgi", s.url, timeouts=Timeouts(read_s=5, total_s=0.5)).stream("p")
    assert r.outcome == Outcome.TIMEOUT and 0.4e9 <= r.end_ns - r.send_ns < 1.5e9


def test_connection_refused_is_connect_error():
    from serverproc import free_port

    r = make_client("tgi", f"http://127.0.0.1:{free_port()}").stream("p")
    assert r.outcome == Outcome.CONNECT_ERROR and r.http_status is None and "refused" in r.error_text.lower()


def test_api_key_header_sent_but_never_recorded(server):
    key = "sk-secret-123"
    s = server(lambda req: [(0, json_response(401, {"error": f"bad key {req.headers.get('authorization')}"}))])
    r = make_client("openai", s.url, api_key=key).stream("p")
    assert s.requests[0].headers["authorization"] == f"Bearer {key}"
    assert key not in r.to_json() and "***" in r.error_text


def test_non_sse_200_is_an_http_error(server):
    s = server(lambda req: [(0, json_response(200, [{"generated_text": "x"}]))])
    r = make_client("tgi", s.url).stream("p")
    assert r.outcome == Outcome.HTTP_ERROR and "text/event-stream" in r.error_text


def test_helpers():
    assert classify_status(429, None, "") == "overloaded"
    assert classify_status(503, None, "server overloaded, try later") == "overloaded"
    assert classify_status(500, None, "") == "http_error"
    assert parse_retry_after("3") == 3.0 and parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_wall_s=1445412470.0) == 10.0


def test_interrupt_marks_record_cancelled_and_propagates(server):
    s = server(lambda req: [(0, sse_head()), (0, chunk(tgi_event(1, "a"))), (5.0, chunk(tgi_event(2, "b")))])
    c = make_client("tgi", s.url)
    rec = RequestRecord()

    def stop(_text):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        c.stream("p", record=rec, on_text=stop, intended_ns=123)
    assert rec.outcome == Outcome.CANCELLED and rec.end_ns is not None and not c.conn.connected
    assert rec.intended_ns == 123  # an open-loop arrival cancelled mid-stream keeps its scheduled time
