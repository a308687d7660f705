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
- first token at ``arrival + ttft_ms + ttft_per_input_token_ms * (input_len - cached_tokens)``,
  where arrival is when the HTTP layer received the request
  (:data:`~harness.server.backends.base.REQUEST_ARRIVAL_NS`; the submit time when called outside a
  request) and ``cached_tokens`` comes from the emulated prefix cache (0 when it is off);
- token k+1 at ``t_k + itl_ms * (1 + batch_slowdown * (running - 1)) + U(-jitter_ms, +jitter_ms)``
  (the gap is clamped at >= 0; ``running`` = streams of this backend not finished, at that
  moment; jitter from a generator seeded by ``sim_seed`` and the request number).

Token sequence of one request (``R`` reasoning tokens, ``N`` answer tokens incl. EOS, ``K`` tool
calls of ``F`` argument fragments; per-request values from :class:`~harness.server.backends.base.Script`,
else the backend defaults):
- tokens 1..R are reasoning words (kind ``reasoning``);
- without tools: tokens R+1..R+N are the answer, the last one EOS (``N`` <= 0: no natural end);
- with tools: per call one ``tool_call`` token (text: the function name) then ``F`` ``tool_arguments``
  tokens whose texts concatenate to the call's JSON arguments, then EOS: R + K * (1 + F) + 1 tokens.
  Call i uses ``tools[i % len(tools)]``; its arguments hold one value per property of the function's
  ``parameters`` (enum: the first value; string: a word; integer 0-99; number 0.0-99.9; boolean;
  array ``[]``; object ``{}``), drawn from the request's word generator; a JSON text shorter than F
  characters is padded with spaces before its closing brace; fragment j is
  ``text[j*L//F:(j+1)*L//F]`` (L = its length). Call ids are ``call_<request no>_<i>``.
``max_new_tokens`` cuts any of these (``length`` wins over EOS at the same token, as in TGI); a stop
sequence in the text ends with ``stop_sequence``. Natural end is ``eos_token``.

Emulated prefix cache (``prefix_cache_blocks`` > 0): the prompt ids are cut into blocks of
``prefix_block_tokens`` (B) tokens, each keyed by its tokens and its parent block's key (a hash
chain, as vLLM's). The lookup, when the request is submitted, reuses the longest run of cached
blocks from the start, over at most
``floor((input_len - 1) / B)`` blocks (at least one token is always computed, as vLLM), so
``cached_tokens = B * blocks found``. A request's ``floor(input_len / B)`` full blocks enter the cache
when its first token is emitted (its prefill is done); a request that arrives before that misses
them. The cache holds at most ``prefix_cache_blocks`` blocks; the least recently used are evicted
(a chain's deeper blocks before its start). ``cached_tokens`` is reported on the last output.

Timing machinery: one :class:`Ticker` per backend instead of one timer per token per stream. A
stream whose next token is not yet due puts ``(due, seq, future)`` on the ticker's heap and awaits
the future; the ticker keeps one timer armed for the earliest due time and, when it fires,
resolves every future due within :data:`EARLY_S` in due order (one loop callback for all
streams due by then). The lean streaming path (:mod:`harness.server.lean`) registers plain
callbacks instead (:meth:`Ticker.call_at`), which the same firing runs in due order, and drives the
stream with its synchronous :meth:`SimulatedStream.step`. Due times are on ``time.monotonic``.
The timer is a ``CLOCK_MONOTONIC`` timerfd watched by the loop (Linux), armed at an absolute time
:data:`ARM_LATE_S` (0.25 ms) after the earliest due time; a firing serves every stream due up to
:data:`EARLY_S` (0.25 ms) after the moment it runs. So a token is written at most 0.25 ms before
its due time (never earlier), and, when the server keeps up, about 0.25 ms after it at most plus
the wake-up and the writes before it in the same firing; at 512 streams of 25 ms (20k tokens/s)
one firing serves about 10 streams, about 1,700 firings/s. (uvloop's own timers have whole-ms
granularity: a token then left 0-1 ms late, varying from token to token with the millisecond
phase at which the timer was armed. Where no timerfd can be made, those timers are the fallback,
armed :data:`ARM_SLACK_S` late so a timer never fires before anything is due.)
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import heapq
import itertools
import json
import math
import os
import random
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from harness.server.backends.base import (
    ANSWER,
    REASONING,
    REQUEST_ARRIVAL_NS,
    TOOL_ARGUMENTS,
    TOOL_CALL,
    Backend,
    EngineStats,
    GenerationError,
    GenerationStream,
    PrefixCacheStats,
    SamplingParams,
    Script,
    StepOutput,
    TokenInfo,
    ToolSpec,
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
EARLY_S = 0.00025  #: a token may be emitted at most this early (one firing serves the streams due this soon)
ARM_LATE_S = 0.00025  #: the ticker's timerfd fires this long after the earliest due time (batches firings)
ARM_SLACK_S = 0.0005  #: without a timerfd, added to a loop timer's delay: whole ms, up to 1 ms late, never spin
_monotonic = time.monotonic


class _TimerFd:
    """A ``CLOCK_MONOTONIC`` timerfd (Linux; through ctypes, as ``os.timerfd_*`` is Python 3.13+)
    watched by the event loop: wake-ups at absolute ``time.monotonic`` times with the kernel's
    timer precision (tens of us) instead of the loop timers' whole milliseconds."""

    __slots__ = ("fd", "_spec", "_settime", "_loop")
    _libc: Any = None

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        libc = _TimerFd._libc
        self.fd = libc.timerfd_create(1, os.O_NONBLOCK | os.O_CLOEXEC)  # CLOCK_MONOTONIC; TFD_* = O_*
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        self._spec = (ctypes.c_long * 4)()  # struct itimerspec: interval (0: one-shot), value
        self._settime = libc.timerfd_settime
        self._loop = loop
        try:
            loop.add_reader(self.fd, self._ready, callback)
        except BaseException:
            os.close(self.fd)
            raise

    @classmethod
    def open(cls, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> _TimerFd | None:
        """A timerfd calling ``callback`` from ``loop`` when it expires; None where unavailable."""
        try:
            if cls._libc is None:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.timerfd_create, libc.timerfd_settime  # noqa: B018 - AttributeError where absent
                cls._libc = libc
            return cls(loop, callback)
        except (OSError, AttributeError, NotImplementedError, RuntimeError):
            return None

    def arm(self, t: float) -> None:
        """Expire at monotonic time ``t`` (at once if past); replaces any earlier arming."""
        spec = self._spec
        ns = int(t * 1e9)
        spec[2] = ns // 1_000_000_000
        spec[3] = ns % 1_000_000_000 or 1  # an all-zero value would disarm
        self._settime(self.fd, 1, spec, None)  # TFD_TIMER_ABSTIME

    def _ready(self, callback: Callable[[], None]) -> None:
        try:
            os.read(self.fd, 8)  # the expiration count; clears readiness
        except BlockingIOError:  # re-armed after it expired: not due yet
            return
        callback()

    def close(self) -> None:
        self._loop.remove_reader(self.fd)
        os.close(self.fd)


class Ticker:
    """Wakes waiters at monotonic due times with one armed loop timer (module docstring)."""

    __slots__ = ("_loop", "_heap", "_seq", "_timer", "_armed_at", "_tfd")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        #: (due, seq, future or None, callback or None)
        self._heap: list[tuple[float, int, asyncio.Future | None, Callable[[], None] | None]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf  #: monotonic due time the armed timer is for
        self._tfd = _TimerFd.open(loop, self._fire)  #: None: loop timers (whole ms) instead

    def wait_until(self, due: float) -> asyncio.Future:
        """A future resolved (result None) once ``time.monotonic() >= due - EARLY_S``."""
        fut = self._loop.create_future()
        heapq.heappush(self._heap, (due, next(self._seq), fut, None))
        if due < self._armed_at:
            self._arm(due)
        return fut

    def call_at(self, due: float, callback: Callable[[], None]) -> None:
        """Run ``callback()`` from the loop once ``time.monotonic() >= due - EARLY_S`` (also at
        :meth:`close`). A callback may register again; one due by then runs in the same firing."""
        heapq.heappush(self._heap, (due, next(self._seq), None, callback))
        if due < self._armed_at:
            self._arm(due)

    def _arm(self, due: float) -> None:
        self._armed_at = due
        if self._tfd is not None:
            self._tfd.arm(due + ARM_LATE_S)
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = due - _monotonic()
        # A loop timer has 1 ms granularity and rounds to the nearest ms: a due time less than
        # 0.5 ms ahead would fire at once, find nothing due and re-arm, spinning the CPU until
        # the token is due. ARM_SLACK_S rounds every future due time up to a whole ms instead.
        self._timer = self._loop.call_later(delay + ARM_SLACK_S if delay > 0 else 0, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = -math.inf  # callbacks that register again do not arm while this runs
        heap = self._heap
        limit = _monotonic() + EARLY_S
        pop = heapq.heappop
        try:
            while heap and heap[0][0] <= limit:
                _, _, fut, cb = pop(heap)
                if cb is not None:
                    cb()
                elif not fut.done():  # a cancelled waiter (client gone) is skipped
                    fut.set_result(None)
        finally:
            self._armed_at = math.inf
            if heap:
                self._arm(heap[0][0])

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tfd is not None:
            self._tfd.close()
            self._tfd = None
        self._armed_at = -math.inf
        heap, self._heap = self._heap, []
        for _, _, fut, cb in heap:
            if cb is not None:
                cb()
            elif not fut.done():
                fut.set_result(None)
        self._heap.clear()
        self._armed_at = math.inf


class EmulatedPrefixCache:
    """A bounded LRU of prompt blocks keyed by a hash chain (module docstring); no KV, only keys.

    A key is ``(parent key's hash, block token ids)``: equal keys mean equal prefixes up to that block
    (the tokens are compared, the parent only by hash)."""

    def __init__(self, capacity_blocks: int, block_tokens: int = 16) -> None:
        self.capacity = capacity_blocks
        self.block = block_tokens
        self._lru: OrderedDict[tuple[int, tuple[int, ...]], None] = OrderedDict()
        self.stats = PrefixCacheStats()

    def _keys(self, ids: list[int], n_blocks: int) -> list[tuple[int, tuple[int, ...]]]:
        keys, parent, b = [], 0, self.block
        for i in range(n_blocks):
            key = (parent, tuple(ids[i * b:(i + 1) * b]))
            keys.append(key)
            parent = hash(key)
        return keys

    def lookup(self, ids: list[int]) -> int:
        """Cached tokens for a prompt ``ids`` (a multiple of the block size, < len(ids)); the hit
        blocks become the most recently used."""
        hit = []
        for key in self._keys(ids, max(len(ids) - 1, 0) // self.block):
            if key not in self._lru:
                break
            hit.append(key)
        for key in reversed(hit):  # the chain's start ends most recent: deeper blocks go first
            self._lru.move_to_end(key)
        st = self.stats
        st.requests += 1
        st.queries += len(ids)
        st.hits += len(hit) * self.block
        st.hit_requests += bool(hit)
        return len(hit) * self.block

    def insert(self, ids: list[int]) -> None:
        """Cache the full blocks of ``ids`` (most recent first at the chain's start), evict LRU."""
        lru = self._lru
        for key in reversed(self._keys(ids, len(ids) // self.block)):
            lru[key] = None
            lru.move_to_end(key)
        while len(lru) > self.capacity:
            lru.popitem(last=False)
            self.stats.evicted += 1
        self.stats.tokens = len(lru) * self.block


def _argument_value(schema: Any, rng: random.Random) -> Any:
    """One deterministic value for a JSON-schema property (module docstring)."""
    if not isinstance(schema, dict):
        return WORDS[rng.randrange(len(WORDS))]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind == "integer":
        return rng.randrange(100)
    if kind == "number":
        return rng.randrange(1000) / 10
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        return []
    if kind == "object":
        return {}
    if kind == "null":
        return None
    return WORDS[rng.randrange(len(WORDS))]


def tool_arguments(tool: ToolSpec, rng: random.Random, fragments: int) -> list[str]:
    """The argument fragments of one call to ``tool`` (module docstring); ``fragments`` >= 1."""
    props = tool.parameters.get("properties") if isinstance(tool.parameters, dict) else None
    obj = {name: _argument_value(sub, rng) for name, sub in props.items()} if isinstance(props, dict) else {}
    text = json.dumps(obj, ensure_ascii=False)
    if len(text) < fragments:
        text = text[:-1] + " " * (fragments - len(text)) + text[-1]
    n = len(text)
    return [text[j * n // fragments:(j + 1) * n // fragments] for j in range(fragments)]


class SimulatedBackend(Backend):
    """Scripted token timing; see the module docstring for every formula."""

    supports_tools = True

    def __init__(self, *, ttft_ms: float = 50.0, ttft_per_input_token_ms: float = 0.0,
                 itl_ms: float = 20.0, jitter_ms: float = 0.0, batch_slowdown: float = 0.0,
                 output_tokens: int = 64, seed: int = 0, max_position_embeddings: int = 4096,
                 reasoning_tokens: int = 0, tool_calls: int = 1, tool_call_fragments: int = 8,
                 prefix_cache_blocks: int = 0, prefix_block_tokens: int = 16) -> None:
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
        self.reasoning_tokens = reasoning_tokens
        self.tool_calls = tool_calls
        self.tool_call_fragments = tool_call_fragments
        self.prefix_cache = (EmulatedPrefixCache(prefix_cache_blocks, prefix_block_tokens)
                             if prefix_cache_blocks > 0 else None)
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
        return [self.piece_id(piece) for piece in _PIECE.findall(text)]

    def piece_id(self, piece: str) -> int:
        """The id of one piece (a vocabulary word, else a dynamic id; ``<unk>`` past the cap)."""
        tid = self._id_of.get(piece)
        if tid is None:
            if self._next_dynamic - DYNAMIC_BASE >= DYNAMIC_CAP:
                return UNK_ID
            tid = self._id_of[piece] = self._next_dynamic
            self._text_of[tid] = piece
            self._next_dynamic += 1
        return tid

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
        pc = self.prefix_cache
        return EngineStats(queue_size=0, batch_size=len(self._running),
                           batch_max_tokens=sum(s.max_tokens for s in self._running),
                           prefix_cache=None if pc is None else dataclasses.replace(pc.stats))

    # -- helpers for SimulatedStream --------------------------------------------------------
    def gap_s(self, rng: random.Random) -> float:
        """The next inter-token gap in seconds (module docstring formula)."""
        gap = self.itl_s * (1.0 + self.batch_slowdown * (len(self._running) - 1))
        if self.jitter_s:
            gap += rng.uniform(-self.jitter_s, self.jitter_s)
        return gap if gap > 0.0 else 0.0


def _pick(value: int | None, default: int) -> int:
    return default if value is None else value


class SimulatedStream(GenerationStream):
    """One request's scripted token sequence."""

    __slots__ = ("_b", "_params", "_words_rng", "_jitter_rng", "_next_t", "_n", "_text_parts",
                 "_tail", "_done", "_error", "max_tokens", "_queued_ns", "_natural", "_ticker",
                 "_reasoning", "_tools", "_calls", "_fragments", "_args", "_call_no", "_input_ids",
                 "_cached", "_request_no")

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
        self._request_no = request_no
        script = params.script or Script()
        self._reasoning = _pick(script.reasoning_tokens, backend.reasoning_tokens)
        self._natural = _pick(script.output_tokens, backend.output_tokens)
        self._tools = list(script.tools)
        self._calls = _pick(script.tool_calls, backend.tool_calls) if self._tools else 0
        self._fragments = max(1, _pick(script.tool_call_fragments, backend.tool_call_fragments))
        self._args: list[str] = []
        self._call_no = -1
        self._input_ids = input_ids
        pc = backend.prefix_cache
        self._cached = pc.lookup(input_ids) if pc is not None else None
        arrival_ns = REQUEST_ARRIVAL_NS.get()
        anchor = arrival_ns / 1e9 if arrival_ns is not None else _monotonic()  # same CLOCK_MONOTONIC
        self._next_t = anchor + backend.ttft_s + backend.ttft_per_token_s * (len(input_ids) - (self._cached or 0))
        self._n = 0
        self._text_parts: list[str] = []
        self._tail = ""
        self._done = False
        self._error: str | None = None
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

    def _next_token(self, n: int) -> tuple[TokenInfo, str, int, str | None]:
        """Token ``n`` (1-based) of the script: (token, kind, tool index, call id)."""
        b = self._b
        if n <= self._reasoning:
            return b._words[self._words_rng.randrange(len(b._words))], REASONING, 0, None
        m = n - self._reasoning - 1  # 0-based after the reasoning
        if self._calls:
            per_call = 1 + self._fragments
            call, j = divmod(m, per_call)
            if call >= self._calls:
                return EOS, ANSWER, 0, None
            if j == 0:
                self._call_no = call
                tool = self._tools[call % len(self._tools)]
                self._args = tool_arguments(tool, self._words_rng, self._fragments)
                call_id = f"call_{self._request_no}_{call}"
                return TokenInfo(b.piece_id(tool.name), tool.name, -0.5, False), TOOL_CALL, call, call_id
            text = self._args[j - 1]
            return TokenInfo(b.piece_id(text), text, -0.5, False), TOOL_ARGUMENTS, call, None
        if m + 1 == self._natural:
            return EOS, ANSWER, 0, None
        return b._words[self._words_rng.randrange(len(b._words))], ANSWER, 0, None

    @property
    def next_due(self) -> float:
        """``time.monotonic()`` seconds at which the next token is due."""
        return self._next_t

    async def __anext__(self) -> StepOutput:
        if self._done:
            if self._error:
                raise GenerationError(self._error)
            raise StopAsyncIteration
        if self._next_t - _monotonic() > EARLY_S:
            await self._ticker.wait_until(self._next_t)
        return self.step()

    def step(self) -> StepOutput:
        """The next output, now (the caller waited until :attr:`next_due`); raises
        StopAsyncIteration after the final output or a cancel, GenerationError after a failure."""
        if self._done:  # cancelled or failed while sleeping
            if self._error:
                raise GenerationError(self._error)
            raise StopAsyncIteration
        b = self._b
        self._n = n = self._n + 1
        if n == 1 and b.prefix_cache is not None:
            b.prefix_cache.insert(self._input_ids)  # the prefill is done: its blocks are cached now
        p = self._params
        tok, kind, tool_index, call_id = self._next_token(n)
        if tok is not EOS:
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
            return StepOutput(tok, top, generated_tokens=n, kind=kind, tool_index=tool_index,
                              tool_call_id=call_id)
        self._finish()
        now = time.monotonic_ns()
        return StepOutput(tok, top, finish_reason=finish, generated_text="".join(self._text_parts),
                          generated_tokens=n, seed=p.seed if p.do_sample else None,
                          queued_ns=self._queued_ns, started_ns=self._queued_ns, finished_ns=now,
                          kind=kind, tool_index=tool_index, tool_call_id=call_id, cached_tokens=self._cached,
                          reasoning_tokens=min(n, self._reasoning) if self._reasoning or b.reasoning_tokens else None)
