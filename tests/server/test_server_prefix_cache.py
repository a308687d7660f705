"""Prefix caching over HTTP: the simulated backend's emulated LRU (exact cached_tokens and counters)
and the real engine on the tiny model (cached_tokens under concurrency, same greedy outputs as a
server without the cache, /metrics counters, 422 for tools)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
from server_sse_util import metric_value, sse_events

from harness.server.engine.prefix_cache import BLOCK
from harness.server.models.tiny import byte_tokenizer

B = 4  # emulated block size (words)
SIM = ["--model", "simulated", "--sim-ttft-ms", "1", "--sim-itl-ms", "1", "--sim-output-tokens", "3",
       "--sim-prefix-cache-blocks", "6", "--sim-prefix-block-tokens", str(B)]


def words(n: int, word: str = "w") -> str:
    """``n`` simulated tokens: ``w0 w1 ...``."""
    return " ".join(f"{word}{i}" for i in range(n))


def completion_usage(url: str, prompt: str) -> dict:
    r = httpx.post(url + "/v1/completions", json={"prompt": prompt, "max_tokens": 2}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["usage"]


def test_emulated_prefix_cache_lru_and_counters(serve) -> None:
    s = serve(SIM)
    shared = words(12)  # 3 blocks
    assert completion_usage(s.url, shared)["prompt_tokens_details"] == {"cached_tokens": 0}
    # the same prompt: 2 blocks (a prompt's last token is always computed)
    assert completion_usage(s.url, shared)["prompt_tokens_details"] == {"cached_tokens": 2 * B}
    # a longer prompt on the shared start: its 3 blocks
    assert completion_usage(s.url, shared + " " + words(5, "q"))["prompt_tokens_details"]["cached_tokens"] == 3 * B
    # a different first word (a cache-busting salt) misses everything
    assert completion_usage(s.url, "salt " + shared)["prompt_tokens_details"]["cached_tokens"] == 0
    # capacity 6 blocks: the salted prompt's 3 blocks + the 4-block one's ... evicted the LRU ones
    text = httpx.get(s.url + "/metrics").text
    assert metric_value(text, "harness_prefix_cache_requests") == 4
    assert metric_value(text, "harness_prefix_cache_queries") == 12 + 12 + 17 + 13
    assert metric_value(text, "harness_prefix_cache_hits") == 2 * B + 3 * B
    assert metric_value(text, "harness_prefix_cache_hit_requests") == 2
    assert metric_value(text, "harness_prefix_cache_tokens") == 6 * B
    assert metric_value(text, "harness_prefix_cache_evictions") == 1  # 3 + 1 + 3 blocks stored, 6 kept
    # chat usage carries the same details; the native TGI route has no such field
    r = httpx.post(s.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": shared}]},
                   timeout=30)
    assert r.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    r = httpx.post(s.url + "/generate", json={"inputs": shared, "parameters": {"details": True}}, timeout=30)
    assert "cached" not in json.dumps(r.json())


def chat_body(question: str) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            "max_tokens": 6, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}


SYSTEM = "You are a careful assistant. Answer in one short sentence, in English, without lists. " * 2
#: first letters differ, so every pair of prompts shares exactly the system part
QUESTIONS = ["Why is the sky blue?", "Name a colour.", "Add 2 and 2.", "Say hi.", "Où est Paris ?"]


def stream_chat(url: str, question: str) -> tuple[str, dict]:
    resp, events = sse_events(url + "/v1/chat/completions", chat_body(question))
    assert resp.status_code == 200 and events[-1] == "[DONE]", events[-2:]
    text = "".join(e["choices"][0]["delta"]["content"] for e in events[:-2])
    return text, events[-2]["usage"]


def test_engine_prefix_cache_concurrent_and_same_outputs(serve) -> None:
    with ThreadPoolExecutor(2) as pool:  # both start at once
        cached, plain = pool.map(serve, [["--model", "tiny"], ["--model", "tiny", "--no-prefix-cache"]])
    tok = byte_tokenizer()
    prompts = [tok.apply_chat_template(chat_body(q)["messages"], add_generation_prompt=True, tokenize=True,
                                       return_dict=False) for q in QUESTIONS]
    commons = {next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
               for a in prompts for b in prompts if a is not b}
    assert len(commons) == 1
    shared = commons.pop()
    text0, usage0 = stream_chat(cached.url, QUESTIONS[0])  # cold: stores the system prompt's blocks
    assert usage0["prompt_tokens"] == len(prompts[0]) and usage0["prompt_tokens_details"] == {"cached_tokens": 0}
    with ThreadPoolExecutor(4) as pool:  # warm, at once: they share the batch and the cached blocks
        warm = list(pool.map(lambda q: stream_chat(cached.url, q), QUESTIONS[1:]))
    for (_, usage), prompt in zip(warm, prompts[1:], strict=True):
        assert usage["prompt_tokens"] == len(prompt)
        assert usage["prompt_tokens_details"] == {"cached_tokens": shared // BLOCK * BLOCK} and shared >= BLOCK
    # the same greedy answers from a server without the cache (which reports no cached tokens)
    for question, (text, _) in zip(QUESTIONS, [(text0, usage0), *warm], strict=True):
        other, usage = stream_chat(plain.url, question)
        assert other == text and "prompt_tokens_details" not in usage
    m = httpx.get(cached.url + "/metrics").text
    assert metric_value(m, "harness_prefix_cache_requests") == len(QUESTIONS)
    assert metric_value(m, "harness_prefix_cache_queries") == sum(len(p) for p in prompts)
    assert metric_value(m, "harness_prefix_cache_hits") == (len(QUESTIONS) - 1) * (shared // BLOCK * BLOCK)
    assert 0 < metric_value(m, "harness_prefix_cache_bytes") <= metric_value(m, "harness_prefix_cache_capacity_bytes")
    assert metric_value(m, "harness_prefix_cache_capacity_bytes") == 512 * 2**20
    assert "harness_prefix_cache" not in httpx.get(plain.url + "/metrics").text
    # the real engine has no tool grammar: tools are refused (docs/server.md)
    r = httpx.post(cached.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "function", "function": {"name": "f"}}]}, timeout=30)
    assert (r.status_code, r.json()) == (422, {"error": "Tool error: tools are not supported by this server",
                                               "error_type": "tool_error"})
    r = httpx.post(cached.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                   "max_tokens": 2, "tools": [{"type": "function", "function": {"name": "f"}}],
                   "tool_choice": "none"}, timeout=30)  # no tool to call: a text answer
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
