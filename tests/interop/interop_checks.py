"""Checks shared by the interop tests: what every ok record from a live target must satisfy."""

from __future__ import annotations

import re

from harness.metrics import itl_ms, token_mismatch, tpot_ms, ttfb_ms, ttft_ms
from harness.records import RequestRecord

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

#: which targets put ``usage`` in the stream (llama-cpp-python ignores ``stream_options``)
USAGE_IN_STREAM = {"llamacpp": False, "tserve": True}
#: which targets end their streams with ``data: [DONE]`` (transformers serve does not)
SENDS_DONE = {"llamacpp": True, "tserve": False}


def check_ok_record(rec: RequestRecord, target: str, min_events: int = 2) -> None:
    """An ok stream from ``target``: timings present and positive, token counts agree with usage.

    TTFT and TTFB > 0; ITL has one gap per pair of token events, none negative and the largest
    positive (events that arrive in one read share a stamp, so a single gap may be 0); TPOT > 0.
    Token agreement: :func:`harness.metrics.token_mismatch` (its EOS rule) is False where the
    target sends usage; where it sends none the server count stays None.
    """
    assert rec.outcome == "ok", (rec.outcome, rec.error_text)
    assert rec.error_text is None
    assert UUID.fullmatch(rec.request_id), rec.request_id
    assert rec.http_status == 200
    assert rec.finish_reason in ("length", "stop"), rec.finish_reason
    assert len(rec.token_ns) >= min_events, rec.token_ns
    assert rec.send_ns <= rec.headers_ns <= rec.token_ns[0] <= rec.token_ns[-1] <= rec.end_ns
    assert ttfb_ms(rec) > 0 and ttft_ms(rec) > 0
    gaps = itl_ms(rec)
    assert len(gaps) == len(rec.token_ns) - 1
    if gaps:
        assert min(gaps) >= 0 and max(gaps) > 0, gaps
    if len(rec.token_ns) >= 2:
        assert tpot_ms(rec) > 0
    assert rec.output_tokens_events == sum(rec.tokens_per_event) >= len(rec.token_ns)
    if USAGE_IN_STREAM[target]:
        assert rec.output_tokens_server is not None and rec.input_tokens_server is not None
        assert token_mismatch(rec) is False, (rec.output_tokens_events, rec.output_tokens_server, rec.finish_reason)
    else:
        assert rec.output_tokens_server is None and token_mismatch(rec) is None
    assert rec.done_missing is (not SENDS_DONE[target])
