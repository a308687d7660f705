"""The one SSE timing loop: server-sent events from a line reader, each stamped on arrival.

:func:`iter_events` pulls complete lines (bytes, ``\\n`` included) from ``readline`` and yields
``(t_ns, data, event)`` per dispatched event:

- ``t_ns`` is ``time.monotonic_ns()`` taken when the event's first ``data:`` line arrived - never
  after a block of events was buffered (the transport returns each line as soon as its bytes are
  in);
- ``data`` is the event's data as bytes (multi-line ``data:`` fields joined by ``\\n``, per the SSE
  spec), so UTF-8 is decoded per complete event (``json.loads`` accepts bytes), never across a
  read boundary;
- ``event`` is the ``event:`` field's value (bytes) or ``None``.

Framing handled: ``\\n`` and ``\\r\\n`` line ends (a lone ``\\r`` as line end is not supported;
no LLM server sends it), ``data:`` with or without the space after the colon, comment lines
(``:`` keep-alives) ignored, ``id:``/``retry:``/unknown fields ignored, an event dispatched on
its blank line. A last line without ``\\n`` (the connection ended mid-line) and an event without
its blank line at the end of the body are discarded, as the SSE spec says: the protocol adapters
then see no final event and classify the request as incomplete.

The per-line path is kept minimal (one ``readline`` call, a length test, one ``startswith``, one
slice per data line, one clock read per event) because its cost is part of the client's per-token
cost budget (<= 1.5x a bare readline loop).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

Event = tuple[int, bytes, bytes | None]


def iter_events(readline: Callable[[], bytes], clock: Callable[[], int] = time.monotonic_ns) -> Iterator[Event]:
    """Yield ``(t_ns, data, event_name)`` for each SSE event read from ``readline``.

    ``readline()`` returns one line with its ``\\n``, a partial line at the end of the body, or
    ``b""`` at the end. Exceptions raised by ``readline`` (timeouts, resets) propagate.
    """
    data: bytes | None = None
    event: bytes | None = None
    t = 0
    while True:
        line = readline()
        n = len(line)
        if n == 0 or line[-1] != 10:  # end of body, or a truncated last line
            return
        if n <= 2 and (n == 1 or line[0] == 13):  # blank line ("\n" or "\r\n"): dispatch
            if data is not None:
                yield t, data, event
                data = None
            event = None
            continue
        if line.startswith(b"data:"):
            value = line[(6 if line[5] == 32 else 5) : (-2 if line[-2] == 13 else -1)]
            if data is None:
                t = clock()
                data = value
            else:
                data = data + b"\n" + value
            continue
        if line[0] == 58:  # ":" comment / keep-alive
            continue
        name, sep, value = line.rstrip(b"\r\n").partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"event":
            event = value
        elif name == b"data":  # "data" without a colon: an empty data line
            if data is None:
                t = clock()
                data = value
            else:
                data = data + b"\n" + value
        # id, retry and unknown fields carry nothing the harness times
