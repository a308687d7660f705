"""Drive the engine one scheduler round at a time on the test's thread (no scheduler thread)."""

from __future__ import annotations

import asyncio

from harness.server.backends.base import GenerationError, SamplingParams, StepOutput
from harness.server.engine.policy import Policy
from harness.server.engine.request import Request
from harness.server.engine.sampling import RowSampler, make_generator
from harness.server.engine.scheduler import Engine
from harness.server.engine.stream import EngineStream
from harness.server.models import LoadedModel


class Driver:
    """Runs an :class:`Engine` one scheduler round at a time on the test's thread."""

    def __init__(self, lm: LoadedModel, policy: Policy, eos_ids: frozenset[int] | None = None) -> None:
        self.lm = lm
        self.loop = asyncio.new_event_loop()
        self.engine = Engine(lm.model, lm.tokenizer, lm.device,
                             lm.eos_token_ids if eos_ids is None else eos_ids, policy)
        self.outputs: dict[int, list[StepOutput | GenerationError]] = {}
        self.streams: dict[int, EngineStream] = {}

    def submit(self, ids: list[int], params: SamplingParams | None = None) -> int:
        params = params or SamplingParams()
        gen = make_generator(params.seed, self.lm.device) if params.do_sample else None
        stream = EngineStream(self.loop, self.engine.wake)
        self.engine.enqueue(Request(list(ids), params, stream, self.lm.tokenizer,
                                    RowSampler(params, list(ids), gen)))
        key = len(self.streams)
        self.streams[key] = stream
        self.outputs[key] = []
        return key

    def step(self, n: int = 1) -> None:
        import torch

        with torch.inference_mode():
            for _ in range(n):
                self.engine.iterate()
        self.loop.run_until_complete(asyncio.sleep(0))
        for key, stream in self.streams.items():
            while not stream._queue.empty():
                self.outputs[key].append(stream._queue.get_nowait())

    def done(self, key: int) -> bool:
        out = self.outputs[key]
        return bool(out) and (isinstance(out[-1], GenerationError) or out[-1].finish_reason is not None)

    def run_until_done(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            if all(self.done(k) or s.cancelled.is_set() for k, s in self.streams.items()):
                return
            self.step()
        raise AssertionError("engine did not finish")

    def tokens(self, key: int) -> list[int]:
        return [o.token.id for o in self.outputs[key]]

    def close(self) -> None:
        self.loop.close()


def alone(lm: LoadedModel, ids: list[int], params: SamplingParams) -> list[StepOutput]:
    """The outputs of ``ids`` generated with nothing else in the engine."""
    d = Driver(lm, Policy())
    key = d.submit(ids, params)
    d.run_until_done()
    d.close()
    return d.outputs[key]  # type: ignore[return-value]


def generate_greedy(lm: LoadedModel, ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers' own single-sequence greedy ``generate`` (stops at EOS)."""
    import torch

    with torch.inference_mode():
        out = lm.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=sorted(lm.eos_token_ids), pad_token_id=lm.tokenizer.pad_token_id)
    return out[0, len(ids):].tolist()
