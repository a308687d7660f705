"""The asyncio side of a request: a :class:`GenerationStream` fed from the scheduler thread.

The scheduler collects the outputs of one step in an :class:`Outbox` and posts them to each event
loop with a single ``loop.call_soon_threadsafe`` per step; on the loop they go into each stream's
unbounded ``asyncio.Queue``. The loop never waits on the scheduler and the scheduler never waits on
the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable

from harness.server.backends.base import GenerationError, GenerationStream, StepOutput

Item = StepOutput | GenerationError


class EngineStream(GenerationStream):
    """One request's outputs; ``cancel()`` flags the request so the scheduler drops its row."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_cancel: Callable[[], None]) -> None:
        self.loop = loop
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._done = False
        self.cancelled = threading.Event()
        self._on_cancel = on_cancel

    async def __anext__(self) -> StepOutput:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, GenerationError):
            self._done = True
            raise item
        if item.finish_reason is not None:
            self._done = True
        return item

    def cancel(self) -> None:
        if not self.cancelled.is_set():
            self.cancelled.set()
            self._done = True
            self._on_cancel()

    def _put(self, item: Item) -> None:
        self._queue.put_nowait(item)


def _deliver(items: list[tuple[EngineStream, Item]]) -> None:
    for stream, item in items:
        stream._put(item)


class Outbox:
    """Outputs of one scheduler step, posted to the event loop(s) in one call each."""

    def __init__(self) -> None:
        self._items: dict[asyncio.AbstractEventLoop, list[tuple[EngineStream, Item]]] = defaultdict(list)

    def put(self, stream: EngineStream, item: Item) -> None:
        if not stream.cancelled.is_set():
            self._items[stream.loop].append((stream, item))

    def flush(self) -> None:
        for loop, items in self._items.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # loop closed: nobody is listening any more
                pass
        self._items.clear()
