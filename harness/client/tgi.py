"""TGI native streaming: ``POST /generate_stream`` and ``POST /`` with ``"stream": true``.

Request: ``{"inputs": text, "parameters": {"max_new_tokens": n, "details": true}}`` (plus
``"stream": true`` on ``/``; ``details`` makes the last event carry ``generated_tokens`` and
``input_length``). Chat-style prompts are flattened with :meth:`Prompt.as_text`.

Events (reference: TGI wire protocol): every event with a ``token`` is one token event carrying
one token (special tokens such as EOS included, so the count matches ``generated_tokens``; their
text is left out of the answer). The last event has a non-null ``generated_text`` (or
``details``): it ends the stream ok, ``details.finish_reason`` -> ``finish_reason``,
``details.generated_tokens`` -> ``output_tokens_server``, ``details.input_length`` ->
``input_tokens_server``. An error event ``{"error","error_type"}`` is classified by
:func:`~harness.client.errors.classify_event` (``overloaded`` -> overloaded, ...). A stream that
ends without the last event is ``incomplete``, never ok. A stray ``[DONE]`` is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from harness.client.base import StreamClient
from harness.client.errors import classify_event, format_error, parse_error_payload
from harness.client.sse import Event
from harness.client.sse import loads as sse_loads
from harness.records import Outcome, RequestRecord
from harness.workload.prompt import Prompt


class TgiClient(StreamClient):
    """Client for TGI's native streaming routes (and any server speaking them)."""

    protocol = "tgi"
    default_endpoint = "/generate_stream"

    def build_body(self, prompt: Prompt) -> dict:
        params: dict = {"details": True}
        mnt = prompt.max_new_tokens if prompt.max_new_tokens is not None else self.max_new_tokens
        if mnt is not None:
            params["max_new_tokens"] = mnt
        body: dict = {"inputs": prompt.as_text(), "parameters": params}
        if self.endpoint.rstrip("/") == "":
            body["stream"] = True
        for k, v in self.extra_body.items():
            if k == "parameters" and isinstance(v, dict):
                params.update(v)
            else:
                body[k] = v
        return body

    def read_stream(self, events: Iterator[Event], rec: RequestRecord, texts: list[str] | None,
                    on_text: Callable[[str], None] | None) -> bool:
        loads = sse_loads
        token_ns = rec.token_ns
        per_event = rec.tokens_per_event
        for t, data, event in events:
            try:
                obj = loads(data)
                tok = obj.get("token")
            except (ValueError, AttributeError):
                if data.strip() == b"[DONE]":
                    continue
                return _malformed(rec, data)
            if tok is not None and event != b"error":
                token_ns.append(t)
                per_event.append(1)
                if texts is not None and not tok.get("special"):
                    text = tok.get("text") or ""
                    texts.append(text)
                    if on_text is not None and text:
                        on_text(text)
                if obj.get("generated_text") is not None or obj.get("details"):
                    rec.end_ns = t
                    details = obj.get("details")
                    if isinstance(details, dict):
                        rec.finish_reason = details.get("finish_reason")
                        rec.output_tokens_server = details.get("generated_tokens")
                        rec.input_tokens_server = details.get("input_length")
                    return True
                continue
            if obj.get("error") is not None or event == b"error":
                etype, msg, status = parse_error_payload(obj)
                rec.outcome = classify_event(etype, msg, status)
                rec.error_text = format_error(None, etype, msg)
                rec.end_ns = t
                return False
            # an event without token or error (unknown extension): not a token event
        return False


def _malformed(rec: RequestRecord, data: bytes) -> bool:
    """An event that is not a JSON object: the stream is broken (http_error)."""
    rec.outcome = Outcome.HTTP_ERROR.value
    rec.error_text = "malformed SSE event: " + data[:200].decode("utf-8", errors="replace")
    return False
