"""``--trace-file PATH``: the server-side ground truth of token write times, as JSONL.

One line per token event of every request (native and OpenAI streams; non-streaming responses
have no per-token writes and are not traced)::

    {"request_id": "<id>", "index": <n>, "t_ns": <CLOCK_MONOTONIC ns>}
    {"request_id": "<id>", "trace_id": "<32 hex>", "index": <n>, "t_ns": <ns>}  (with a traceparent)

``index`` counts the request's token events from 1 (the native ``index``). ``request_id`` is the
client's ``x-request-id`` header when given, else an id the server made; either way it is echoed
in the response's ``x-request-id`` header.

What "written" means: ``t_ns`` is ``time.monotonic_ns()`` read right after the event's bytes were
handed to the connection: on the lean path of the simulated backend (:mod:`harness.server.lean`)
right after the ``transport.write`` of its chunk, else right after the ASGI ``send`` of that
event's body chunk returned. With uvicorn that call has handed the bytes (chunk header,
event, CRLF) to the transport, which writes them to the socket at once (one ``send`` syscall)
unless the kernel buffer is full, in which case they wait in the transport buffer and ``send``
waits for it to drain. So the stamp is taken after the bytes reached the kernel (or the transport
buffer under backpressure; the lean path writes no token while the transport is over its
high-water mark and waits for it to drain first), before any network transit. CLOCK_MONOTONIC is shared by all
processes on one host, so client stamps (``time.monotonic_ns``/``perf_counter_ns``) compare.

Lines are buffered in memory, written by a worker thread every 0.1 s and at shutdown, so the
event loop never blocks on the disk. The short interval keeps each flush small: at 20k tokens/s a
1 s flush joined ~1.4 MB on the loop and wrote it on the server's core, holding every stream for
4-11 ms once a second; 0.1 s batches cost a tenth of that each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from pathlib import Path

FLUSH_INTERVAL_S = 0.1


class TokenTrace:
    """Buffered JSONL writer of token write times."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._buf: list[str] = []
        self._task: asyncio.Task | None = None
        self._lock = threading.Lock()

    @staticmethod
    def line_prefix(request_id: str, trace_id: str | None = None) -> str:
        """The constant start of a request's lines (computed once per request); ``trace_id`` is the
        client's W3C trace id (harness.server.request_log), written when the request had one."""
        tid = f'"trace_id":{json.dumps(trace_id)},' if trace_id else ""
        return f'{{"request_id":{json.dumps(request_id)},{tid}"index":'

    def record(self, prefix: str, index: int, t_ns: int) -> None:
        """Remember one token event (called right after its bytes were sent)."""
        self._buf.append(f'{prefix}{index},"t_ns":{t_ns}}}\n')

    def _take(self) -> str:
        buf, self._buf = self._buf, []
        return "".join(buf)

    def _write(self, data: str) -> None:
        if data:
            with self._lock:
                self._fh.write(data)
                self._fh.flush()

    def start(self) -> None:
        """Start the flusher (every ``FLUSH_INTERVAL_S``) on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._flusher())

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            data = self._take()
            if data:
                await loop.run_in_executor(None, self._write, data)

    async def close(self) -> None:
        """Stop the flusher and write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._write(self._take())
        self._fh.close()
