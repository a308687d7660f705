"""The real-model backend: a transformers causal LM behind the continuous-batching engine.

``start()`` resolves and loads the model (``harness.server.models``) off the event loop, warms it
up and starts the scheduler thread. ``submit()`` queues a request and returns its stream at once.
``prefix_cache_mb`` > 0 gives the engine a :class:`~harness.server.engine.prefix_cache.PrefixCache`
of that many MiB (``--prefix-cache-mb``; ``--no-prefix-cache`` passes 0). Tools are not supported
(``supports_tools`` stays False: the chat route answers 422 ``tool_error``): that needs a tool
grammar (constrained decoding), which this engine does not have.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from typing import Any

from harness.server.backends.base import (
    Backend,
    EngineStats,
    GenerationError,
    GenerationStream,
    SamplingParams,
)


class TransformersBackend(Backend):
    """``--model`` = smollm2 | tiny | local dir | hub id in the HF cache | file.gguf."""

    def __init__(self, model: str, *, dtype: str = "auto", device: str = "auto",
                 max_batch_size: int | None = None, max_batch_prefill_tokens: int = 4096,
                 waiting_served_ratio: float = 1.2, max_waiting_tokens: int = 20,
                 prefix_cache_mb: float = 512.0) -> None:
        from harness.server.engine.policy import Policy
        from harness.server.models import preflight

        preflight(model, dtype=dtype, device=device)  # ModelLoadError (a ValueError) for bad arguments
        self.model_name = model
        self.model_id = model
        self._dtype_arg = dtype
        self._device_arg = device
        self.policy = Policy(max_batch_size, max_batch_prefill_tokens, waiting_served_ratio, max_waiting_tokens)
        self.prefix_cache_bytes = int(prefix_cache_mb * 2**20)  #: 0: no prefix cache
        self.loaded: Any = None
        self.engine: Any = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model, warm it up and build the engine (blocking, on the engine thread)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from harness.server.engine.prefix_cache import PrefixCache
        from harness.server.engine.scheduler import Engine
        from harness.server.engine.warmup import warm_up
        from harness.server.models import load_model

        lm = load_model(self.model_name, dtype=self._dtype_arg, device=self._device_arg)
        self.loaded = lm
        self.model_id = lm.model_id
        self.max_position_embeddings = lm.max_position_embeddings
        self.device = str(lm.device)
        self.dtype = lm.dtype_name
        warm_up(lm.model, lm.device, self.tokenize("Hello, warm-up prompt for the engine.") or [0])
        cache = PrefixCache(self.prefix_cache_bytes) if self.prefix_cache_bytes > 0 else None
        self.engine = Engine(lm.model, lm.tokenizer, lm.device, lm.eos_token_ids, self.policy, cache)

    async def start(self) -> None:
        """Load, warm up and run the scheduler, all on one thread (see ``Engine.run``)."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def settle(exc: BaseException | None) -> None:
            if not ready.done():
                ready.set_result(None) if exc is None else ready.set_exception(exc)

        def engine_thread() -> None:
            try:
                self.load()
            except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller
                loop.call_soon_threadsafe(settle, exc)
                return
            loop.call_soon_threadsafe(settle, None)
            self.engine.run()

        self._thread = threading.Thread(target=engine_thread, name="engine", daemon=True)
        self._thread.start()
        await ready

    async def shutdown(self) -> None:
        if self.engine is not None:
            await asyncio.to_thread(self.engine.stop)

    def healthy(self) -> bool:
        """Loaded and the engine thread is alive."""
        return self.engine is not None and self._thread is not None and self._thread.is_alive()

    # ---- text -----------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        return list(self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.loaded.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        tok = self.loaded.tokenizer
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"the model {self.model_id} has no chat template")
        try:
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja2 errors, raise_exception() in templates, bad message shapes
            raise ValueError(f"chat template error: {exc}") from None

    # ---- generation -----------------------------------------------------------------------------
    def submit(self, input_ids: list[int], params: SamplingParams) -> GenerationStream:
        from harness.server.engine.request import Request
        from harness.server.engine.sampling import RowSampler, make_generator
        from harness.server.engine.stream import EngineStream

        if self.engine is None:
            raise GenerationError("the model is not loaded")
        if params.do_sample and params.seed is None:
            params.seed = random.getrandbits(64)
        generator = make_generator(params.seed, self.loaded.device) if params.do_sample else None
        stream = EngineStream(asyncio.get_running_loop(), self.engine.wake)
        req = Request(list(input_ids), params, stream, self.loaded.tokenizer,
                      RowSampler(params, list(input_ids), generator))
        if not self.engine.enqueue(req):
            stream._put(GenerationError("the server is shutting down"))
        return stream

    def stats(self) -> EngineStats:
        return self.engine.stats() if self.engine is not None else EngineStats()
