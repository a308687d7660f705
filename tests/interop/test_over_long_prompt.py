"""A prompt longer than the model's context, per live target (runs after the matrix: it is the slow one).

- llama.cpp's server (context 2048 here): ``200 text/event-stream`` and then the chunked body ends
  with no event at all; the reason ("Requested tokens (N) exceed context window of 2048") is only
  in the server's log. The harness records ``incomplete`` ("stream ended without its final event").
- ``transformers serve``: no prompt length check. 8301 prompt tokens on SmolLM2 (8192 positions)
  are served (one prefill of 10 s to a minute and more on 2 busy cores; the read timeout is raised
  to cover it). The harness records ``ok`` with the server's prompt_tokens. A client that gives up
  does not stop the prefill, so this test comes after every other test of this target.
"""

from __future__ import annotations

import time

import live
import pytest
from interop_checks import check_ok_record

from harness.client import Timeouts, make_client


@pytest.mark.timeout(900)  # one long CPU prefill; minutes when the machine is shared
def test_prompt_longer_than_the_context(target):
    if target.name == "llamacpp":
        words, route, max_new = live.LLAMA_N_CTX + 100, "/v1/chat/completions", 8
    else:
        words, route, max_new = 8300, "/v1/completions", 2
    with make_client("openai", target.url, endpoint=route, model_name=target.model_name, max_new_tokens=max_new,
                     timeouts=Timeouts(connect_s=10, read_s=600, total_s=600)) as client:
        rec = client.stream("hello " * words)
    if target.name == "llamacpp":
        assert rec.outcome == "incomplete" and rec.http_status == 200, (rec.outcome, rec.error_text)
        assert rec.error_text == "stream ended without its final event" and not rec.token_ns
        for _ in range(100):  # the server logs its traceback after the response has ended
            if "exceed context window of 2048" in target.log():
                break
            time.sleep(0.1)
        assert "exceed context window of 2048" in target.log()
    else:
        check_ok_record(rec, target.name, min_events=1)
        assert rec.input_tokens_server > 8192
