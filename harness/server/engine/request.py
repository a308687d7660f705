"""One request's engine-side state: prompt, sampling, text, stop and finish rules.

Finish rules per generated token, in TGI's order: ``length`` when ``max_new_tokens`` is reached,
else ``eos_token`` when the token is an EOS id, else ``stop_sequence`` when the text now contains a
stop sequence. Special tokens (EOS included) are emitted with their token string and
``special=True`` and are not part of ``generated_text``.
"""

from __future__ import annotations

import time
from typing import Any

from harness.server.backends.base import SamplingParams, StepOutput, TokenInfo
from harness.server.engine.detokenize import IncrementalDetokenizer
from harness.server.engine.sampling import RowSampler
from harness.server.engine.stops import StopMatcher
from harness.server.engine.stream import EngineStream


class Request:
    """A queued or running request."""

    def __init__(self, input_ids: list[int], params: SamplingParams, stream: EngineStream,
                 tokenizer: Any, sampler: RowSampler) -> None:
        self.input_ids = input_ids
        self.params = params
        self.stream = stream
        self.sampler = sampler
        self.detok = IncrementalDetokenizer(tokenizer)
        self.stops = StopMatcher(params.stop)
        self.generated = 0
        self.finish_reason: str | None = None
        self.queued_ns = time.monotonic_ns()
        self.started_ns: int | None = None
        self.cached_tokens: int | None = None  #: prompt tokens taken from the prefix cache (None: no cache)

    @property
    def max_tokens(self) -> int:
        """Input + max_new_tokens (the tgi_batch_current_max_tokens contribution)."""
        return len(self.input_ids) + self.params.max_new_tokens

    @property
    def cancelled(self) -> bool:
        return self.stream.cancelled.is_set()

    def accept(self, token_id: int, logprob: float, top: list[tuple[int, float]], engine: Any) -> StepOutput:
        """Record one generated token; returns its output (the final one when the request finishes)."""
        self.generated += 1
        self.sampler.history.append(token_id)
        special = token_id in engine.special_ids
        text = engine.token_text(token_id) if special else self.detok.add(token_id)
        if self.generated >= self.params.max_new_tokens:
            self.finish_reason = "length"
        elif token_id in engine.eos_ids:
            self.finish_reason = "eos_token"
        elif not special and self.stops and self.stops.feed(text) is not None:
            self.finish_reason = "stop_sequence"
        out = StepOutput(
            token=TokenInfo(token_id, text, logprob, special),
            top_tokens=[TokenInfo(t, engine.token_text(t), lp, t in engine.special_ids) for t, lp in top],
            generated_tokens=self.generated,
        )
        if self.finish_reason is not None:
            if not special:  # flush held-back bytes into this token (a special token's text is fixed)
                out.token.text += self.detok.finish()
            out.finish_reason = self.finish_reason
            out.generated_text = self.detok.text
            out.seed = self.params.seed if self.params.do_sample else None
            out.queued_ns, out.started_ns, out.finished_ns = self.queued_ns, self.started_ns, time.monotonic_ns()
            out.cached_tokens = self.cached_tokens
        return out
