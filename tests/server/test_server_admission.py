"""Admission (overloaded while the cap is held by open streams), permit release on client
disconnect, and the official Hugging Face client, against `simulated` and `tiny`."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import ExitStack

import httpx
import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import OverloadedError
from server_sse_util import metric_value, sse_events, start_server

BACKENDS = {
    "simulated": ["--model", "simulated", "--sim-ttft-ms", "2", "--sim-itl-ms", "20", "--sim-output-tokens", "0"],
    "tiny": ["--model", "tiny"],
}
OVERLOADED = {"error": "Model is overloaded", "error_type": "overloaded"}


@pytest.fixture(scope="module", params=list(BACKENDS))
def srv(request, tmp_path_factory):
    s = start_server([*BACKENDS[request.param], "--max-concurrent-requests", "2"],
                     tmp_path_factory.mktemp(request.param))
    yield s
    assert s.stop() == 0


def _open_stream(stack: ExitStack, url: str) -> object:
    """Start a long stream and read its first event (the permit is then surely held). Keep the
    returned line iterator alive: when it is collected httpx closes the connection."""
    client = stack.enter_context(httpx.Client(timeout=60))
    resp = stack.enter_context(client.stream("POST", url + "/generate_stream", json={
        "inputs": "hold the line", "parameters": {"max_new_tokens": 3000}}))
    lines = resp.iter_lines()
    for line in lines:
        if line.startswith("data:"):
            assert "token" in json.loads(line[5:])
            break
    return lines


def test_overloaded_then_released_after_disconnect(srv) -> None:
    with ExitStack() as stack:
        held = [_open_stream(stack, srv.url) for _ in range(2)]
        r = httpx.post(srv.url + "/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 2}})
        assert (r.status_code, r.json()) == (429, OVERLOADED)
        resp, ev = sse_events(srv.url + "/generate_stream", {"inputs": "x", "parameters": {"max_new_tokens": 2}})
        assert resp.status_code == 200 and ev == [OVERLOADED]
        # overloaded comes before validation (TGI order)
        resp, ev = sse_events(srv.url + "/generate_stream", {"inputs": "x", "parameters": {"top_k": 0}})
        assert ev == [OVERLOADED]
        client = InferenceClient(srv.url)
        with pytest.raises(OverloadedError):
            client.text_generation("x", max_new_tokens=2)
        with pytest.raises(OverloadedError):
            list(client.text_generation("x", max_new_tokens=2, stream=True))
        m = httpx.get(srv.url + "/metrics").text
        assert metric_value(m, 'tgi_request_failure{err="overloaded"}') >= 4
        assert len(held) == 2
    # Both clients went away mid-stream: their permits come back and their rows leave the batch.
    m = _wait_idle(srv)
    assert metric_value(m, 'tgi_request_failure{err="dropped"}') >= 2
    for _ in range(3):  # the full capacity is free again
        r = httpx.post(srv.url + "/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 2}}, timeout=60)
        assert r.status_code == 200, r.text
    with ExitStack() as stack:
        held = [_open_stream(stack, srv.url) for _ in range(2)]
        assert len(held) == 2
    _wait_idle(srv)  # the server notices the disconnects asynchronously; the next test needs the permits


def _wait_idle(srv, timeout_s: float = 20.0) -> str:
    """Poll /metrics until no request is queued or running; returns the last scrape."""
    deadline = time.monotonic() + timeout_s
    while True:
        m = httpx.get(srv.url + "/metrics").text
        if metric_value(m, "tgi_batch_current_size") == 0 and metric_value(m, "tgi_queue_size") == 0:
            return m
        assert time.monotonic() < deadline, m
        time.sleep(0.1)


def test_hf_client_streams(srv) -> None:
    client = InferenceClient(srv.url)
    out = list(client.text_generation("hello", max_new_tokens=5, stream=True, details=True))
    assert [o.index for o in out] == [1, 2, 3, 4, 5]
    assert out[-1].details.finish_reason == "length" and out[-1].details.generated_tokens == 5
    assert out[-1].generated_text.startswith("hello")  # "/" defaults to return_full_text
    texts = list(client.text_generation("hello", max_new_tokens=3, stream=True))
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    full = client.text_generation("hello", max_new_tokens=3, details=True)
    assert full.details.generated_tokens == 3 and len(full.details.tokens) == 3

    async def run_async() -> list:
        aclient = AsyncInferenceClient(srv.url)
        got = []
        async for o in await aclient.text_generation("hello", max_new_tokens=4, stream=True, details=True):
            got.append(o)
        return got

    got = asyncio.run(run_async())
    assert [o.index for o in got] == [1, 2, 3, 4] and got[-1].details is not None
    chat = client.chat_completion([{"role": "user", "content": "hi"}], max_tokens=3)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 3
    deltas = list(client.chat_completion([{"role": "user", "content": "hi"}], max_tokens=3, stream=True))
    assert len(deltas) == 3
