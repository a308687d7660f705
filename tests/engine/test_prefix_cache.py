"""Prefix caching on the tiny fp32 model: outputs token-identical to no cache, cached_tokens exact,
joins of rows with different cached prefixes, multi-turn reuse of generated blocks, LRU eviction
within the memory bound."""

from __future__ import annotations

from engine_driver import Driver, alone

from harness.server.backends.base import SamplingParams
from harness.server.engine.policy import Policy
from harness.server.engine.prefix_cache import BLOCK, PrefixCache

SYSTEMS = ["You are a helpful assistant. Answer briefly and politely, in plain words. ",
           "Tu es un assistant serviable; réponds en français et cite tes sources. " * 2]
QUESTIONS = ["Hello there", "What is 2+2?", "Name a colour", "x" * 40, "Why?", "Grüße 🎉"]


def block_bytes(lm) -> int:
    cfg = lm.model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * BLOCK * head_dim * 4  # fp32


def common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def expected_cached(prompt: list[int], earlier: list[list[int]]) -> int:
    """Whole blocks shared with a sequence already in the cache, leaving >= 1 token to compute."""
    best = max((common(prompt, e) for e in earlier), default=0)
    return min(best, len(prompt) - 1) // BLOCK * BLOCK


def cached_driver(lm, capacity_bytes: int, **policy) -> Driver:
    d = Driver(lm, Policy(**({"max_batch_size": None, "waiting_served_ratio": 0.0} | policy)))
    d.engine.prefix_cache = PrefixCache(capacity_bytes)
    return d


def test_staggered_joins_identical_outputs_and_exact_cached_tokens(tiny):
    tok = tiny.tokenizer
    prompts = [tok(SYSTEMS[i % 2] + q, add_special_tokens=False)["input_ids"] for i, q in enumerate(QUESTIONS)]
    prompts.append(prompts[0][:20])  # a prompt inside another's first blocks
    params = SamplingParams(max_new_tokens=12)
    refs = [[o.token.id for o in alone(tiny, p, params)] for p in prompts]
    d = cached_driver(tiny, 1 << 26, max_batch_size=4)
    # step -> requests submitted before it; rows with and without a cached prefix join together,
    # into a batch that is running, and some wait for room (max_batch_size 4)
    arrivals = {0: [0], 2: [1, 2], 3: [3, 4, 6], 20: [5]}
    keys, prefilled, order, groups = {}, [], [], []
    for step in range(300):
        for i in arrivals.get(step, []):
            keys[i] = d.submit(prompts[i], params)
        queued = list(d.engine._queue)
        d.step()
        joined = [r for r in queued if r not in d.engine._queue]
        for req in joined:  # one prefill: rows see only what earlier prefills stored
            order.append((req, expected_cached(req.input_ids, prefilled)))
        prefilled += [r.input_ids for r in joined]
        if joined:
            groups.append(([r.cached_tokens for r in joined], len(d.engine.batch or []) - len(joined)))
        if len(keys) == len(prompts) and all(d.done(k) for k in keys.values()):
            break
    assert len(order) == len(prompts)
    # some prefill mixed rows with and without a cached prefix, and joined a running batch
    assert any(0 in cached and max(cached) > 0 and running > 0 for cached, running in groups), groups
    for req, want in order:
        assert req.cached_tokens == want
    for i, key in keys.items():
        assert d.tokens(key) == refs[i], QUESTIONS[i % len(QUESTIONS)] if i < len(QUESTIONS) else i
        assert d.outputs[key][-1].cached_tokens == next(w for r, w in order if r.stream is d.streams[key])
    st = d.engine.prefix_cache.stats
    assert st.hits == sum(w for _, w in order) > 0 and st.requests == len(prompts)
    assert st.queries == sum(len(p) for p in prompts)
    assert st.hit_requests == sum(1 for _, w in order if w) >= 3


def test_next_turn_reuses_the_generated_blocks(tiny):
    tok = tiny.tokenizer
    turn1 = tok(SYSTEMS[0] + "Tell me a story", add_special_tokens=False)["input_ids"]
    params = SamplingParams(max_new_tokens=40)
    d = cached_driver(tiny, 1 << 26)
    k1 = d.submit(turn1, params)
    d.run_until_done()
    answer = d.tokens(k1)
    turn2 = turn1 + answer + tok("\nAnd then?", add_special_tokens=False)["input_ids"]
    k2 = d.submit(turn2, params)
    d.run_until_done()
    in_cache = len(turn1) + len(answer) - 1  # the last generated token never entered the KV cache
    assert d.outputs[k2][-1].cached_tokens == in_cache // BLOCK * BLOCK > len(turn1) // BLOCK * BLOCK
    assert d.tokens(k2) == [o.token.id for o in alone(tiny, turn2, params)]


def test_lru_eviction_stays_within_the_memory_bound(tiny):
    one = block_bytes(tiny)
    d = cached_driver(tiny, 4 * one)
    pc = d.engine.prefix_cache
    params = SamplingParams(max_new_tokens=3)  # no generated block completes: prompts only
    a = list(range(10, 10 + 5 * BLOCK))  # 5 blocks: only 4 fit, the chain's start is kept
    c = list(range(150, 150 + 3 * BLOCK))

    def run(ids: list[int]) -> int:
        key = d.submit(ids, params)
        d.run_until_done()
        assert d.tokens(key) == [o.token.id for o in alone(tiny, ids, params)]
        assert pc.stats.bytes <= pc.stats.capacity_bytes and pc.stats.bytes == len(pc) * one
        return d.outputs[key][-1].cached_tokens

    assert run(a) == 0 and len(pc) == 4 and pc.stats.evicted == 0  # a's first 4 blocks: the start kept
    assert run(a) == 4 * BLOCK
    assert run(c) == 0 and pc.stats.evicted == 3  # c's 3 blocks evicted a's 3 deepest ...
    assert run(a) == BLOCK  # ... a's first block was left
    assert pc.stats.evicted == 6 and run(c) == 0  # a's blocks 1-3 came back and evicted c
    assert pc.stats.tokens == len(pc) * BLOCK == 4 * BLOCK
