"""Every route and field of the TGI protocol, against `--model simulated` and `--model tiny`."""

from __future__ import annotations

import httpx
import pytest
from server_sse_util import metric_value, sse_events, start_server

MAX_IN, MAX_TOTAL = 200, 300
LIMITS = ["--max-input-tokens", str(MAX_IN), "--max-total-tokens", str(MAX_TOTAL)]
BACKENDS = {
    "simulated": ["--model", "simulated", "--sim-ttft-ms", "2", "--sim-itl-ms", "1", *LIMITS],
    "tiny": ["--model", "tiny", *LIMITS],
}


@pytest.fixture(scope="module", params=list(BACKENDS))
def srv(request, tmp_path_factory):
    s = start_server(BACKENDS[request.param], tmp_path_factory.mktemp(request.param))
    s.kind = request.param
    yield s
    assert s.stop() == 0


def n_tokens_text(kind: str, n: int) -> str:
    """A prompt of exactly n tokens (simulated: words; tiny: bytes)."""
    return " ".join(["w"] * n) if kind == "simulated" else "a" * n


def test_generate_fields_and_headers(srv) -> None:
    r = httpx.post(srv.url + "/generate", json={"inputs": "hello world", "parameters": {
        "max_new_tokens": 4, "details": True, "top_n_tokens": 2, "seed": 7, "do_sample": True,
        "temperature": 0.7, "top_k": 10, "top_p": 0.9, "typical_p": 0.9, "repetition_penalty": 1.1,
        "frequency_penalty": 0.1, "watermark": False, "adapter_id": "x", "truncate": 100,
        "unknown_key": 1, "stop": []}}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    det = body["details"]
    assert det["finish_reason"] == "length" and det["generated_tokens"] == 4 and det["seed"] == 7
    assert det["prefill"] == [] and len(det["tokens"]) == 4 and len(det["top_tokens"]) == 4
    assert all(len(t) == 2 for t in det["top_tokens"])
    assert set(det["tokens"][0]) == {"id", "text", "logprob", "special"}
    assert body["generated_text"] == "".join(t["text"] for t in det["tokens"] if not t["special"])
    for h in ("x-compute-type", "x-compute-time", "x-total-time", "x-validation-time", "x-queue-time",
              "x-inference-time", "x-time-per-token", "x-prompt-tokens", "x-generated-tokens",
              "x-compute-characters"):
        assert h in r.headers, h
    assert r.headers["x-generated-tokens"] == "4" and r.headers["x-compute-characters"] == "11"
    # No details -> the key is omitted; nulls are accepted everywhere.
    r = httpx.post(srv.url + "/generate", json={"inputs": "hi", "parameters": {
        k: None for k in ("temperature", "top_k", "top_p", "typical_p", "seed", "best_of", "truncate",
                          "top_n_tokens", "repetition_penalty", "frequency_penalty", "grammar", "details",
                          "return_full_text", "do_sample", "stop", "watermark")} | {"max_new_tokens": 2}},
        timeout=60)
    assert r.status_code == 200 and list(r.json()) == ["generated_text"], r.text


def test_generate_stream_and_compat(srv) -> None:
    resp, ev = sse_events(srv.url + "/generate_stream", {"inputs": "hello world", "parameters": {
        "max_new_tokens": 3, "details": True, "top_n_tokens": 1}})
    assert resp.status_code == 200 and resp.headers["cache-control"] == "no-cache"
    assert "x-compute-type" in resp.headers and "x-total-time" not in resp.headers
    assert [e["index"] for e in ev] == [1, 2, 3] and "[DONE]" not in ev
    assert all(len(e["top_tokens"]) == 1 for e in ev)
    assert ev[-1]["details"]["input_length"] == int(resp.headers["x-compute-characters"]) or True
    assert ev[-1]["details"]["finish_reason"] == "length" and ev[-1]["details"]["seed"] is None
    # compat "/": list when not streaming, return_full_text defaults to true there.
    r = httpx.post(srv.url + "/", json={"inputs": "hello", "parameters": {"max_new_tokens": 2}}, timeout=60)
    assert r.status_code == 200 and isinstance(r.json(), list) and r.json()[0]["generated_text"].startswith("hello")
    _, ev = sse_events(srv.url + "/", {"inputs": "hello", "stream": True, "parameters": {"max_new_tokens": 2}})
    assert ev[-1]["generated_text"].startswith("hello") and "[DONE]" not in ev
    # parameters absent -> sampling (seed reported in details is then set... details off: just works)
    r = httpx.post(srv.url + "/generate", json={"inputs": "hello"}, timeout=120)
    assert r.status_code == 200
    r = httpx.post(srv.url + "/generate", json={"inputs": "hello", "parameters": {
        "max_new_tokens": 2, "best_of": 2, "do_sample": True, "details": True}}, timeout=60)
    assert r.status_code == 200 and len(r.json()["details"]["best_of_sequences"]) == 1, r.text


VALIDATION = [
    ({"temperature": 0}, "`temperature` must be strictly positive"),
    ({"temperature": 0, "top_k": 0}, "`temperature` must be strictly positive"),
    ({"repetition_penalty": 0}, "`repetition_penalty` must be strictly positive"),
    ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"top_p": 0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"top_k": 0}, "`top_k` must be strictly positive"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
    ({"truncate": 0}, "`truncate` must be strictly positive and less than 200. Given: 0"),
    ({"truncate": 201}, "`truncate` must be strictly positive and less than 200. Given: 201"),
    ({"grammar": {"type": "json", "value": {"properties": {}}}}, "grammar is not supported"),
]
NON_STREAM_ONLY = [
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
    ({"best_of": 2, "do_sample": True, "seed": 1}, "`seed` must not be set when `best_of` > 1"),
]
STREAM_ONLY = [
    ({"best_of": 2, "do_sample": True}, "`best_of` != 1 is not supported when streaming tokens"),
    ({"decoder_input_details": True}, "`decoder_input_details` == true is not supported when streaming tokens"),
]


def _check(srv, inputs: str, params: dict, detail: str, *, stream: bool) -> None:
    want = {"error": f"Input validation error: {detail}", "error_type": "validation"}
    body = {"inputs": inputs, "parameters": {"max_new_tokens": 2, **params}}
    if stream:
        resp, ev = sse_events(srv.url + "/generate_stream", body)
        assert resp.status_code == 200 and ev == [want], (params, ev)
    else:
        r = httpx.post(srv.url + "/generate", json=body, timeout=60)
        assert (r.status_code, r.json()) == (422, want), params


def test_validation_rules(srv) -> None:
    for params, detail in VALIDATION:
        _check(srv, "hello", params, detail, stream=False)
        _check(srv, "hello", params, detail, stream=True)
    for params, detail in NON_STREAM_ONLY:
        _check(srv, "hello", params, detail, stream=False)
    for params, detail in STREAM_ONLY:
        _check(srv, "hello", params, detail, stream=True)
    _check(srv, "", {}, "`inputs` cannot be empty", stream=False)
    _check(srv, "", {}, "`inputs` cannot be empty", stream=True)
    text = n_tokens_text(srv.kind, 10)
    _check(srv, text, {"max_new_tokens": 291},
           "`inputs` tokens + `max_new_tokens` must be <= 300. Given: 10 `inputs` tokens and 291 `max_new_tokens`",
           stream=False)
    _check(srv, n_tokens_text(srv.kind, 210), {"max_new_tokens": 5},
           "`inputs` must have less than 200 tokens. Given: 210", stream=True)
    # truncate keeps the last n tokens: the same long prompt passes with truncate.
    r = httpx.post(srv.url + "/generate", json={"inputs": n_tokens_text(srv.kind, 210), "parameters": {
        "max_new_tokens": 2, "truncate": 20, "details": True}}, timeout=60)
    assert r.status_code == 200 and r.headers["x-prompt-tokens"] == "20"


def test_body_rejections(srv) -> None:
    r = httpx.post(srv.url + "/generate", content=b"{bad", timeout=10)
    assert r.status_code == 400 and r.json()["error"].startswith("Failed to parse the request body as JSON: ")
    for body in ({"inputs": 5}, {"inputs": "x", "parameters": {"max_new_tokens": -1}},
                 {"inputs": "x", "parameters": {"max_new_tokens": "5"}}, {"parameters": {}}):
        for route in ("/generate", "/generate_stream", "/"):
            r = httpx.post(srv.url + route, json=body, timeout=10)
            assert r.status_code == 422, (route, body)
            assert r.json()["error"].startswith("Failed to deserialize the JSON body into the target type: ")
            assert r.json()["error_type"] == "validation"
    assert httpx.get(srv.url + "/nope").status_code == 404


def test_info_health_models_docs_metrics(srv) -> None:
    info = httpx.get(srv.url + "/info").json()
    assert info["max_input_tokens"] == MAX_IN and info["max_total_tokens"] == MAX_TOTAL
    assert info["max_concurrent_requests"] == 128 and info["router"] == "text-generation-router"
    assert info["model_id"] == srv.kind
    for path in ("/health", "/", "/ping"):
        r = httpx.get(srv.url + path)
        assert r.status_code == 200 and r.content == b""
    assert httpx.get(srv.url + "/v1/models").json() == {
        "object": "list", "data": [{"id": srv.kind, "object": "model", "created": 0, "owned_by": srv.kind}]}
    assert httpx.get(srv.url + "/docs").status_code == 200
    spec = httpx.get(srv.url + "/api-doc/openapi.json").json()
    assert {"/generate", "/generate_stream", "/", "/v1/chat/completions", "/v1/completions"} <= set(spec["paths"])
    assert "description" in spec["components"]["schemas"]["GenerateParameters"]["properties"]["top_p"]
    text = httpx.get(srv.url + "/metrics").text
    for name in ("tgi_request_count", "tgi_request_success", "tgi_queue_size", "tgi_batch_current_size",
                 "tgi_batch_current_max_tokens"):
        assert metric_value(text, name) is not None, name
    for name in ("tgi_request_duration", "tgi_request_validation_duration", "tgi_request_queue_duration",
                 "tgi_request_inference_duration", "tgi_request_mean_time_per_token_duration",
                 "tgi_request_input_length", "tgi_request_generated_tokens", "tgi_request_max_new_tokens"):
        assert f"# TYPE {name} histogram" in text and f"{name}_count " in text, name
    assert 'tgi_request_failure{err="validation"}' in text and "_total" not in text


def test_openai_routes(srv) -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": msgs, "max_tokens": 3, "model": "tgi"},
                   timeout=60)
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion" and body["model"] == srv.kind
    assert body["choices"][0]["message"]["role"] == "assistant" and body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["finish_reason"] == "length"
    resp, ev = sse_events(srv.url + "/v1/chat/completions", {
        "messages": msgs, "max_tokens": 3, "stream": True, "model": "dummy", "logprobs": True, "top_logprobs": 2,
        "stream_options": {"include_usage": True}, "temperature": 0})
    assert ev[-1] == "[DONE]" and ev[-2]["choices"] == [] and ev[-2]["usage"]["completion_tokens"] == 3
    chunks = ev[:-2]
    assert len(chunks) == 3 and all(c["choices"][0]["delta"]["role"] == "assistant" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[0]["model"] == "dummy"
    assert len(chunks[0]["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 2
    r = httpx.post(srv.url + "/v1/completions", json={"prompt": ["a b", "c"], "max_tokens": 2}, timeout=60)
    assert r.status_code == 200 and [c["index"] for c in r.json()["choices"]] == [0, 1]
    _, ev = sse_events(srv.url + "/v1/completions", {"prompt": "a b", "max_tokens": 2, "stream": True})
    assert ev[-1] == "[DONE]" and ev[0]["choices"][0]["finish_reason"] == ""
    assert ev[-2]["choices"][0]["finish_reason"] == "length" and ev[-2]["usage"]["completion_tokens"] == 2
    r = httpx.post(srv.url + "/v1/completions", json={"prompt": "a", "suffix": "b"}, timeout=10)
    assert (r.status_code, r.json()["error_type"]) == (422, "suffix not supported")
    r = httpx.post(srv.url + "/v1/completions", json={"prompt": ["a"] * 5}, timeout=10)
    assert r.json() == {"error": "Number of prompts exceeds the maximum allowed batch size of 4",
                        "error_type": "batch size exceeded"}
    _, ev = sse_events(srv.url + "/v1/chat/completions", {"messages": msgs, "stream": True, "top_p": 1.0})
    assert ev == [{"error": {"message": "Input validation error: `top_p` must be > 0.0 and < 1.0",
                             "http_status_code": 422}}, "[DONE]"]
