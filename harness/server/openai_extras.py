"""OpenAI chat extensions: tools, reasoning deltas, tool-call deltas and usage details.

Tools (``POST /v1/chat/completions``), as TGI's router resolves them (``ToolGrammar::apply``):
``response_format`` with ``tools`` -> 422 ``Tool error: Grammar and tools are mutually exclusive``;
``tool_choice`` absent/``auto``/``required`` -> every tool; ``none`` -> no tool (a text answer); a
name or ``{"type": "function", "function": {"name"}}`` -> that tool, else ``Tool error: Tool with
name X not found``. Then, when a tool is to be called, a backend without tool support (the real
engine: it has no tool grammar) answers 422 ``Tool error: tools are not supported by this server``. When tools are used, the
tools JSON and the tool prompt are appended to the last message as TGI does for templates that do
not use ``tools``: ``"\\n---\\n" + tools JSON + "\\n" + tool_prompt`` (TGI's default tool prompt),
so they count as input tokens.

Stream deltas by :attr:`StepOutput.kind` (every chunk carries ``role``, as TGI's):
``answer`` -> ``{"role","content"}``; ``reasoning`` -> ``{"role","reasoning_content"}`` (vLLM's
field); ``tool_call`` -> ``{"role","tool_calls":[{"index","id","type":"function","function":
{"name","arguments":""}}]}``; ``tool_arguments`` -> ``{"role","tool_calls":[{"index","function":
{"arguments": fragment}}]}`` (OpenAI's shape). A response that made tool calls and ended with EOS
has ``finish_reason: "tool_calls"``.

Usage (OpenAI): ``prompt_tokens_details.cached_tokens`` when the backend reports cached tokens (a
prefix cache is on) and ``completion_tokens_details.reasoning_tokens`` when it reports reasoning.
"""

from __future__ import annotations

import json
from typing import Any

from harness.server.backends.base import (
    ANSWER,
    REASONING,
    TOOL_ARGUMENTS,
    TOOL_CALL,
    Backend,
    Script,
    StepOutput,
    ToolSpec,
)
from harness.server.infer_errors import ToolError
from harness.server.schemas import ChatRequest, CompletionRequest, Tool
from harness.server.sse_response import encode_str

#: TGI's ``default_tool_prompt()``
DEFAULT_TOOL_PROMPT = (
    "\nGiven the functions available, please respond with a JSON for a function call with its proper "
    "arguments that best answers the given prompt. Respond in the format {name: function name, "
    "parameters: dictionary of argument name and its value}.Do not use variables.\n")


def used_tools(req: ChatRequest, backend: Backend) -> list[Tool]:
    """The tools the model is asked to call (empty: answer with text); raises :class:`ToolError`."""
    if not req.tools:
        return []
    if req.response_format is not None:
        raise ToolError("Grammar and tools are mutually exclusive")
    choice = req.tool_choice
    if choice == "none":
        return []
    if choice is None or choice in ("auto", "required"):
        tools = list(req.tools)
    else:
        name = choice if isinstance(choice, str) else choice.function.name
        tools = [t for t in req.tools if t.function.name == name][:1]
        if not tools:
            raise ToolError(f"Tool with name {name} not found")
    if not backend.supports_tools:
        raise ToolError("tools are not supported by this server")
    return tools


def chat_script(req: ChatRequest, backend: Backend) -> Script | None:
    """The per-request :class:`Script` of a chat request (None: nothing to say to the backend)."""
    tools = used_tools(req, backend)
    sim = req.simulate
    thinking = (req.chat_template_kwargs or {}).get("enable_thinking")
    if not tools and sim is None and thinking is not False:
        return None
    script = Script(tools=[ToolSpec(t.function.name, t.function.parameters or t.function.arguments or {})
                           for t in tools])
    if thinking is False:
        script.reasoning_tokens = 0
    if sim is not None:
        for key in ("reasoning_tokens", "output_tokens", "tool_calls", "tool_call_fragments"):
            if getattr(sim, key) is not None:
                setattr(script, key, getattr(sim, key))
    return script


def completion_script(req: CompletionRequest) -> Script | None:
    """``/v1/completions``: only the ``simulate`` overrides (no tools there)."""
    sim = req.simulate
    if sim is None:
        return None
    return Script(reasoning_tokens=sim.reasoning_tokens, output_tokens=sim.output_tokens)


def with_tool_prompt(messages: list[dict[str, Any]], req: ChatRequest, backend: Backend) -> list[dict[str, Any]]:
    """``messages`` with the tools text appended to the last message's content when tools are used."""
    tools = used_tools(req, backend)
    if not tools or not messages:
        return messages
    tools_json = json.dumps([t.model_dump(exclude_none=True) for t in tools], separators=(",", ":"),
                            ensure_ascii=False)
    prompt = req.tool_prompt or DEFAULT_TOOL_PROMPT
    last = dict(messages[-1])
    last["content"] = f"{last.get('content') or ''}\n---\n{tools_json}\n{prompt}"
    return [*messages[:-1], last]


class ChatDeltas:
    """Per-stream state: the ``delta`` JSON and ``finish_reason`` of each chat chunk."""

    __slots__ = ("tool_calls",)

    def __init__(self) -> None:
        self.tool_calls = False  #: a tool call was streamed (EOS then finishes with "tool_calls")

    def delta(self, out: StepOutput) -> str:
        """The chunk's ``delta`` object as JSON text."""
        kind = out.kind
        if kind == ANSWER:
            text = "" if out.token.special else out.token.text
            return f'{{"role":"assistant","content":{encode_str(text)}}}'
        if kind == REASONING:
            return f'{{"role":"assistant","reasoning_content":{encode_str(out.token.text)}}}'
        if kind == TOOL_CALL:
            self.tool_calls = True
            return (f'{{"role":"assistant","tool_calls":[{{"index":{out.tool_index},'
                    f'"id":{encode_str(out.tool_call_id or "")},"type":"function","function":'
                    f'{{"name":{encode_str(out.token.text)},"arguments":""}}}}]}}')
        return (f'{{"role":"assistant","tool_calls":[{{"index":{out.tool_index},"function":'
                f'{{"arguments":{encode_str(out.token.text)}}}}}]}}')

    def finish(self, reason: str | None) -> str | None:
        """OpenAI chat finish_reason: EOS -> ``stop`` (``tool_calls`` after tool calls), else as is."""
        if reason == "eos_token":
            return "tool_calls" if self.tool_calls else "stop"
        return reason


def chat_message(outputs: list[StepOutput]) -> tuple[dict[str, Any], str | None]:
    """The non-stream ``message`` and ``finish_reason`` of a whole generation."""
    last = outputs[-1]
    deltas = ChatDeltas()
    if all(o.kind == ANSWER for o in outputs):
        return {"role": "assistant", "content": last.generated_text or ""}, deltas.finish(last.finish_reason)
    answer, reasoning = [], []
    calls: list[dict[str, Any]] = []
    for o in outputs:
        if o.kind == REASONING:
            reasoning.append(o.token.text)
        elif o.kind == TOOL_CALL:
            deltas.tool_calls = True
            calls.append({"id": o.tool_call_id or "", "type": "function",
                          "function": {"name": o.token.text, "arguments": ""}})
        elif o.kind == TOOL_ARGUMENTS and calls:
            calls[-1]["function"]["arguments"] += o.token.text
        elif not o.token.special:
            answer.append(o.token.text)
    message: dict[str, Any] = {"role": "assistant", "content": None if calls else "".join(answer)}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    return message, deltas.finish(last.finish_reason)


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None,
          reasoning_tokens: int | None = None) -> dict[str, Any]:
    """OpenAI ``usage``; the details objects only when the backend reported them."""
    u: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}
    if cached_tokens is not None:
        u["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    if reasoning_tokens is not None:
        u["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return u
