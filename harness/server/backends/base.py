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


#: :attr:`StepOutput.kind` values: what a generated token is part of. Native TGI routes send every
#: kind as an ordinary token; the OpenAI chat route sends ``reasoning`` as
#: ``delta.reasoning_content``, ``tool_call`` (text: the function name) as the head of a
#: ``delta.tool_calls`` entry and ``tool_arguments`` as that entry's argument fragments.
ANSWER, REASONING, TOOL_CALL, TOOL_ARGUMENTS = "answer", "reasoning", "tool_call", "tool_arguments"


@dataclass(slots=True)
class ToolSpec:
    """A function the request offers (OpenAI ``tools[i].function``): name and JSON-schema parameters."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Script:
    """Per-request behaviour a simulating backend follows (set by the OpenAI routes; a real model
    ignores it). ``None`` fields fall back to the backend's ``--sim-*`` defaults.

    ``tools``: the functions the model calls, in order (empty: answer with text); ``tool_calls``:
    how many calls (call i uses ``tools[i % len(tools)]``); ``reasoning_tokens``: reasoning tokens
    before the answer (0: none); ``output_tokens``: answer length incl. EOS; ``tool_call_fragments``:
    argument fragments per call."""

    tools: list[ToolSpec] = field(default_factory=list)
    tool_calls: int | None = None
    tool_call_fragments: int | None = None
    reasoning_tokens: int | None = None
    output_tokens: int | None = None


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
    script: Script | None = None  #: OpenAI routes: tools and simulation overrides (see :class:`Script`)


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
    kind: str = ANSWER  #: ANSWER | REASONING | TOOL_CALL | TOOL_ARGUMENTS
    tool_index: int = 0  #: TOOL_CALL / TOOL_ARGUMENTS: which call of the response (0, 1, ...)
    tool_call_id: str | None = None  #: TOOL_CALL only: the call's id (``call_...``)
    #: last output only: prompt tokens whose KV came from the prefix cache (None: the backend has no
    #: prefix cache, or it is off); reasoning tokens generated (None: the backend does not reason)
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


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
    prefix_cache: PrefixCacheStats | None = None  #: None: no prefix cache (or it is off)


@dataclass(slots=True)
class PrefixCacheStats:
    """Prefix-cache counters (since start) and gauges, in tokens unless said otherwise.

    ``queries``: prompt tokens looked up; ``hits``: of those, tokens whose KV was reused (token hit
    rate = hits / queries, as vLLM's ``prefix_cache_hits``/``prefix_cache_queries``);
    ``requests``/``hit_requests``: lookups, and lookups with at least one block reused;
    ``evicted``: blocks evicted (LRU); ``tokens``: tokens held now; ``bytes``/``capacity_bytes``:
    KV memory held now and its bound (0 for an emulated cache)."""

    queries: int = 0
    hits: int = 0
    requests: int = 0
    hit_requests: int = 0
    evicted: int = 0
    tokens: int = 0
    bytes: int = 0
    capacity_bytes: int = 0


class Backend(abc.ABC):
    """A model behind the server. Implementations: ``transformers`` and ``simulated``."""

    #: id shown in /info, /v1/models and OpenAI responses
    model_id: str = ""
    #: the largest input + output length the model supports (default for --max-total-tokens)
    max_position_embeddings: int = 4096
    #: "cpu" / "cuda" etc. and the torch dtype name, for /info and logs
    device: str = "cpu"
    dtype: str = "n/a"
    #: the chat route accepts ``tools`` (else 422 ``tool_error``) and follows :class:`Script`
    supports_tools: bool = False

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
