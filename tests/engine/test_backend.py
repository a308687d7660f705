"""The TransformersBackend in-process on an asyncio loop, with its scheduler thread."""

from __future__ import annotations

import asyncio

import pytest

from harness.server.backends.base import GenerationError, SamplingParams
from harness.server.backends.transformers import TransformersBackend


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_backend_streams_concurrent_requests_and_cancels():
    async def main():
        b = TransformersBackend("tiny", dtype="float32", device="cpu", max_batch_size=4)
        await b.start()
        assert b.healthy() and b.dtype == "float32" and b.device == "cpu"
        prompt = b.apply_chat_template([{"role": "user", "content": "Grüße 🎉"}])
        ids = b.tokenize(prompt)
        assert b.decode(ids) == prompt.replace("<|im_start|>", "").replace("<|im_end|>", "")

        async def collect(params):
            return [o async for o in b.submit(ids, params)]

        solo = await collect(SamplingParams(max_new_tokens=16))
        many = await asyncio.gather(*[collect(SamplingParams(max_new_tokens=16)) for _ in range(6)])
        for out in many:  # 6 requests through a batch of at most 4: same tokens as alone
            assert [o.token.id for o in out] == [o.token.id for o in solo]
        last = solo[-1]
        assert last.finish_reason == "length" and last.generated_tokens == 16
        assert last.queued_ns <= last.started_ns <= last.finished_ns
        assert "".join(o.token.text for o in solo) == last.generated_text

        long = b.submit(ids, SamplingParams(max_new_tokens=100_000))
        got = 0
        async for _ in long:
            got += 1
            if got == 3:
                long.cancel()
                break
        long.cancel()  # idempotent
        with pytest.raises(StopAsyncIteration):
            await long.__anext__()
        for _ in range(100):
            if b.stats().batch_size == 0:
                break
            await asyncio.sleep(0.01)
        assert b.stats().batch_size == 0 and b.stats().queue_size == 0

        sampled = SamplingParams(max_new_tokens=8, do_sample=True)
        out = await collect(sampled)
        assert out[-1].seed is not None  # a seed was picked and reported

        with pytest.raises(ValueError):
            b.apply_chat_template([{"role": "user"}])  # no content
        pending = b.submit(ids, SamplingParams(max_new_tokens=100_000))
        await pending.__anext__()
        await b.shutdown()
        with pytest.raises(GenerationError):
            async for _ in pending:
                pass
        assert not b.healthy()  # the engine thread has ended
        late = b.submit(ids, SamplingParams(max_new_tokens=2))  # after shutdown: an error, not a hang
        with pytest.raises(GenerationError):
            await late.__anext__()

    run(main())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"model": "/nonexistent/x.gguf"}, "GGUF file not found"),
    ({"model": "/nonexistent/dir"}, "directory not found"),
    ({"model": "no-such-org/no-such-model"}, "never downloaded"),
    ({"model": "tiny", "dtype": "int3"}, "unknown dtype"),
    ({"model": "tiny", "device": "npu"}, "device"),
])
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformersBackend(**kwargs)


def test_unloadable_model_fails_start(tmp_path):
    (tmp_path / "config.json").write_text("{not json")

    async def main():
        b = TransformersBackend(str(tmp_path))
        with pytest.raises(ValueError, match="cannot load model"):
            await b.start()
        assert not b.healthy()

    run(main())
