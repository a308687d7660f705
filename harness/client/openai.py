"""OpenAI-compatible streaming: ``POST /v1/chat/completions`` and ``POST /v1/completions``.

Request: chat ``{"messages", "stream": true, "stream_options": {"include_usage": true},
"max_tokens"?, "model"?}``; completions the same with ``"prompt"`` (text). ``model`` is sent when
a model name is given (TGI treats any value other than "tgi" as an adapter id, vLLM requires it).

Events: a chunk is a token event when any choice carries generated text: a non-empty
``delta.content``, ``delta.reasoning_content``/``delta.reasoning`` (counted as tokens and counted
in ``record.reasoning_events``), ``delta.tool_calls`` (a function name or argument fragment), or
``text`` on completions. Role-only and empty deltas are not token events. Tokens per event: the
length of ``logprobs.content`` (chat) or ``logprobs.tokens`` (completions) when the server sends
them, else 1. ``usage`` (an extra ``choices: []`` chunk or on the last chunk) ->
``output_tokens_server`` / ``input_tokens_server`` / ``cached_input_tokens``
(``prompt_tokens_details.cached_tokens``); the last non-empty ``finish_reason`` -> ``finish_reason``.

Channels (one comparison more per answer event): a token event is reasoning (any choice reasoned;
``reasoning_tokens``, ``first_reasoning_ns``), else tool call (any choice carried ``tool_calls``;
``tool_call_tokens``), else answer (content or completions text; ``first_answer_ns``). ``first_tool_call_ns`` is the first event with any
``delta.tool_calls`` entry (its name, usually with empty arguments); ``tool_call_end_ns`` the event
whose ``finish_reason`` is ``tool_calls`` (the model's end of its calls), else, when the stream ended
its calls otherwise (``length``, ``stop``), the last event with a ``delta.tool_calls`` entry.

End of stream: ``data: [DONE]`` ends it ok (with or without a ``finish_reason`` before it). A body
that ends cleanly after a chunk with a ``finish_reason`` but without ``[DONE]`` is also ok, flagged
``done_missing`` (``transformers serve`` ends its streams so); ``end_ns`` is then the last event's
arrival. A body that ends with neither is ``incomplete``, as is one cut mid-body (connection closed
before the chunked terminator). An error object mid-stream (``{"error": {...}}`` or TGI's older
``{"error","error_type"}``) classifies the request and it is never ok, even when [DONE] follows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from harness.client.base import StreamClient
from harness.client.errors import classify_event, format_error, parse_error_payload
from harness.client.sse import Event
from harness.client.sse import loads as sse_loads
from harness.client.tgi import _malformed
from harness.records import RequestRecord
from harness.workload.prompt import Prompt


def tool_text(calls: list) -> str:
    """The generated text of a ``delta.tool_calls`` list: each entry's function name and argument fragment."""
    out = []
    for tc in calls:
        fn = tc.get("function") if isinstance(tc, dict) else None
        if fn:
            out.append((fn.get("name") or "") + (fn.get("arguments") or ""))
    return "".join(out)


class OpenAIClient(StreamClient):
    """Client for ``/v1/chat/completions`` (default) and ``/v1/completions``."""

    protocol = "openai"
    default_endpoint = "/v1/chat/completions"

    @property
    def chat(self) -> bool:
        """True for chat routes: anything but a path ending in ``/completions`` (not ``/chat/completions``)."""
        ep = self.endpoint.rstrip("/")
        return ep.endswith("/chat/completions") or not ep.endswith("/completions")

    def build_body(self, prompt: Prompt) -> dict:
        body: dict = {}
        if self.model_name:
            body["model"] = self.model_name
        if self.chat:
            body["messages"] = prompt.as_messages()
        else:
            body["prompt"] = prompt.as_text()
        mnt = prompt.max_new_tokens if prompt.max_new_tokens is not None else self.max_new_tokens
        if mnt is not None:
            body["max_tokens"] = mnt
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        if prompt.body:
            body.update(prompt.body)
        body.update(self.extra_body)
        return body

    def read_stream(self, events: Iterator[Event], rec: RequestRecord, texts: list[str] | None,
                    on_text: Callable[[str], None] | None) -> bool:
        loads = sse_loads
        token_ns = rec.token_ns
        per_event = rec.tokens_per_event
        # This attempt's channel values are locals (an answer event costs one comparison more than
        # before) and reach the record in the finally clause, however the stream ends. An event's
        # tokens count to the channel of the event: reasoning if any choice reasoned, else tool call
        # if any choice carried tool_calls, else answer.
        first_answer = first_reasoning = first_tool = last_tool = tool_end = None
        reasoning_tokens = tool_tokens = 0
        rec.cached_input_tokens = None
        failed = False
        t = 0
        try:
            for t, data, event in events:
                if data == b"[DONE]" or data.strip() == b"[DONE]":
                    if not failed:
                        rec.end_ns = t
                    return not failed
                try:
                    obj = loads(data)
                    choices = obj.get("choices")
                except (ValueError, AttributeError):
                    return _malformed(rec, data)
                if choices:
                    n = 0
                    kind = 0  # 0 answer, 1 reasoning, 2 tool call
                    for c in choices:
                        d = c.get("delta")
                        if d is not None:
                            piece = d.get("content")
                            if not piece:
                                piece = d.get("reasoning_content") or d.get("reasoning")
                                if piece:
                                    kind = 1
                                elif d.get("tool_calls"):
                                    piece = tool_text(d["tool_calls"])
                                    if kind == 0:
                                        kind = 2
                                    if first_tool is None:
                                        first_tool = t
                                    last_tool = t
                        else:
                            piece = c.get("text")
                        if piece:
                            lp = c.get("logprobs")
                            k = 0
                            if lp:
                                k = len(lp.get("content") or lp.get("tokens") or ())
                            n += k or 1
                            if texts is not None and isinstance(piece, str):
                                texts.append(piece)
                                if on_text is not None:
                                    on_text(piece)
                        fr = c.get("finish_reason")
                        if fr:
                            rec.finish_reason = fr
                            if fr == "tool_calls":
                                tool_end = t
                    if n:
                        token_ns.append(t)
                        per_event.append(n)
                        if kind:
                            if kind == 1:
                                rec.reasoning_events += 1
                                reasoning_tokens += n
                                if first_reasoning is None:
                                    first_reasoning = t
                            else:
                                tool_tokens += n
                        elif first_answer is None:
                            first_answer = t
                usage = obj.get("usage")
                if usage:
                    if usage.get("completion_tokens") is not None:
                        rec.output_tokens_server = usage["completion_tokens"]
                    if usage.get("prompt_tokens") is not None:
                        rec.input_tokens_server = usage["prompt_tokens"]
                    details = usage.get("prompt_tokens_details")
                    if details and isinstance(details.get("cached_tokens"), int):
                        rec.cached_input_tokens = details["cached_tokens"]
                if (obj.get("error") or event == b"error") and not failed:
                    etype, msg, status = parse_error_payload(obj)
                    rec.outcome = classify_event(etype, msg, status)
                    rec.error_text = format_error(None, etype, msg)
                    rec.end_ns = t
                    failed = True
            if rec.finish_reason is not None and not failed:
                rec.done_missing = True
                rec.end_ns = t
                return True
            return False
        finally:
            rec.first_answer_ns, rec.first_reasoning_ns, rec.first_tool_call_ns = first_answer, first_reasoning, first_tool
            rec.tool_call_end_ns = tool_end if tool_end is not None else last_tool
            rec.reasoning_tokens, rec.tool_call_tokens = reasoning_tokens, tool_tokens
