"""The contract between the HTTP layer (``harness.server.app``) and a generation backend.

The app validates a request, tokenizes it through the backend, takes an admission permit and
calls :meth:`Backend.submit`. The returned :class:`GenerationStream` is an async iterator of
:class:`StepOutput`, one per generated token, the last one carrying ``finish_reason`` and the
final text. The backend owns scheduling (queue, batching), sampling, stop sequences and
incremental detokenization; the app owns the wire format, admission, metrics and headers.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

#: Monotonic ns at which the HTTP layer received the request (its headers parsed), set by the app
#: for the handling of each request. A backend that simulates timing anchors its schedule on it,
#: so a scripted TTFT is measured from the request's arrival, as a client sees it, not from the
#: moment routing and validation handed the request over.
REQUEST_ARRIVAL_NS: ContextVar[int | None] = ContextVar("request_arrival_ns", default=None)


class GenerationError(Exception):
    """The backend failed while generating; the app answers 424 ``generation``."""


@dataclass(slots=True)
class SamplingParams:
    """Validated per-request generation parameters (TGI's GenerateParameters after defaults).

    ``temperature``/``top_k``/``top_p``/``typical_p`` of ``None`` mean "off"; sampling happens
    only when ``do_sample`` is true (the app sets it when TGI would). ``seed`` is always set by
    the app when sampling (TGI picks a random u64 when the client gives none).
    """

    max_new_tokens: int = 20
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    top_n_tokens: int = 0


@dataclass(slots=True)
class TokenInfo:
    """One token as TGI sends it: ``{"id", "text", "logprob", "special"}``."""

    id: int
    text: str
    logprob: float | None
    special: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "logprob": self.logprob, "special": self.special}


@dataclass(slots=True)
class StepOutput:
    """One generated token handed to the event loop.

    ``token.text`` is the incremental detokenization: the concatenation of all non-special
    ``token.text`` values equals ``generated_text`` (never half a UTF-8 character; a token that
    completes no character has text ``""``). On the last output ``finish_reason`` is one of
    ``length`` | ``eos_token`` | ``stop_sequence`` and the timing fields are set.
    """

    token: TokenInfo
    top_tokens: list[TokenInfo] = field(default_factory=list)
    finish_reason: str | None = None
    generated_text: str | None = None  #: last output only: decoded text, specials skipped, stop seq kept
    generated_tokens: int = 0  #: tokens generated so far, this one included
    seed: int | None = None  #: last output only: the seed used when sampling, else None
    # Timings (monotonic ns), last output only, for the tgi_request_* histograms.
    queued_ns: int | None = None  #: request entered the backend queue
    started_ns: int | None = None  #: prefill of this request began
    finished_ns: int | None = None


class GenerationStream(abc.ABC):
    """Async iterator over one request's :class:`StepOutput`; ``cancel()`` frees its batch row."""

    def __aiter__(self) -> AsyncIterator[StepOutput]:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> StepOutput:
        """Next token; raises StopAsyncIteration after the final output, GenerationError on failure."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Client went away: stop generating (the row leaves the batch at the next step). Idempotent."""


@dataclass(slots=True)
class EngineStats:
    """Gauges pulled by the app at scrape time (tgi_queue_size, tgi_batch_current_size, ...)."""

    queue_size: int = 0
    batch_size: int = 0
    batch_max_tokens: int = 0  #: sum over running rows of (input + max_new_tokens)


class Backend(abc.ABC):
    """A model behind the server. Implementations: ``transformers`` and ``simulated``."""

    #: id shown in /info, /v1/models and OpenAI responses
    model_id: str = ""
    #: the largest input + output length the model supports (default for --max-total-tokens)
    max_position_embeddings: int = 4096
    #: "cpu" / "cuda" etc. and the torch dtype name, for /info and logs
    device: str = "cpu"
    dtype: str = "n/a"

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model and warm it up; the server answers /health 200 only after this."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop the scheduler thread(s); in-flight streams end with GenerationError."""

    @abc.abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""

    @abc.abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` with special tokens skipped."""

    @abc.abstractmethod
    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text for OpenAI chat ``messages`` (with the generation prompt appended).

        Raises ValueError with a human-readable reason on a template error (app: 422 template_error).
        """

    @abc.abstractmethod
    def submit(self, input_ids: list[int], params: SamplingParams) -> GenerationStream:
        """Queue one request; tokens flow through the returned stream. Never blocks the loop."""

    @abc.abstractmethod
    def stats(self) -> EngineStats:
        """Current queue and batch gauges."""

    def healthy(self) -> bool:
        """False after an unrecoverable backend failure (app: /health 503)."""
        return True
