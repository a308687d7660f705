"""Bad requests, overload and each target's own quirks, as each live target really answers them.

Per target, what the server does (see docs/interop.md) and so what the harness must record:

==================  =======================================  ==========================================
case                llama.cpp's server (llama-cpp-python)    transformers serve --continuous-batching
==================  =======================================  ==========================================
unknown model name  served by the one model (ok)             400 {"detail": "Server is pinned to ..."}
                                                             -> validation
prompt > context    200, empty event stream (reason only in  no length check: 8301 prompt tokens on an
                    the server log) -> incomplete            8192-token model are served -> ok
                    (test_over_long_prompt.py)               (test_over_long_prompt.py)
bad parameter       top_p=5: 500 internal_server_error with  unknown field: 422 {"detail": "Unexpected
                    pydantic's text -> http_error            fields ..."} -> validation
max_tokens=-1       completions: 500 -> http_error           200, no token, finish_reason length,
                                                             completion_tokens 0 -> ok, 0 tokens
temperature=-5      accepted -> ok                           accepted (CB keeps the first request's
                                                             sampling) -> ok
overload            none: requests wait on one lock          none: requests join the batch
==================  =======================================  ==========================================
"""

from __future__ import annotations

import threading

import pytest
import rawhttp
from interop_checks import check_ok_record

from harness.client import make_client
from harness.records import RequestRecord

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


def _stream(target, route: str = CHAT, prompt: str = "Say hello.", max_new_tokens: int = 8,
            model_name: str | None = "", **extra) -> RequestRecord:
    model = target.model_name if model_name == "" else model_name
    with make_client("openai", target.url, endpoint=route, model_name=model, max_new_tokens=max_new_tokens,
                     extra_body=extra or None) as client:
        return client.stream(prompt)


def test_unknown_model_name(target):
    rec = _stream(target, model_name="no-such-model")
    if target.name == "llamacpp":
        check_ok_record(rec, target.name)  # one model: any name is served by it
    else:
        assert rec.outcome == "validation" and rec.http_status == 400, (rec.outcome, rec.error_text)
        assert rec.error_text.startswith("HTTP 400: Server is pinned to ")
        assert "requested 'no-such-model'" in rec.error_text and not rec.token_ns


def test_bad_parameter(target):
    if target.name == "llamacpp":
        rec = _stream(target, top_p=5)
        assert rec.outcome == "http_error" and rec.http_status == 500, (rec.outcome, rec.error_text)
        assert rec.error_text.startswith("HTTP 500 internal_server_error: 1 validation error")
        assert "Input should be less than or equal to 1" in rec.error_text
    else:
        rec = _stream(target, temprature=0.5)
        assert rec.outcome == "validation" and rec.http_status == 422, (rec.outcome, rec.error_text)
        assert rec.error_text == "HTTP 422: Unexpected fields in the request: {'temprature'}"


def test_negative_max_tokens(target):
    if target.name == "llamacpp":
        rec = _stream(target, route=COMPLETIONS, max_new_tokens=-1)
        assert rec.outcome == "http_error" and rec.http_status == 500, (rec.outcome, rec.error_text)
        assert "Input should be greater than or equal to 0" in rec.error_text
    else:
        rec = _stream(target, max_new_tokens=-1)
        assert rec.outcome == "ok" and rec.finish_reason == "length", (rec.outcome, rec.error_text)
        assert rec.output_tokens_server == 0 and rec.output_tokens_events == 0 and not rec.token_ns
        assert rec.done_missing


def test_negative_temperature_is_accepted(target):
    check_ok_record(_stream(target, temperature=-5), target.name)


def test_no_overload_answer_requests_queue(target):
    """Neither target refuses work: 6 concurrent streams all end ok (llama.cpp serves them one by one)."""
    recs: list[RequestRecord] = []

    def one(i: int) -> None:
        recs.append(_stream(target, prompt=f"Count to {i + 3}.", max_new_tokens=6))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(180)
    assert len(recs) == 6
    for r in recs:
        check_ok_record(r, target.name, min_events=1)


def test_request_id_header(target):
    """The harness's UUID request id is accepted (and echoed); llama.cpp's server refuses any other form."""
    rec = _stream(target)
    check_ok_record(rec, target.name)
    body = {"model": target.model_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "stream": True}
    echoed = rawhttp.exchange(target.url, rawhttp.build_request(target.url, CHAT, body, request_id=rec.request_id))
    assert echoed.status == 200 and echoed.headers["x-request-id"] == rec.request_id
    hexid = rawhttp.exchange(target.url, rawhttp.build_request(target.url, CHAT, body, request_id="0123456789abcdef"))
    if target.name == "llamacpp":
        assert hexid.status == 400 and hexid.body() == b""
    else:
        assert hexid.status == 200 and hexid.headers["x-request-id"] == "0123456789abcdef"
    with make_client("openai", target.url, model_name=target.model_name, max_new_tokens=4,
                     request_id_header="") as client:
        check_ok_record(client.stream("Say hello."), target.name)


def test_models_route(target):
    """What /v1/models lists: llama.cpp its alias; transformers serve the hub cache, not its forced model."""
    import httpx

    r = httpx.get(target.url + "/v1/models", timeout=10)
    assert r.status_code == 200
    ids = [m["id"] for m in r.json()["data"]]
    if target.name == "llamacpp":
        assert ids == ["smollm2"]
    else:
        assert target.model_name not in ids


def test_llamacpp_default_interrupts_a_running_stream(tmp_path):
    """llama-cpp-python's default interrupt_requests: a second request cuts the running stream.

    The cut stream ends with ``data: [DONE]`` right after a content chunk (no finish_reason, no
    usage) and the chunked body is never terminated; the harness records it ``ok`` with
    ``finish_reason`` None (the documented "[DONE] without finish_reason" row), so runs against
    this server must use ``--interrupt_requests False`` (docs/interop.md).
    """
    import live
    import targets

    if not targets.is_ready("llamacpp"):
        pytest.fail("interop venv for llamacpp is not built: run `make interop`")
    t = live.start_llamacpp(tmp_path, interrupt=True)
    try:
        second: list[RequestRecord] = []
        th = threading.Thread(target=lambda: second.append(_stream(t, max_new_tokens=2)))

        def on_text(_piece: str) -> None:
            if th.ident is None:  # first token: send the second request now
                th.start()

        with make_client("openai", t.url, model_name=t.model_name, max_new_tokens=400) as client:
            cut = client.stream("Write a long story about a lighthouse keeper.", on_text=on_text)
        th.join(120)
    finally:
        t.stop()
    assert second and second[0].outcome == "ok", second
    assert cut.outcome == "ok" and cut.finish_reason is None, (cut.outcome, cut.error_text)
    assert 1 <= cut.output_tokens_events < 400
