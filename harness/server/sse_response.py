"""SSE framing and the lean streaming response.

Framing (axum 0.7 ``Event::json_data``): ``data: <one-line JSON>\\n\\n``; keep-alive comment
``:\\n\\n`` after :data:`~harness.server.config.KEEPALIVE_S` seconds without an event (the timer
restarts after every event). JSON is written by hand for the per-token events (no pydantic,
no dict building): strings through the C string encoder, floats with ``repr``, non-finite
floats as ``null`` (as serde_json writes f32 NaN/inf).

:class:`SSEResponse` is a raw ASGI response (a Starlette ``Response`` subclass so FastAPI routes
can return it): headers go out at once, then each chunk from the body iterator is sent with its
own ASGI ``send``. A watcher task reads ``receive()``; on ``http.disconnect`` it cancels the
response task, so the body iterator's ``finally`` releases the admission permit and cancels the
backend stream immediately.

Per-event cost is kept low: token JSON fragments are cached (:func:`token_json`), and body chunks
go to the server's own ASGI ``send`` (:data:`RAW_SEND`, put in the scope by the application
object) rather than through the framework's per-layer ``send`` wrappers, which only track
whether the response started (the start message still goes through them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from harness.server.backends.base import REQUEST_ARRIVAL_NS, TokenInfo
from harness.server.request_log import log_request, trace_id_from_scope
from harness.server.trace import TokenTrace

encode_str: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]
KEEPALIVE = b":\n\n"
#: the first headers of every SSE answer
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
#: scope key holding the ASGI server's ``send`` (set by ``harness.server.app``'s application)
RAW_SEND = "harness.raw_send"
_TOKEN_CACHE: dict[tuple, str] = {}
_TOKEN_CACHE_MAX = 1 << 16


def data_event(payload: str) -> bytes:
    """``data: <payload>\\n\\n`` as bytes."""
    return f"data: {payload}\n\n".encode()


def dumps(obj: Any) -> str:
    """Compact one-line JSON (non-ASCII kept as UTF-8, like serde_json)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def num(v: float | None) -> str:
    """A JSON number, or ``null`` for None/NaN/inf."""
    if v is None or not math.isfinite(v):
        return "null"
    return repr(float(v))


def token_json(t: TokenInfo) -> str:
    """``{"id","text","logprob","special"}`` as TGI's ``Token`` (cached by value: a simulated or
    greedy stream repeats the same few tokens; the cache is emptied when it holds 65,536)."""
    key = (t.id, t.text, t.logprob, t.special)
    s = _TOKEN_CACHE.get(key)
    if s is None:
        if len(_TOKEN_CACHE) >= _TOKEN_CACHE_MAX:
            _TOKEN_CACHE.clear()
        s = _TOKEN_CACHE[key] = (
            f'{{"id":{t.id},"text":{encode_str(t.text)},"logprob":{num(t.logprob)},'
            f'"special":{"true" if t.special else "false"}}}')
    return s


class _State:
    __slots__ = ("last", "disconnected")

    def __init__(self, now: float) -> None:
        self.last = now
        self.disconnected = False


async def _watch_disconnect(receive: Receive, task: asyncio.Task, state: _State) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            state.disconnected = True
            task.cancel()
            return


@contextlib.asynccontextmanager
async def cancel_on_disconnect(receive: Receive) -> AsyncIterator[_State]:
    """Run the body of the ``async with`` until the client disconnects (then it is cancelled and
    the exit swallows that cancellation; ``state.disconnected`` tells). For non-stream routes,
    call after the request body was read."""
    task = asyncio.current_task()
    assert task is not None
    state = _State(0.0)
    watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, task, state))
    try:
        yield state
    except asyncio.CancelledError:
        if not state.disconnected:
            raise
        task.uncancel()
    finally:
        watcher.cancel()


#: A body chunk and its token-event index (0: not a token event, e.g. an error or [DONE]).
Chunk = tuple[bytes, int]


class SSEResponse(Response):
    """``text/event-stream`` response sending each chunk of ``body`` as soon as it is produced."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[Chunk], headers: dict[str, str], *, keepalive_s: float,
                 trace: TokenTrace | None = None, request_id: str = "") -> None:
        self.body_iter = body
        self.status_code = 200
        self.background = None
        self.raw_headers = [*SSE_HEADERS, *((k.encode(), v.encode()) for k, v in headers.items())]
        self.keepalive_s = keepalive_s
        self.trace = trace
        self.request_id = request_id

    async def _keepalive(self, send: Send, state: _State) -> None:
        loop = asyncio.get_running_loop()
        ka = self.keepalive_s
        while True:
            wait = state.last + ka - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            state.last = loop.time()
            await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        state = _State(loop.time())
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        watcher = loop.create_task(_watch_disconnect(receive, task, state))
        keepalive = loop.create_task(self._keepalive(send, state))
        trace = self.trace
        trace_id = trace_id_from_scope(scope)  # the client's traceparent: logged and in the trace file
        prefix = TokenTrace.line_prefix(self.request_id, trace_id) if trace else ""
        events, first_ns, status = 0, 0, "failed"
        raw_send: Send = scope.get(RAW_SEND, send)
        record = trace.record if trace is not None else None
        now_ns = time.monotonic_ns
        loop_time = loop.time
        try:
            async for payload, index in self.body_iter:
                await raw_send({"type": "http.response.body", "body": payload, "more_body": True})
                if index and record is not None:
                    record(prefix, index, now_ns())
                if index:
                    events = index
                    if not first_ns:
                        first_ns = now_ns()
                state.last = loop_time()
            keepalive.cancel()
            await raw_send({"type": "http.response.body", "body": b"", "more_body": False})
            status = "done"
        except asyncio.CancelledError:
            if not state.disconnected:
                raise
            task.uncancel()
            status = "disconnected"
        except OSError:  # the socket went away under a send
            status = "disconnected"
        finally:
            log_request(self.request_id, trace_id, REQUEST_ARRIVAL_NS.get() or 0, first_ns, now_ns(), events, status)
            watcher.cancel()
            keepalive.cancel()
            with contextlib.suppress(Exception):
                await self.body_iter.aclose()  # type: ignore[attr-defined]
