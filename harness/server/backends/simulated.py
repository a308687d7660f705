"""The simulated backend: no model, tokens on a scripted, seeded schedule.

Tokenizer (fixed, documented so clients can predict counts): the text is split into pieces by
the regex ``\\s*\\S+|\\s+`` (each word with its leading whitespace; trailing whitespace alone is
one piece). A piece found in the fixed vocabulary (:data:`WORDS`, each as ``" word"`` and
``"word"``) gets that id; any other piece gets a new id (>= :data:`DYNAMIC_BASE`) remembered in a
table so :meth:`decode` can reproduce it (the table is capped at :data:`DYNAMIC_CAP` entries,
after that unknown pieces map to ``<unk>``). So the input token count is the number of
whitespace-separated words. Id 0 is the EOS token ``</s>`` (special), id 1 is ``<unk>``.

Output: words drawn from :data:`WORDS` (each with a leading space) by a generator seeded with the
request seed when sampling, else with a hash of the input ids (greedy is deterministic). Each
word has a fixed logprob ``-ln(rank + 2) / 2``.

Schedule (absolute; a late wake-up shortens the next wait, no cumulative drift), in ms:
- first token at ``arrival + ttft_ms + ttft_per_input_token_ms * input_len``, where arrival is
  when the HTTP layer received the request (:data:`~harness.server.backends.base.REQUEST_ARRIVAL_NS`;
  the submit time when called outside a request);
- token k+1 at ``t_k + itl_ms * (1 + batch_slowdown * (running - 1)) + U(-jitter_ms, +jitter_ms)``
  (the gap is clamped at >= 0; ``running`` = streams of this backend not finished, at that
  moment; jitter from a generator seeded by ``sim_seed`` and the request number).

End: the request's ``output_tokens``-th token (default ``--sim-output-tokens``) is EOS
(``finish_reason`` ``eos_token``) unless ``max_new_tokens`` is reached first or at the same token
(``length`` wins, as in TGI) or a stop sequence appears in the text (``stop_sequence``).
``output_tokens`` <= 0 means no natural end.

Timing machinery: one :class:`Ticker` per backend instead of one timer per token per stream. A
stream whose next token is not yet due puts ``(due, seq, future)`` on the ticker's heap and awaits
the future; the ticker keeps one event-loop timer armed for the earliest due time and, when it
fires, resolves every future due within :data:`EARLY_S` in due order (one loop callback for all
streams due at that tick). Due times are on ``time.monotonic`` (uvloop's own clock and timers
have 1 ms granularity and may fire early; an early firing just re-arms).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import re
import time
import zlib
from typing import Any

from harness.server.backends.base import (
    REQUEST_ARRIVAL_NS,
    Backend,
    EngineStats,
    GenerationError,
    GenerationStream,
    SamplingParams,
    StepOutput,
    TokenInfo,
)

WORDS: tuple[str, ...] = tuple(
    """the of and to a in is it that for on with as was at by be this are from or have an
    they which one you had not but what all were when we there can more if out so up said
    about into than them some could time only other new these two may first then do any like
    my now over such our man me even most made after also did many before must through back
    years where much your way well down should because each just those people how too little
    state good very make world still own see men work long get here between both life being
    under never day same another know while last might us great old year off come since
    against go came right used take three stream token server model batch latency request
    queue cache decode prefill sample harness client load test metric report gate sweep
    signal data river light stone cloud quiet bright early simple clear open small green""".split()
)
EOS_ID, UNK_ID, WORD_BASE = 0, 1, 2
DYNAMIC_BASE = 10_000
DYNAMIC_CAP = 200_000
_PIECE = re.compile(r"\s*\S+|\s+")
EOS = TokenInfo(EOS_ID, "</s>", -0.1, True)
EARLY_S = 0.0002  #: a token may be emitted at most this early (event-loop timer granularity)
_monotonic = time.monotonic


class Ticker:
    """Wakes waiters at monotonic due times with one armed loop timer (module docstring)."""

    __slots__ = ("_loop", "_heap", "_seq", "_timer", "_armed_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf  #: monotonic due time the armed timer is for

    def wait_until(self, due: float) -> asyncio.Future:
        """A future resolved (result None) once ``time.monotonic() >= due - EARLY_S``."""
        fut = self._loop.create_future()
        heapq.heappush(self._heap, (due, next(self._seq), fut))
        if due < self._armed_at:
            self._arm(due)
        return fut

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = due
        loop = self._loop
        self._timer = loop.call_at(loop.time() + (due - _monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = math.inf
        heap = self._heap
        limit = _monotonic() + EARLY_S
        pop = heapq.heappop
        while heap and heap[0][0] <= limit:
            fut = pop(heap)[2]
            if not fut.done():  # a cancelled waiter (client gone) is skipped
                fut.set_result(None)
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = math.inf
        for _, _, fut in self._heap:
            if not fut.done():
                fut.set_result(None)
        self._heap.clear()


class SimulatedBackend(Backend):
    """Scripted token timing; see the module docstring for every formula."""

    def __init__(self, *, ttft_ms: float = 50.0, ttft_per_input_token_ms: float = 0.0,
                 itl_ms: float = 20.0, jitter_ms: float = 0.0, batch_slowdown: float = 0.0,
                 output_tokens: int = 64, seed: int = 0, max_position_embeddings: int = 4096) -> None:
        self.model_id = "simulated"
        self.device = "cpu"
        self.dtype = "n/a"
        self.max_position_embeddings = max_position_embeddings
        self.ttft_s = ttft_ms / 1e3
        self.ttft_per_token_s = ttft_per_input_token_ms / 1e3
        self.itl_s = itl_ms / 1e3
        self.jitter_s = jitter_ms / 1e3
        self.batch_slowdown = batch_slowdown
        self.output_tokens = output_tokens
        self.seed = seed
        # Vocabulary: " word" at WORD_BASE + 2i, "word" at WORD_BASE + 2i + 1.
        self._words = [TokenInfo(WORD_BASE + 2 * i, " " + w, -math.log(i + 2) / 2, False)
                       for i, w in enumerate(WORDS)]
        self._id_of: dict[str, int] = {}
        self._text_of: dict[int, str] = {EOS_ID: "</s>", UNK_ID: "<unk>"}
        for i, w in enumerate(WORDS):
            for j, piece in enumerate((" " + w, w)):
                self._id_of[piece] = WORD_BASE + 2 * i + j
                self._text_of[WORD_BASE + 2 * i + j] = piece
        self._next_dynamic = DYNAMIC_BASE
        self._running: set[SimulatedStream] = set()
        self._requests = 0
        self._closed = False
        self._ticker: Ticker | None = None

    # -- Backend contract -------------------------------------------------------------------
    async def start(self) -> None:
        self._closed = False

    async def shutdown(self) -> None:
        self._closed = True
        for s in list(self._running):
            s.fail("server shutting down")
        if self._ticker is not None:
            self._ticker.close()  # wakes the failed streams' waiters
            self._ticker = None

    def ticker(self) -> Ticker:
        """The ticker of the running loop (made on first use)."""
        t = self._ticker
        if t is None or t._loop is not asyncio.get_running_loop():
            t = self._ticker = Ticker(asyncio.get_running_loop())
        return t

    def tokenize(self, text: str) -> list[int]:
        ids = []
        for piece in _PIECE.findall(text):
            tid = self._id_of.get(piece)
            if tid is None:
                if self._next_dynamic - DYNAMIC_BASE >= DYNAMIC_CAP:
                    tid = UNK_ID
                else:
                    tid = self._id_of[piece] = self._next_dynamic
                    self._text_of[tid] = piece
                    self._next_dynamic += 1
            ids.append(tid)
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self._text_of.get(i, "") for i in ids if i != EOS_ID)

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        """ChatML-like: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then
        ``<|im_start|>assistant\\n``. Content lists keep their text parts."""
        out = []
        for m in messages:
            if not isinstance(m, dict) or "role" not in m:
                raise ValueError("each message needs a `role`")
            content = m.get("content") or ""
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            out.append(f"<|im_start|>{m['role']}\n{content}<|im_end|>\n")
        out.append("<|im_start|>assistant\n")
        return "".join(out)

    def submit(self, input_ids: list[int], params: SamplingParams) -> GenerationStream:
        if self._closed:
            raise GenerationError("server shutting down")
        self._requests += 1
        return SimulatedStream(self, input_ids, params, self._requests)

    def stats(self) -> EngineStats:
        return EngineStats(queue_size=0, batch_size=len(self._running),
                           batch_max_tokens=sum(s.max_tokens for s in self._running))

    # -- helpers for SimulatedStream --------------------------------------------------------
    def gap_s(self, rng: random.Random) -> float:
        """The next inter-token gap in seconds (module docstring formula)."""
        gap = self.itl_s * (1.0 + self.batch_slowdown * (len(self._running) - 1))
        if self.jitter_s:
            gap += rng.uniform(-self.jitter_s, self.jitter_s)
        return gap if gap > 0.0 else 0.0


class SimulatedStream(GenerationStream):
    """One request's scripted token sequence."""

    __slots__ = ("_b", "_params", "_words_rng", "_jitter_rng", "_next_t", "_n", "_text_parts",
                 "_tail", "_done", "_error", "max_tokens", "_queued_ns", "_natural", "_ticker")

    def __init__(self, backend: SimulatedBackend, input_ids: list[int], params: SamplingParams,
                 request_no: int) -> None:
        self._b = backend
        self._params = params
        seed = params.seed if params.do_sample and params.seed is not None else zlib.crc32(
            repr(input_ids[-64:]).encode())
        self._words_rng = random.Random(seed)
        self._jitter_rng = random.Random(backend.seed * 1_000_003 + request_no)
        self._ticker = backend.ticker()
        self._queued_ns = time.monotonic_ns()
        arrival_ns = REQUEST_ARRIVAL_NS.get()
        anchor = arrival_ns / 1e9 if arrival_ns is not None else _monotonic()  # same CLOCK_MONOTONIC
        self._next_t = anchor + backend.ttft_s + backend.ttft_per_token_s * len(input_ids)
        self._n = 0
        self._text_parts: list[str] = []
        self._tail = ""
        self._done = False
        self._error: str | None = None
        self._natural = backend.output_tokens
        self.max_tokens = len(input_ids) + params.max_new_tokens
        backend._running.add(self)

    def fail(self, reason: str) -> None:
        self._error = reason
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._b._running.discard(self)

    def cancel(self) -> None:
        self._finish()

    async def __anext__(self) -> StepOutput:
        if self._done:
            if self._error:
                raise GenerationError(self._error)
            raise StopAsyncIteration
        if self._next_t - _monotonic() > EARLY_S:
            await self._ticker.wait_until(self._next_t)
        if self._done:  # cancelled or failed while sleeping
            if self._error:
                raise GenerationError(self._error)
            raise StopAsyncIteration
        b = self._b
        self._n = n = self._n + 1
        p = self._params
        if n == self._natural:
            tok = EOS
        else:
            tok = b._words[self._words_rng.randrange(len(b._words))]
            self._text_parts.append(tok.text)
        top: list[TokenInfo] = []
        if p.top_n_tokens:
            top = [tok] + [w for w in b._words[: p.top_n_tokens + 1] if w is not tok][: p.top_n_tokens - 1]
        finish = None
        if n >= p.max_new_tokens:
            finish = "length"
        elif tok is EOS:
            finish = "eos_token"
        elif p.stop:
            tail = self._tail + tok.text
            for s in p.stop:
                if s and s in tail:
                    finish = "stop_sequence"
                    break
            self._tail = tail[-max(len(s) for s in p.stop):]
        if finish is None:
            self._next_t += b.gap_s(self._jitter_rng)
            return StepOutput(tok, top, generated_tokens=n)
        self._finish()
        now = time.monotonic_ns()
        return StepOutput(tok, top, finish_reason=finish, generated_text="".join(self._text_parts),
                          generated_tokens=n, seed=p.seed if p.do_sample else None,
                          queued_ns=self._queued_ns, started_ns=self._queued_ns, finished_ns=now)
