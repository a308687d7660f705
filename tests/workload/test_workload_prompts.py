"""Workloads: distributions, synthetic prompts (approximation and tokenizer), files, sessions."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from harness.workload import (
    TOKENS_PER_WORD,
    Distribution,
    Prompt,
    Session,
    SyntheticPrompts,
    approx_tokens,
    count_tokens,
    load_conversations,
    load_prompt_file,
    sample_path,
)


def byte_tokenizer(text: str) -> list[int]:
    """A real (if simple) tokenizer: one id per UTF-8 byte."""
    return list(text.encode())


class EncodeTokenizer:
    """transformers-style object: encode(text, add_special_tokens=...) -> ids."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [len(w) for w in text.split()]
        return ([0] if add_special_tokens else []) + ids


@pytest.mark.parametrize(("spec", "text"), [
    ("fixed:128", "fixed:128"), ("128", "fixed:128"), ("uniform:64,256", "uniform:64,256"),
    ("normal:mean=200,sd=50", "normal:mean=200,sd=50"), ("lognormal:mean=200,sd=80", "lognormal:mean=200,sd=80"),
    ("normal:mean=20,sd=50,min=5,max=40", "normal:mean=20,sd=50,min=5,max=40"),
])
def test_distribution_parse_roundtrip(spec, text):
    assert str(Distribution.parse(spec)) == text


@pytest.mark.parametrize("spec", ["", "fixed:", "fixed:0", "uniform:5", "uniform:9,3", "normal:mean=1",
                                  "lognormal:sd=3", "normal:mean=10,sd=1,foo=2", "zipf:2", "normal:mean=-1,sd=1"])
def test_distribution_parse_errors(spec):
    with pytest.raises(ValueError, match="distribution"):
        Distribution.parse(spec)


def test_distribution_samples_match_their_parameters():
    rng = random.Random(0)
    assert {Distribution.parse("fixed:7").sample(rng) for _ in range(10)} == {7}
    u = [Distribution.parse("uniform:3,5").sample(rng) for _ in range(500)]
    assert set(u) == {3, 4, 5}
    n = [Distribution.parse("normal:mean=200,sd=50").sample(rng) for _ in range(4000)]
    assert statistics.mean(n) == pytest.approx(200, abs=5) and statistics.stdev(n) == pytest.approx(50, abs=4)
    ln = [Distribution.parse("lognormal:mean=200,sd=80").sample(rng) for _ in range(4000)]
    assert statistics.mean(ln) == pytest.approx(200, abs=6) and statistics.stdev(ln) == pytest.approx(80, abs=8)
    assert min(ln) >= 1
    b = [Distribution.parse("normal:mean=20,sd=50,min=5,max=40").sample(rng) for _ in range(500)]
    assert min(b) == 5 and max(b) == 40


def test_approximation_is_documented_ratio():
    assert TOKENS_PER_WORD == 1.3
    assert approx_tokens("one two three four five six seven eight nine ten") == 13
    assert approx_tokens("") == 0 and approx_tokens("x") == 1


def test_synthetic_prompts_are_seeded_and_reproducible():
    a = SyntheticPrompts("uniform:20,200", "normal:mean=50,sd=10", seed=42)
    b = SyntheticPrompts("uniform:20,200", "normal:mean=50,sd=10", seed=42)
    pa = [a.next() for _ in range(20)]
    assert pa == [b.next() for _ in range(20)]
    assert pa != [SyntheticPrompts("uniform:20,200", "normal:mean=50,sd=10", seed=43).next() for _ in range(20)]
    assert len({p.text for p in pa}) == 20


def test_synthetic_input_length_follows_the_approximation():
    sp = SyntheticPrompts("fixed:130", "fixed:16", seed=1)
    for _ in range(5):
        p = sp.next()
        words = len(p.text.split())
        assert words == 100  # 130 tokens / 1.3 tokens per word
        assert p.input_tokens == approx_tokens(p.text) == 130 and p.max_new_tokens == 16


@pytest.mark.parametrize("tok", [byte_tokenizer, EncodeTokenizer()])
def test_synthetic_input_length_with_tokenizer(tok):
    sp = SyntheticPrompts("uniform:50,300", "fixed:8", seed=3, tokenizer=tok, chat=True)
    for _ in range(10):
        p = sp.next()
        assert p.input_tokens == count_tokens(p.text, tok)
        assert p.messages == [{"role": "user", "content": p.text}]
    # the byte tokenizer lets the bisection land within one word of the target
    sp = SyntheticPrompts("fixed:200", "fixed:8", seed=3, tokenizer=byte_tokenizer)
    n = sp.next().input_tokens
    assert 200 - 12 <= n <= 200


def test_bundled_sample_files_load():
    ps = load_prompt_file(sample_path())
    assert len(ps) == 50 and all(p.text and p.max_new_tokens for p in ps)
    assert any(not p.text.isascii() for p in ps)
    sg = load_prompt_file(sample_path("sharegpt_sample.json"))
    assert len(sg) == 5  # the conversation without a human turn is skipped
    assert sg[1].messages[0] == {"role": "system", "content": "You are a concise assistant."}
    assert sg[0].text.startswith("I want to start running") and sg[0].max_new_tokens > 1
    convs = load_conversations(sample_path("sharegpt_sample.json"))
    assert len(convs) == 5 and len(convs[3]) == 6


def test_jsonl_and_sharegpt_jsonl(tmp_path):
    f = tmp_path / "p.jsonl"
    lines = [{"prompt": "a b c", "max_new_tokens": 5}, {"prompt": "d"},
             {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "w " * 10}]},
             {"messages": [{"role": "user", "content": "yo"}], "max_tokens": 3}]
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    ps = load_prompt_file(f)
    assert [p.max_new_tokens for p in ps] == [5, None, 13, 3]
    assert ps[2].messages == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("content", "message"), [
    ('{"prompt": "ok"}\n{"prompt": ', "line 2: invalid JSON"),
    ('{"prompt": "ok"}\n{"nope": 1}\n', "line 2: needs a non-empty string 'prompt'"),
    ('{"prompt": "ok", "max_new_tokens": 0}\n', "line 1: max_new_tokens must be a positive integer"),
    ('[1]', "item 1: expected a JSON object"),
    ('[{"conversations": [{"from": "alien", "value": "x"}]}]', "item 1: turn 1 needs"),
    ('', "no prompts found"),
])
def test_prompt_file_errors_name_path_and_line(tmp_path, content, message):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(ValueError) as ei:
        load_prompt_file(f)
    assert str(ei.value).startswith(str(f)) and message in str(ei.value)


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_prompt_file(tmp_path / "nope.jsonl")


def test_prompt_conversions():
    assert Prompt(text="x").as_messages() == [{"role": "user", "content": "x"}]
    p = Prompt(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "u"}]}])
    assert p.as_text() == "s\n\nu"
    with pytest.raises(ValueError):
        Prompt()


def test_session_grows_turn_by_turn_with_think_time():
    s = Session(["q1", "q2", "q3"], system="sys", max_new_tokens=8, think_time_s=1.5)
    p1 = s.next_prompt()
    assert [m["role"] for m in p1.messages] == ["system", "user"] and p1.max_new_tokens == 8
    s.add_reply("a1")
    p2 = s.next_prompt()
    assert [m["content"] for m in p2.messages] == ["sys", "q1", "a1", "q2"]
    assert p2.input_tokens > p1.input_tokens
    assert s.think_time() == 1.5
    p3 = s.next_prompt()  # no reply to q2 (failed request): the next user turn follows
    assert [m["content"] for m in p3.messages][-2:] == ["q2", "q3"]
    assert s.done and s.next_prompt() is None
    with pytest.raises(ValueError):
        Session([])


def test_session_exponential_think_time_is_seeded_and_from_conversation():
    conv = load_conversations(sample_path("sharegpt_sample.json"))[1]
    a = Session.from_conversation(conv, think_time_s=2.0, think_time_kind="exponential", seed=5)
    b = Session.from_conversation(conv, think_time_s=2.0, think_time_kind="exponential", seed=5)
    ta = [a.think_time() for _ in range(200)]
    assert ta == [b.think_time() for _ in range(200)] and statistics.mean(ta) == pytest.approx(2.0, rel=0.25)
    assert a.turns == ["What is a linked list?", "When is it better than an array?"]
    assert a.next_prompt().messages[0]["role"] == "system"
