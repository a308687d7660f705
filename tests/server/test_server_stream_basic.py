"""`harness serve --model simulated`: /generate_stream end to end over HTTP."""

from __future__ import annotations

import httpx
from server_sse_util import sse_events


def test_generate_stream_simulated(serve) -> None:
    s = serve(["--model", "simulated", "--sim-ttft-ms", "5", "--sim-itl-ms", "1"])
    resp, events = sse_events(s.url + "/generate_stream",
                              {"inputs": "hello world", "parameters": {"max_new_tokens": 5, "details": True}})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/event-stream"
    assert resp.headers["x-accel-buffering"] == "no"
    assert [e["index"] for e in events] == [1, 2, 3, 4, 5]
    assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    last = events[-1]
    assert last["details"] == {"finish_reason": "length", "generated_tokens": 5, "seed": None, "input_length": 2}
    assert last["generated_text"] == "".join(e["token"]["text"] for e in events)
    assert httpx.get(s.url + "/health").status_code == 200
