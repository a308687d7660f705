"""The reference server's per-request log line with the client's W3C trace id (``traceparent``).

One DEBUG line per streamed request on the ``harness.server.requests`` logger (shown with
``harness serve --log-level debug``)::

    request 3f2a...-... trace 3f2a9c...e1 status=done events=64 first_token_ms=40.3 total_ms=1001.8

``trace`` is the trace id of the request's ``traceparent`` header ("-" without one; see
harness.client.tracecontext: the harness derives it from the request id, so records, this log
and the ``--trace-file`` join). Times are the server's own, from the request's arrival
(``REQUEST_ARRIVAL_NS``, taken when the ASGI app was called) to the write of the first token
event (``first_token_ms``) and to the end of the response (``total_ms``), in ms.
``status`` is ``done`` (the body ended), ``disconnected`` (the client went away) or ``failed``.
"""

from __future__ import annotations

import logging

from harness.client.tracecontext import parse_traceparent

log = logging.getLogger("harness.server.requests")

_HEADER = b"traceparent"


def trace_id_from_scope(scope: dict) -> str | None:
    """The trace id of the request's ``traceparent`` header, or None (absent or invalid)."""
    for name, value in scope.get("headers") or ():
        if name == _HEADER:
            parsed = parse_traceparent(value.decode("latin-1"))
            return parsed[0] if parsed else None
    return None


def log_request(request_id: str, trace_id: str | None, arrival_ns: int, first_ns: int, end_ns: int,
                events: int, status: str) -> None:
    """Write the request's line (see the module docstring) when DEBUG is enabled."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    first = f"{(first_ns - arrival_ns) / 1e6:.1f}" if first_ns and arrival_ns else "-"
    total = f"{(end_ns - arrival_ns) / 1e6:.1f}" if arrival_ns else "-"
    log.debug("request %s trace %s status=%s events=%d first_token_ms=%s total_ms=%s",
              request_id, trace_id or "-", status, events, first, total)
