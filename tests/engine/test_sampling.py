"""Per-request sampling inside a batch: seeds, warpers, penalties, logprobs."""

from __future__ import annotations

import math

import torch
from engine_driver import Driver, alone

from harness.server.backends.base import SamplingParams
from harness.server.engine.policy import Policy
from harness.server.engine.sampling import RowSampler, choose


def sampled(seed: int, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=24, do_sample=True, seed=seed, **kw)


def test_same_seed_same_text_whatever_the_batch(tiny):
    ids = tiny.tokenizer("Hello there", add_special_tokens=False)["input_ids"]
    solo = alone(tiny, ids, sampled(7, temperature=0.9))
    d = Driver(tiny, Policy(waiting_served_ratio=0.0))
    noise = [d.submit(ids, sampled(s, temperature=1.3, top_p=0.9)) for s in (1, 2)]
    d.step(3)
    k = d.submit(ids, sampled(7, temperature=0.9))
    g = d.submit(ids, SamplingParams(max_new_tokens=24))
    d.run_until_done()
    assert d.tokens(k) == [o.token.id for o in solo]
    assert d.outputs[k][-1].seed == 7 and d.outputs[g][-1].seed is None
    texts = {tuple(d.tokens(n)) for n in noise} | {tuple(d.tokens(k))}
    assert len(texts) == 3  # different seeds -> different text (here, at least)


def test_top_k_one_is_greedy_and_warpers_run(tiny):
    ids = tiny.tokenizer("abc", add_special_tokens=False)["input_ids"]
    greedy = [o.token.id for o in alone(tiny, ids, SamplingParams(max_new_tokens=24))]
    assert [o.token.id for o in alone(tiny, ids, sampled(3, top_k=1))] == greedy
    d = Driver(tiny, Policy(waiting_served_ratio=0.0))
    variants = [sampled(4, top_p=0.5), sampled(5, typical_p=0.5), sampled(6, top_k=5, temperature=0.5),
                SamplingParams(max_new_tokens=24, repetition_penalty=1.5),
                SamplingParams(max_new_tokens=24, frequency_penalty=1.0)]
    keys = [d.submit(ids, p) for p in variants]
    d.run_until_done()
    for key in keys:
        assert len(d.tokens(key)) == 24
    # penalties discourage repeats: no more repeated tokens than greedy has
    rep = d.tokens(keys[3])
    assert len(set(rep)) >= len(set(greedy))


def test_repetition_penalty_formula():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    row = RowSampler(SamplingParams(repetition_penalty=2.0), [0, 1])
    c = choose(logits.clone(), [row])
    # scores become [1.0, -4.0, 1.0, 0.5]; argmax picks the first maximum
    expected = torch.log_softmax(torch.tensor([1.0, -4.0, 1.0, 0.5]), -1)
    assert c.ids == [0] and math.isclose(c.logprobs[0], float(expected[0]), rel_tol=1e-6)


def test_logprobs_match_the_sampler_logits(tiny, driver):
    ids = tiny.tokenizer("Hello", add_special_tokens=False)["input_ids"]
    g = driver.submit(ids, SamplingParams(max_new_tokens=8, top_n_tokens=5))
    s = driver.submit(ids, sampled(11, top_k=3, top_n_tokens=5))
    driver.run_until_done()
    with torch.inference_mode():
        first = torch.log_softmax(tiny.model(torch.tensor([ids], device=tiny.device)).logits[0, -1].float(), -1)
    out = driver.outputs[g]
    assert math.isclose(out[0].token.logprob, float(first.max()), abs_tol=1e-4)
    assert [t.id for t in out[0].top_tokens] == torch.topk(first, 5).indices.tolist()
    for o in out:  # greedy: the chosen token is the best of top_n
        assert o.token.id == o.top_tokens[0].id and math.isclose(o.token.logprob, o.top_tokens[0].logprob)
        assert [t.logprob for t in o.top_tokens] == sorted((t.logprob for t in o.top_tokens), reverse=True)
    for o in driver.outputs[s]:  # top_k=3 warped the rest away: top_n lists 3 tokens with mass 1
        assert len(o.top_tokens) == 3
        assert math.isclose(sum(math.exp(t.logprob) for t in o.top_tokens), 1.0, rel_tol=1e-5)
        assert o.token.id in [t.id for t in o.top_tokens]
        assert math.isclose(o.token.logprob, next(t.logprob for t in o.top_tokens if t.id == o.token.id))
