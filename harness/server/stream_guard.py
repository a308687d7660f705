"""The one guarded SSE body of every streaming route: admission, the error event, permits, cancellation.

Every streaming route (``/generate_stream``, ``/`` with ``stream``, ``/v1/chat/completions`` and
``/v1/completions`` with ``stream``) answers 200 first and then streams; what can go wrong after that is
handled here once:

- a request refused after the headers (:class:`~harness.server.infer_errors.InferError`) is counted in the
  server's failure metrics and answered with the route's error event;
- a client that goes away (``CancelledError``/``GeneratorExit``) is counted as ``dropped``;
- the body generator is closed at once (``aclose``), so the backend stream under it is cancelled now and
  not when the garbage collector finalises it, and the admission permits are released afterwards, on
  every path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar

from harness.server.infer_errors import InferError

T = TypeVar("T")
Chunk = tuple[bytes, int]


async def guarded_stream(svc: Any, admit: Callable[[], tuple[list, T]],
                         body: Callable[[T], AsyncGenerator[Chunk, None]],
                         error_chunk: Callable[[InferError], Chunk],
                         tail: Chunk | None = None) -> AsyncIterator[Chunk]:
    """Chunks of ``body(admitted)`` after ``permits, admitted = admit()``, then ``tail`` (e.g. ``[DONE]``).

    ``body`` must close what it iterates when it is closed (``contextlib.aclosing`` around
    ``svc.steps(...)``), so closing it here cancels the backend stream at once.
    """
    permits: list = []
    inner: AsyncGenerator[Chunk, None] | None = None
    try:
        permits, admitted = admit()
        inner = body(admitted)
        async for chunk in inner:
            yield chunk
    except InferError as exc:
        svc.metrics.failure(exc.metric)
        yield error_chunk(exc)
    except (asyncio.CancelledError, GeneratorExit):
        svc.metrics.failure("dropped")
        raise
    finally:
        if inner is not None:
            await inner.aclose()
        for permit in permits:
            permit.release()
    if tail is not None:
        yield tail
