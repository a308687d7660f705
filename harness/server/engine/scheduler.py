"""The scheduler: continuous batching over one running :class:`Batch`, on its own thread.

Loop: drop cancelled rows -> let waiting requests join (``Policy``; prefilled together, first token
chosen from the prefill logits, then merged into the batch) -> one decode step over the batch ->
choose tokens -> emit outputs (one hand-off to the event loop per step) -> finished rows leave. A
cancelled request's row is gone before the next forward pass. All model work runs on this thread
under ``torch.inference_mode``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from collections import deque
from typing import Any

import torch

from harness.server.backends.base import EngineStats, GenerationError
from harness.server.engine.batch import Batch, prefill
from harness.server.engine.policy import Policy
from harness.server.engine.prefix_cache import PrefixCache
from harness.server.engine.request import Request
from harness.server.engine.sampling import choose
from harness.server.engine.stream import Outbox

log = logging.getLogger("harness.server.engine")


class Engine:
    """Owns the model, the waiting queue and the running batch."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device, eos_ids: frozenset[int],
                 policy: Policy, prefix_cache: PrefixCache | None = None) -> None:
        self.model = model
        self.prefix_cache = prefix_cache
        self.tokenizer = tokenizer
        self.device = device
        self.eos_ids = eos_ids
        self.special_ids = frozenset(tokenizer.all_special_ids) | eos_ids
        self.policy = policy
        self._texts: dict[int, str] = {}
        self._queue: deque[Request] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batch: Batch | None = None
        self._steps_since_join = 0
        self.steps = 0  #: decode steps run (for tests and logs)
        self._stats = EngineStats()

    # ---- shared helpers -------------------------------------------------------------------------
    def token_text(self, token_id: int) -> str:
        """A single token's text, specials included (for special tokens and top_tokens)."""
        text = self._texts.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False,
                                         clean_up_tokenization_spaces=False)
            self._texts[token_id] = text
        return text

    def stats(self) -> EngineStats:
        return self._stats

    # ---- thread control ------------------------------------------------------------------------
    def start(self) -> None:
        """Run the scheduler on a new thread (see :meth:`run` to use the current one)."""
        self._thread = threading.Thread(target=self.run, name="engine-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def enqueue(self, req: Request) -> bool:
        """Queue ``req``; False (and nothing queued) when the engine is stopping."""
        with self._cv:
            if self._stopping:
                return False
            self._queue.append(req)
            self._update_stats()
            self._cv.notify()
        return True

    def wake(self) -> None:
        with self._cv:
            self._cv.notify()

    # ---- the loop ------------------------------------------------------------------------------
    def _update_stats(self) -> None:
        rows = self.batch.rows if self.batch is not None else []
        pc = self.prefix_cache
        self._stats = EngineStats(len(self._queue), len(rows), sum(r.max_tokens for r in rows),
                                  None if pc is None else dataclasses.replace(pc.stats))

    def run(self) -> None:
        """The scheduler loop, on the calling thread, until :meth:`stop`.

        All torch work of a process should stay on one thread: each thread that runs parallel
        kernels gets its own OpenMP pool, and with more pool threads than cores libgomp stops
        spinning at barriers, which made every forward pass about 1.6x slower here (2-core CPU).
        """
        self._thread = threading.current_thread()
        with torch.inference_mode():
            while True:
                with self._cv:
                    while not self._stopping and not self._queue and self.batch is None:
                        self._cv.wait(0.5)
                    if self._stopping:
                        break
                try:
                    self.iterate()
                except Exception as exc:  # noqa: BLE001 - any model failure ends the affected requests
                    log.error("engine step failed: %s", traceback.format_exc())
                    self._fail_batch(GenerationError(f"generation failed: {exc}"))
        self._fail_all(GenerationError("the server is shutting down"))

    def _fail_batch(self, err: GenerationError) -> None:
        outbox = Outbox()
        for req in self.batch.rows if self.batch is not None else []:
            outbox.put(req.stream, err)
        self.batch = None
        self._update_stats()
        outbox.flush()

    def _fail_all(self, err: GenerationError) -> None:
        with self._cv:
            waiting = list(self._queue)
            self._queue.clear()
        outbox = Outbox()
        for req in waiting:
            outbox.put(req.stream, err)
        outbox.flush()
        self._fail_batch(err)

    def _drop_cancelled(self) -> None:
        with self._cv:
            if any(r.cancelled for r in self._queue):
                self._queue = deque(r for r in self._queue if not r.cancelled)
        if self.batch is not None:
            keep = [i for i, r in enumerate(self.batch.rows) if not r.cancelled]
            self._retain(keep)

    def _retain(self, keep: list[int]) -> None:
        assert self.batch is not None
        if not keep:
            self.batch = None
        else:
            self.batch.keep(keep)

    def iterate(self) -> None:
        """One scheduler round: cancellations, joins, one decode step, leaves."""
        outbox = Outbox()
        self._drop_cancelled()
        with self._cv:
            size = len(self.batch) if self.batch is not None else 0
            joining = self.policy.take(self._queue, size, self._steps_since_join)
        if joining:
            self._join(joining, outbox)
        elif self.batch is not None:
            self._steps_since_join += 1
        if self.batch is not None and not joining:
            logits = self.batch.step(self.model)
            self.steps += 1
            self._emit(self.batch, choose(logits, [r.sampler for r in self.batch.rows]), outbox)
        self._update_stats()
        outbox.flush()

    def _join(self, joining: list[Request], outbox: Outbox) -> None:
        now = time.monotonic_ns()
        for req in joining:
            req.started_ns = now
        try:
            prefixes = self._match(joining)
            new, logits = prefill(self.model, joining, [r.input_ids for r in joining], self.device, prefixes)
            choice = choose(logits, [r.sampler for r in joining])
        except Exception as exc:  # noqa: BLE001 - fails the joining requests only, never the running batch
            log.error("prefill failed: %s", traceback.format_exc())
            for req in joining:
                outbox.put(req.stream, GenerationError(f"generation failed: {exc}"))
            return
        self._steps_since_join = 0
        self._emit(new, choice, outbox, joined=True)
        if len(new) == 0:
            return
        if self.batch is None:
            self.batch = new
        else:
            self.batch.merge(new)

    # ---- prefix cache ---------------------------------------------------------------------------
    def _match(self, joining: list[Request]) -> list[torch.Tensor | None] | None:
        """Each joining request's cached prefix KV (sets ``cached_tokens``); None without a cache."""
        if self.prefix_cache is None:
            return None
        prefixes = []
        for req in joining:
            req.cached_tokens, kv = self.prefix_cache.match(req.input_ids)
            prefixes.append(kv)
        return prefixes

    def _remember(self, batch: Batch, joined: bool, finished: list[int]) -> None:
        """Copy blocks into the prefix cache: every row's prompt after a prefill (``joined``), and
        the prompt + generated tokens of ``finished`` rows (for a next turn that repeats them).
        Best effort: a failure (e.g. out of memory) is logged and clears the cache."""
        pc = self.prefix_cache
        assert pc is not None
        try:
            for i, req in enumerate(batch.rows):
                columns = None
                if joined:
                    columns = batch.mask[i].nonzero().squeeze(1)
                    pc.store(req.input_ids, batch.cache.row_layers(i), columns, (req.cached_tokens or 0) // pc.block)
                if i in finished:
                    in_cache = int(batch.positions[i])  # the token chosen last is not in the cache yet
                    if in_cache // pc.block > len(req.input_ids) // pc.block:
                        columns = batch.mask[i].nonzero().squeeze(1) if columns is None else columns
                        pc.store(req.sampler.history[:in_cache], batch.cache.row_layers(i), columns)
        except Exception:  # noqa: BLE001 - the cache is an optimisation: requests go on without it
            log.error("prefix cache store failed, cache cleared: %s", traceback.format_exc())
            pc.clear()

    def _emit(self, batch: Batch, choice: Any, outbox: Outbox, joined: bool = False) -> None:
        """Turn chosen tokens into outputs; finished rows leave ``batch``. With a prefix cache the
        outputs are sent first, then blocks are copied (:meth:`_remember`), then rows leave."""
        keep: list[int] = []
        finished: list[int] = []
        for i, req in enumerate(batch.rows):
            out = req.accept(choice.ids[i], choice.logprobs[i], choice.top[i], self)
            outbox.put(req.stream, out)
            if out.finish_reason is None and not req.cancelled:
                keep.append(i)
            elif out.finish_reason is not None:
                finished.append(i)
        batch.set_last(choice.ids)
        if self.prefix_cache is not None and (joined or finished):
            outbox.flush()  # copying blocks must not delay these tokens
            self._remember(batch, joined, finished)
        if len(keep) != len(batch):
            if keep:
                batch.keep(keep)
            else:
                batch.rows = []
                if batch is self.batch:
                    self.batch = None
