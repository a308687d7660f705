"""Traffic shapes (issue 15): shared and per-user prefixes, prefix share, cache busting, tools, reasoning;
seeded and reproducible; sessions carry the prefix, the body and the turn (the Locust options:
tests/locust/test_sessions_traffic.py)."""

from __future__ import annotations

import pytest

from harness.workload import Prompt, Session, SyntheticPrompts
from harness.workload.tokens import approx_tokens
from harness.workload.traffic import TOOLS, TrafficSpec, shape


def _source(seed: int = 1):
    return SyntheticPrompts("fixed:40", "fixed:8", seed=seed).next


def _system(p: Prompt) -> str | None:
    return next((m["content"] for m in p.as_messages() if m["role"] == "system"), None)


def test_shared_prefixes_by_group_reproducible_per_seed():
    spec = TrafficSpec(prefix_tokens=200, prefixes=2)
    users = [shape(_source(u), spec, seed=7, user=u) for u in range(4)]
    firsts = [u() for u in users]
    # users 0 and 2 share group 0's prefix, 1 and 3 group 1's; the groups differ
    assert _system(firsts[0]) == _system(firsts[2]) != _system(firsts[1]) == _system(firsts[3])
    assert abs(approx_tokens(_system(firsts[0])) - 200) <= 8
    # every request of a user carries it, and the same seed gives the same prompts
    again = shape(_source(0), spec, seed=7, user=0)
    assert [again().text for _ in range(3)] == [firsts[0].text] + [users[0]().text for _ in range(2)]
    assert _system(shape(_source(0), spec, seed=8, user=0)()) != _system(firsts[0])
    # input tokens count the prefix too; the request body is untouched
    assert firsts[0].input_tokens == approx_tokens(firsts[0].text) and firsts[0].body is None
    assert firsts[0].text.startswith(_system(firsts[0]))


def test_per_user_prefixes_and_the_prefix_share():
    per_user = TrafficSpec(prefix_tokens=64, prefixes=0)
    prefixes = {_system(shape(_source(), per_user, seed=1, user=u)()) for u in range(5)}
    assert len(prefixes) == 5
    half = shape(_source(), TrafficSpec(prefix_tokens=64, prefix_share=0.5), seed=1, user=0)
    systems = [_system(half()) for _ in range(400)]
    warm = systems.count(_system(shape(_source(), TrafficSpec(prefix_tokens=64), seed=1, user=0)()))
    assert 140 <= warm <= 260  # binomial(400, 0.5): 6 standard deviations either side
    assert len(set(systems)) == 400 - warm + 1  # every other request has a prefix of its own
    assert {abs(approx_tokens(s) - 64) <= 4 for s in systems} == {True}


def test_cache_bust_salts_every_prompt_first():
    spec = TrafficSpec(prefix_tokens=32, cache_bust=True)
    a = shape(_source(), spec, seed=1, user=0, nonce="n1")
    b = shape(_source(), spec, seed=1, user=1, nonce="n1")
    texts = [a().text for _ in range(3)] + [b().text for _ in range(3)]
    heads = [t.split()[0] for t in texts]
    assert len(set(heads)) == 6 and all(h.startswith("[n1-") for h in heads)
    # apart from the salt, the same seed gives the same prompts
    again = shape(_source(), spec, seed=1, user=0, nonce="n2")
    assert again().text.split(None, 1)[1] == texts[0].split(None, 1)[1]


def test_tool_and_reasoning_prompts():
    p = shape(_source(), TrafficSpec(tools=2, reasoning=True, reasoning_effort="low"), seed=1)()
    assert p.body == {"tools": list(TOOLS[:2]), "tool_choice": "auto", "reasoning_effort": "low"}
    user = p.as_messages()[-1]["content"]
    assert user.startswith("Reason step by step") and ("weather" in user or "time is it" in user)
    from harness.client.openai import OpenAIClient

    body = OpenAIClient("http://127.0.0.1:1").build_body(p)
    assert body["tools"][0]["function"]["name"] == "get_weather" and body["stream"] is True
    with pytest.raises(ValueError, match="at most"):
        TrafficSpec(tools=len(TOOLS) + 1)
    with pytest.raises(ValueError, match="within"):
        TrafficSpec(prefix_share=1.5)


def test_sessions_keep_prefix_and_body_and_number_their_turns():
    src = shape(_source(), TrafficSpec(prefix_tokens=50, tools=1), seed=2, user=0)
    first, second = src(), src()
    s = Session.from_prompts([first, second])
    p1 = s.next_prompt()
    s.add_reply("sunny")
    p2 = s.next_prompt()
    assert (p1.turn, p2.turn) == (1, 2) and p1.body == p2.body == first.body
    assert [m["role"] for m in p2.messages] == ["system", "user", "assistant", "user"]
    assert p2.messages[0]["content"] == _system(first) and p2.messages[1]["content"] == first.as_messages()[-1]["content"]
    assert p2.input_tokens > p1.input_tokens  # the conversation grows
    # a session of plain prompts is the old one
    plain = Session.from_prompts([Prompt(text="a b"), Prompt(text="c")]).next_prompt()
    assert plain.messages == [{"role": "user", "content": "a b"}] and plain.turn == 1
