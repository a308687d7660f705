"""The request lifecycle shared by every generation route: permit, validation, backend stream,
success/failure metrics. Routes only format what :class:`Service` yields.

Timings recorded on success (seconds, TGI's histograms): duration = end - request start;
validation = validated - start; queue = backend ``started_ns - queued_ns``; inference =
``finished_ns - started_ns``; mean time per token = inference / generated tokens.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from harness.server.admission import Admission, Permit
from harness.server.backends.base import Backend, GenerationError, StepOutput, TokenInfo
from harness.server.config import ServerConfig
from harness.server.infer_errors import GenerationFailed, IncompleteGeneration, IncompleteGenerationStream
from harness.server.prometheus import Metrics
from harness.server.schemas import GenerateParameters
from harness.server.trace import TokenTrace
from harness.server.validation import ValidRequest, check_before_permit, validate


@dataclass(slots=True)
class Timing:
    """Monotonic ns marks of one request (for headers and histograms)."""

    start_ns: int
    validated_ns: int = 0
    queued_ns: int = 0
    started_ns: int = 0
    finished_ns: int = 0

    def ms(self) -> dict[str, int]:
        """TGI's timing header values in integer milliseconds."""
        end = self.finished_ns or time.monotonic_ns()
        return {"total": (end - self.start_ns) // 1_000_000,
                "validation": (self.validated_ns - self.start_ns) // 1_000_000,
                "queue": (self.started_ns - self.queued_ns) // 1_000_000,
                "inference": (self.finished_ns - self.started_ns) // 1_000_000}


@dataclass(slots=True)
class Collected:
    """A whole non-streamed generation."""

    tokens: list[TokenInfo] = field(default_factory=list)
    top_tokens: list[list[TokenInfo]] = field(default_factory=list)
    last: StepOutput | None = None
    timing: Timing | None = None
    outputs: list[StepOutput] = field(default_factory=list)  #: every output, in order


class Service:
    """Everything a route needs: backend, limits, admission, metrics, trace."""

    def __init__(self, backend: Backend, cfg: ServerConfig, metrics: Metrics, admission: Admission,
                 trace: TokenTrace | None = None) -> None:
        self.backend = backend
        self.cfg = cfg
        self.metrics = metrics
        self.admission = admission
        self.trace = trace

    def admit(self, inputs: str, p: GenerateParameters, *, stream: bool,
              return_full_text_default: bool, timing: Timing) -> tuple[list[Permit], ValidRequest]:
        """TGI order: stream-only checks and best_of range, one permit per best_of copy
        (Overloaded when none is free), then validation. Permits are released on failure."""
        best_of = check_before_permit(p, self.cfg, stream=stream)
        permits: list[Permit] = []
        try:
            for _ in range(best_of):
                permits.append(self.admission.try_acquire())
            valid = validate(self.backend, self.cfg, inputs, p, return_full_text_default=return_full_text_default)
        except BaseException:
            for permit in permits:
                permit.release()
            raise
        self.metrics.observe("tgi_request_input_length", len(valid.input_ids))
        self.metrics.observe("tgi_request_max_new_tokens", valid.params.max_new_tokens)
        timing.validated_ns = time.monotonic_ns()
        return permits, valid

    async def steps(self, valid: ValidRequest, timing: Timing, *, streaming: bool = True,
                    record: bool = True) -> AsyncIterator[StepOutput]:
        """The backend's outputs; the last one has ``finish_reason``. Backend failures become
        :class:`GenerationFailed`; an end without a final output :class:`IncompleteGeneration*`.
        ``record``: count the success in the metrics (False for best_of copies but one)."""
        try:
            stream = self.backend.submit(valid.input_ids, valid.params)
        except GenerationError as exc:
            raise GenerationFailed(str(exc)) from None
        try:
            async for out in stream:
                if out.finish_reason is not None:
                    now = time.monotonic_ns()
                    timing.queued_ns = out.queued_ns or timing.validated_ns
                    timing.started_ns = out.started_ns or timing.queued_ns
                    timing.finished_ns = out.finished_ns or now
                    if record:
                        self.record_success(timing, out.generated_tokens)
                    yield out
                    return
                yield out
        except GenerationError as exc:
            raise GenerationFailed(str(exc)) from None
        finally:
            stream.cancel()
        raise IncompleteGenerationStream() if streaming else IncompleteGeneration()

    async def collect(self, valid: ValidRequest, timing: Timing, record: bool = True) -> Collected:
        """Run one generation to its end."""
        result = Collected(timing=timing)
        async for out in self.steps(valid, timing, streaming=False, record=record):
            result.tokens.append(out.token)
            result.outputs.append(out)
            if out.top_tokens:
                result.top_tokens.append(out.top_tokens)
            result.last = out
        return result

    def record_success(self, timing: Timing, generated_tokens: int) -> None:
        m = self.metrics
        m.success()
        now = time.monotonic_ns()
        inference = (timing.finished_ns - timing.started_ns) / 1e9
        m.observe("tgi_request_duration", (now - timing.start_ns) / 1e9)
        m.observe("tgi_request_validation_duration", (timing.validated_ns - timing.start_ns) / 1e9)
        m.observe("tgi_request_queue_duration", (timing.started_ns - timing.queued_ns) / 1e9)
        m.observe("tgi_request_inference_duration", inference)
        m.observe("tgi_request_mean_time_per_token_duration", inference / max(generated_tokens, 1))
        m.observe("tgi_request_generated_tokens", generated_tokens)
