"""Incremental detokenization (UTF-8) and stop sequences."""

from __future__ import annotations

from engine_driver import Driver, alone

from harness.server.backends.base import SamplingParams
from harness.server.engine.detokenize import IncrementalDetokenizer
from harness.server.engine.policy import Policy
from harness.server.engine.stops import StopMatcher


def test_detokenizer_holds_partial_characters(tiny):
    text = "aé🎉b"
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode())  # one token per byte
    det = IncrementalDetokenizer(tiny.tokenizer)
    pieces = [det.add(i) for i in ids]
    assert pieces == ["a", "", "é", "", "", "", "🎉", "b"]
    assert det.finish() == "" and det.text == text


def test_detokenizer_flushes_invalid_bytes_like_the_final_decode(tiny):
    lead = tiny.tokenizer("é", add_special_tokens=False)["input_ids"][0]  # 0xC3 alone: never completed
    x = tiny.tokenizer("x", add_special_tokens=False)["input_ids"][0]
    det = IncrementalDetokenizer(tiny.tokenizer)
    assert det.add(lead) == ""
    assert det.add(x) == "\ufffdx"
    assert det.add(lead) == ""
    assert det.finish() == "\ufffd"
    assert det.text == tiny.tokenizer.decode([lead, x, lead])


def test_non_ascii_prompts_stream_valid_text(tiny, driver):
    prompts = ["Grüße 🎉 日本語", "Ωμέγα — ✓", "naïve café", "😀😀😀"]
    keys = [driver.submit(tiny.tokenizer(p, add_special_tokens=False)["input_ids"],
                          SamplingParams(max_new_tokens=64)) for p in prompts]
    driver.run_until_done()
    saw_non_ascii = False
    for key in keys:
        out = driver.outputs[key]
        final = out[-1]
        texts = [o.token.text for o in out if not o.token.special]
        assert "".join(texts) == final.generated_text
        ids = [o.token.id for o in out if not o.token.special]
        if not out[-1].token.special:
            assert final.generated_text == tiny.tokenizer.decode(ids)
        for t in texts:
            t.encode("utf-8")  # no lone surrogates
            saw_non_ascii |= any(ord(c) > 127 and c != "\ufffd" for c in t)
        # a piece never ends inside a character: U+FFFD only where the final decode has it too
        assert final.generated_text.count("\ufffd") == tiny.tokenizer.decode(ids).count("\ufffd")
    assert saw_non_ascii


def test_stop_matcher_across_pieces():
    m = StopMatcher(["END", "", "xyz"])
    assert [m.feed(p) for p in ["ab", "E", "N", "Dq"]] == [None, None, None, "END"]
    m = StopMatcher(["xyz"])
    assert m.feed("axy") is None and m.feed("zz") == "xyz"
    assert not StopMatcher([])


def test_stop_sequence_across_token_boundaries(tiny):
    ids = tiny.tokenizer("Once upon a time", add_special_tokens=False)["input_ids"]
    ref = alone(tiny, ids, SamplingParams(max_new_tokens=60))
    text = ref[-1].generated_text
    # a 3-character stop (3+ byte tokens) from the middle of the reference text
    start = next(i for i in range(8, len(text) - 3) if "\ufffd" not in text[i:i + 3])
    stop = text[start:start + 3]
    first = text.index(stop)
    d = Driver(tiny, Policy())
    k = d.submit(ids, SamplingParams(max_new_tokens=60, stop=["never-appears", stop]))
    d.run_until_done()
    out = d.outputs[k]
    assert out[-1].finish_reason == "stop_sequence"
    gen = out[-1].generated_text
    assert gen.startswith(text[:first + 3]) and stop in gen and len(gen) <= first + 3 + 1
    assert [o.token.id for o in out] == [o.token.id for o in ref[:len(out)]]
    assert "".join(o.token.text for o in out if not o.token.special) == gen
