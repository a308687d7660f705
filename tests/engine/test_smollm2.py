"""The embedded SmolLM2: one-time conversion into a fresh cache, then fp32 batched parity."""

from __future__ import annotations

import os
import time

import pytest
from engine_driver import Driver, generate_greedy

from harness.server.backends.base import SamplingParams
from harness.server.engine.policy import Policy
from harness.server.models import load_model, smollm2


@pytest.fixture(scope="session")
def smol(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xdg-cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        directory = smollm2.ensure_converted()
        assert directory.parent == cache / "stream-harness" / "models"
        assert [p.name for p in directory.parent.iterdir()] == [directory.name]  # no temp leftovers
        t0 = time.monotonic()
        assert smollm2.ensure_converted() == directory  # cached: no second conversion
        assert time.monotonic() - t0 < 1.0
        yield load_model("smollm2", dtype="float32", device="cpu")
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


QUESTIONS = ["What is Deep Learning?", "Name a colour.", "Write a haiku about rain.", "What is 2+2?",
             "Say hello in French.", "Why is the sky blue?", "List three fruits.", "Où est Paris ?"]


def test_smollm2_staggered_batch_equals_generate(smol):
    tok = smol.tokenizer
    ids = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                   return_dict=False) for q in QUESTIONS]
    n = 10
    d = Driver(smol, Policy(max_batch_size=6, waiting_served_ratio=0.0))
    arrivals = [0, 0, 1, 2, 4, 5, 7, 9]
    keys: dict[int, int] = {}
    for step in range(200):
        for i, at in enumerate(arrivals):
            if at == step:
                keys[i] = d.submit(ids[i], SamplingParams(max_new_tokens=n))
        d.step()
        if len(keys) == len(arrivals) and all(d.done(k) for k in keys.values()):
            break
    for i, key in keys.items():
        assert d.tokens(key) == generate_greedy(smol, ids[i], n), QUESTIONS[i]
    text = d.outputs[keys[0]][-1].generated_text
    assert "learning" in text.lower()
