"""Continuous batching on the tiny fp32 model: parity, join/leave/cancel, limits."""

from __future__ import annotations

from engine_driver import Driver, alone, generate_greedy

from harness.server.backends.base import GenerationError, SamplingParams
from harness.server.engine.policy import Policy

PROMPTS = ["Hello", "The quick brown fox", "a", "Grüße aus Köln 🎉", "x" * 40,
           "Once upon a time, in a land far away", "12345", "<|im_start|>user\nhi<|im_end|>\n"]


def test_parity_staggered_batch_equals_alone_and_generate(tiny):
    d = Driver(tiny, Policy(max_batch_size=5, waiting_served_ratio=1.2, max_waiting_tokens=3))
    params = SamplingParams(max_new_tokens=24)
    ids = [tiny.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    arrivals = [0, 0, 2, 3, 5, 8, 9, 13]
    keys: dict[int, int] = {}
    sizes = set()
    for step in range(400):
        for i, at in enumerate(arrivals):
            if at == step:
                keys[i] = d.submit(ids[i], params)
        d.step()
        if d.engine.batch is not None:
            sizes.add(len(d.engine.batch))
        if len(keys) == len(arrivals) and all(d.done(k) for k in keys.values()):
            break
    assert max(sizes) == 5  # requests really shared the batch (and some waited for room)
    for i, key in keys.items():
        got = d.tokens(key)
        assert got == [o.token.id for o in alone(tiny, ids[i], params)], PROMPTS[i]
        assert got == generate_greedy(tiny, ids[i], 24), PROMPTS[i]


def test_join_leave_and_cancel_mid_batch(tiny, driver):
    ids = [tiny.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS[:4]]
    a = driver.submit(ids[0], SamplingParams(max_new_tokens=30))
    driver.step(3)
    b = driver.submit(ids[1], SamplingParams(max_new_tokens=30))
    c = driver.submit(ids[2], SamplingParams(max_new_tokens=4))  # leaves early
    driver.step(2)
    assert len(driver.engine.batch) == 3
    driver.step(4)
    assert driver.done(c) and len(driver.engine.batch) == 2
    driver.streams[a].cancel()
    n_a = len(driver.outputs[a])
    driver.step()
    assert len(driver.engine.batch) == 1 and driver.engine.batch.rows[0].stream is driver.streams[b]
    d = driver.submit(ids[3], SamplingParams(max_new_tokens=10))
    driver.run_until_done()
    assert len(driver.outputs[a]) == n_a  # nothing after the cancel
    for key, i, n in ((b, 1, 30), (c, 2, 4), (d, 3, 10)):
        assert driver.tokens(key) == [o.token.id for o in alone(tiny, ids[i], SamplingParams(max_new_tokens=n))]
    assert driver.engine.batch is None


def test_cancelled_row_is_gone_at_next_step(tiny, driver):
    keys = [driver.submit(tiny.tokenizer(p)["input_ids"], SamplingParams(max_new_tokens=100)) for p in PROMPTS[:3]]
    driver.step(3)
    assert len(driver.engine.batch) == 3
    steps = driver.engine.steps
    driver.streams[keys[1]].cancel()
    driver.step()
    assert driver.engine.steps == steps + 1  # exactly one forward pass later ...
    assert [r.stream for r in driver.engine.batch.rows] == [driver.streams[keys[0]], driver.streams[keys[2]]]
    assert driver.engine.stats().batch_size == 2
    # a request cancelled while still queued never runs
    q = driver.submit([5, 6, 7], SamplingParams(max_new_tokens=5))
    driver.streams[q].cancel()
    driver.step()
    assert driver.outputs[q] == [] and driver.engine.stats().queue_size == 0


def test_max_new_tokens_and_eos(tiny):
    ids = tiny.tokenizer("Hello", add_special_tokens=False)["input_ids"]
    ref = alone(tiny, ids, SamplingParams(max_new_tokens=12))
    assert len(ref) == 12 and ref[-1].finish_reason == "length" and ref[-1].generated_tokens == 12
    # pretend the 6th generated token is EOS: generation ends there, flagged special
    eos = ref[5].token.id
    first = next(i for i, o in enumerate(ref) if o.token.id == eos)
    d = Driver(tiny, Policy(), eos_ids=frozenset({eos}))
    k = d.submit(ids, SamplingParams(max_new_tokens=12))
    d.run_until_done()
    out = d.outputs[k]
    assert len(out) == first + 1 and out[-1].finish_reason == "eos_token" and out[-1].token.special
    assert out[-1].token.text == tiny.tokenizer.decode([eos])
    assert out[-1].generated_text == "".join(o.token.text for o in out if not o.token.special)
    # length is checked before EOS (TGI): max_new_tokens ending on the EOS token reports length
    d2 = Driver(tiny, Policy(), eos_ids=frozenset({eos}))
    k2 = d2.submit(ids, SamplingParams(max_new_tokens=first + 1))
    d2.run_until_done()
    assert d2.outputs[k2][-1].finish_reason == "length"


def test_policy_prefill_budget_and_waiting_served_ratio(tiny):
    d = Driver(tiny, Policy(max_batch_size=8, max_batch_prefill_tokens=64, waiting_served_ratio=1.2,
                            max_waiting_tokens=5))
    for _ in range(3):
        d.submit(list(range(3, 23)), SamplingParams(max_new_tokens=50))  # 20 tokens each
    d.step()
    assert len(d.engine.batch) == 3  # 3 * 20 <= 64
    d.submit(list(range(3, 23)), SamplingParams(max_new_tokens=50))
    d.step()  # 1 waiting < floor(3 * 1.2): it waits ...
    assert len(d.engine.batch) == 3 and d.engine.stats().queue_size == 1
    d.step(5)  # ... until max_waiting_tokens decode steps have passed
    assert len(d.engine.batch) == 4
    stats = d.engine.stats()
    assert stats.batch_size == 4 and stats.batch_max_tokens == 4 * 70


def test_failed_prefill_ends_only_that_request(tiny, driver):
    ok = driver.submit([5, 6, 7], SamplingParams(max_new_tokens=6))
    driver.step(2)
    bad = driver.submit([5, 10_000], SamplingParams(max_new_tokens=6))  # id outside the vocabulary
    driver.step()
    assert isinstance(driver.outputs[bad][-1], GenerationError)
    driver.run_until_done()
    assert driver.tokens(ok) == [o.token.id for o in alone(tiny, [5, 6, 7], SamplingParams(max_new_tokens=6))]
