"""`--model simulated`: scripted reasoning deltas, OpenAI tool calls (validation, stream and
non-stream shapes, counts) and per-request overrides, over HTTP."""

from __future__ import annotations

import json

import httpx
import pytest
from server_sse_util import sse_events, start_server

R, N, F = 3, 5, 4  # reasoning tokens, answer tokens incl. EOS, argument fragments per call
SIM = ["--model", "simulated", "--sim-ttft-ms", "2", "--sim-itl-ms", "1", "--sim-reasoning-tokens", str(R),
       "--sim-output-tokens", str(N), "--sim-tool-call-fragments", str(F)]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                             "parameters": {"type": "object", "properties": {
                                                 "city": {"type": "string"}, "days": {"type": "integer"},
                                                 "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                                                 "hourly": {"type": "boolean"}},
                                                 "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {
    "zone": {"type": ["string", "null"]}, "offset": {"type": "number"}}}}}
MESSAGES = [{"role": "system", "content": "You answer in short words."}, {"role": "user", "content": "Weather?"}]
TOOL_PROMPT = ("\nGiven the functions available, please respond with a JSON for a function call with its proper "
               "arguments that best answers the given prompt. Respond in the format {name: function name, "
               "parameters: dictionary of argument name and its value}.Do not use variables.\n")


def sim_prompt_tokens(messages: list[dict]) -> int:
    """The simulated backend's count for a chat: its ChatML-like template, one token per
    whitespace-separated piece plus the trailing newline."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return len((text + "<|im_start|>assistant\n").split()) + 1


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    s = start_server(SIM, tmp_path_factory.mktemp("sim"))
    yield s
    assert s.stop() == 0


def chat(sim, **body) -> tuple[list[dict], dict]:
    """Stream a chat request; returns (token chunks' choices[0], usage)."""
    resp, events = sse_events(sim.url + "/v1/chat/completions", {
        "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}, **body})
    assert resp.status_code == 200 and events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert "error" not in events[-2], events[-2]
    return [c["choices"][0] for c in chunks], events[-2]["usage"]


def test_reasoning_deltas_come_before_the_answer(sim) -> None:
    choices, usage = chat(sim)
    deltas = [c["delta"] for c in choices]
    assert len(deltas) == R + N
    assert all(set(d) == {"role", "reasoning_content"} and d["reasoning_content"] for d in deltas[:R])
    assert all(set(d) == {"role", "content"} for d in deltas[R:])
    assert all(d["content"] for d in deltas[R:-1]) and deltas[-1]["content"] == ""  # EOS
    assert [c["finish_reason"] for c in choices] == [None] * (R + N - 1) + ["stop"]
    assert usage["completion_tokens"] == R + N and usage["completion_tokens_details"] == {"reasoning_tokens": R}
    assert "prompt_tokens_details" not in usage  # the emulated prefix cache is off

    # non-stream: the same script, split into reasoning_content and content
    r = httpx.post(sim.url + "/v1/chat/completions", json={"messages": MESSAGES}, timeout=30)
    msg = r.json()["choices"][0]["message"]
    assert len(msg["reasoning_content"].split()) == R and len(msg["content"].split()) == N - 1
    assert r.json()["usage"]["completion_tokens_details"] == {"reasoning_tokens": R}

    # native TGI route: no reasoning channel, every token is an ordinary token
    resp, events = sse_events(sim.url + "/generate_stream", {"inputs": "hi", "parameters": {"details": True}})
    assert len(events) == R + N and events[-1]["details"]["generated_tokens"] == R + N
    assert events[-1]["generated_text"] == "".join(e["token"]["text"] for e in events[:-1])


def test_reasoning_per_request_and_cut_by_max_tokens(sim) -> None:
    choices, usage = chat(sim, simulate={"reasoning_tokens": 6, "output_tokens": 2})
    assert ["reasoning_content" in c["delta"] for c in choices] == [True] * 6 + [False] * 2
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 6}
    choices, usage = chat(sim, chat_template_kwargs={"enable_thinking": False})
    assert not any("reasoning_content" in c["delta"] for c in choices) and len(choices) == N
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}
    choices, usage = chat(sim, max_tokens=2)  # cut inside the reasoning
    assert len(choices) == 2 and choices[-1]["finish_reason"] == "length"
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 2}


def test_tool_call_stream_shape_and_counts(sim) -> None:
    choices, usage = chat(sim, tools=[WEATHER, TIME], simulate={"tool_calls": 2})
    deltas = [c["delta"] for c in choices]
    assert all("reasoning_content" in d for d in deltas[:R])
    calls: dict[int, dict] = {}
    for d in deltas[R:-1]:
        assert set(d) == {"role", "tool_calls"} and len(d["tool_calls"]) == 1
        tc = d["tool_calls"][0]
        if "id" in tc:  # the head of a call: id, type, name, empty arguments
            assert tc["type"] == "function" and tc["function"]["arguments"] == "" and tc["index"] not in calls
            calls[tc["index"]] = {"id": tc["id"], "name": tc["function"]["name"], "fragments": []}
        else:
            assert set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"}
            assert tc["function"]["arguments"]
            calls[tc["index"]]["fragments"].append(tc["function"]["arguments"])
    assert [c["name"] for c in calls.values()] == ["get_weather", "get_time"]
    assert len({c["id"] for c in calls.values()}) == 2 and all(c["id"].startswith("call_") for c in calls.values())
    assert [len(c["fragments"]) for c in calls.values()] == [F, F]
    weather = json.loads("".join(calls[0]["fragments"]))
    assert list(weather) == ["city", "days", "unit", "hourly"] and weather["unit"] == "celsius"
    assert isinstance(weather["city"], str) and isinstance(weather["days"], int)
    assert isinstance(weather["hourly"], bool)
    clock = json.loads("".join(calls[1]["fragments"]))
    assert isinstance(clock["zone"], str) and isinstance(clock["offset"], float)
    assert deltas[-1] == {"role": "assistant", "content": ""} and choices[-1]["finish_reason"] == "tool_calls"
    assert usage["completion_tokens"] == R + 2 * (1 + F) + 1


def test_tool_call_non_stream_choice_and_prompt(sim) -> None:
    body = {"messages": MESSAGES, "tools": [WEATHER, TIME], "tool_choice":
            {"type": "function", "function": {"name": "get_time"}}, "simulate": {"tool_call_fragments": 20}}
    r = httpx.post(sim.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_time"
    assert set(json.loads(call["function"]["arguments"])) == {"zone", "offset"}
    assert r.json()["usage"]["completion_tokens"] == R + 1 + 20 + 1
    # the used tools and TGI's default tool prompt are appended to the last message (input tokens)
    plain = httpx.post(sim.url + "/v1/chat/completions", json={"messages": MESSAGES}, timeout=30).json()
    assert plain["usage"]["prompt_tokens"] == sim_prompt_tokens(MESSAGES)
    tools_json = json.dumps([TIME], separators=(",", ":"))
    with_tools = [*MESSAGES[:-1], {"role": "user", "content": f"Weather?\n---\n{tools_json}\n{TOOL_PROMPT}"}]
    assert r.json()["usage"]["prompt_tokens"] == sim_prompt_tokens(with_tools) > plain["usage"]["prompt_tokens"]
    # tool_choice none: a text answer, no tool text in the prompt
    r = httpx.post(sim.url + "/v1/chat/completions", json=body | {"tool_choice": "none"}, timeout=30)
    assert r.json()["choices"][0]["message"]["content"] and "tool_calls" not in r.json()["choices"][0]["message"]
    assert r.json()["choices"][0]["finish_reason"] == "stop"
    assert r.json()["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]


@pytest.mark.parametrize(("body", "error_type", "text"), [
    ({"tool_choice": "get_date"}, "tool_error", "Tool error: Tool with name get_date not found"),
    ({"response_format": {"type": "json", "value": {}}}, "tool_error",
     "Tool error: Grammar and tools are mutually exclusive"),
    ({"tools": []}, "validation", "tools"),
    ({"tools": [{"type": "function"}]}, "validation", "tools.0.function"),
    ({"tools": [{"type": "code", "function": {"name": "x"}}]}, "validation", "tools.0.type"),
    ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "validation", "tools.0.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}, "validation",
     "tools.0.function.parameters"),
])
def test_tools_validation(sim, body, error_type, text) -> None:
    r = httpx.post(sim.url + "/v1/chat/completions", json={"messages": MESSAGES, "tools": [WEATHER]} | body,
                   timeout=30)
    assert r.status_code == 422 and r.json()["error_type"] == error_type and text in r.json()["error"], r.text
