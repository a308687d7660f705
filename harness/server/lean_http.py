"""uvicorn's httptools HTTP/1.1 protocol, answering overloaded requests before any ASGI task exists.

uvicorn builds, per request, the ASGI scope, a request-response cycle with its ``asyncio.Event`` and
one task running the application, which then reads the body through ``receive()``; for a refused
request that machinery costs more than the answer. :class:`LeanHttpToolsProtocol` decides in the
parser's callbacks instead. When the headers of a request are complete it checks, cheaply, that the
request is one the lean path would refuse (:class:`~harness.server.lean.LeanPath`; the module
docstring of :mod:`harness.server.lean` has the rules): ``POST`` to exactly ``/generate``,
``/generate_stream`` or ``/`` (no query string), every admission permit held (or the server
closing), no ``--api-key``, a ``content-length`` within ``--payload-limit`` (or a chunked body),
no ``Expect: 100-continue``, no upgrade, no earlier response still in progress on the connection,
no access log and no uvicorn ``limit_concurrency``. Then it keeps the body itself (no cycle, no
task) and, when the message is complete and the server is still full,
:func:`~harness.server.lean.overload_answer` checks the body and gives the answer, written whole
with :func:`~harness.server.lean.wire_bytes` (the bytes uvicorn's ``send`` would write; the
response is then complete as there: keep-alive timer, ``connection: close`` and close when the
connection is not kept alive, the next pipelined request). Whenever it cannot answer (the body
needs the framework's checks, a permit came free meanwhile, the body grew past the limit) it
creates the cycle and task just as uvicorn would have, hands them the body read so far, and the
request goes the ASGI way (where the lean path or the framework answers it). So the answers and
the admission rule are those of the ASGI path; only the work per refusal is smaller.

:func:`protocol_class` is what ``harness serve`` passes to uvicorn as ``http=``: this class when
the lean path is on (``HARNESS_LEAN``, default 1) and uvicorn's httptools protocol imports, else
``"httptools"``. With another server, or ``HARNESS_LEAN=0``, nothing here runs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from harness.server.lean import OVERLOAD_ROUTES, log_overloaded_stream, overload_answer, wire_bytes
from harness.server.request_log import log as _request_log

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn and httptools are server dependencies
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

#: raw request targets answered here -> the route path (a target with a query string or
#: percent-escapes goes the ASGI way, which answers it the same)
_TARGETS: dict[bytes, str] = {path.encode(): path for path in OVERLOAD_ROUTES}


def protocol_class(app: Any) -> Any:
    """uvicorn's ``http=`` for ``app``: :class:`LeanHttpToolsProtocol` when the app has its lean path
    on and uvicorn's httptools protocol imports, else ``"httptools"``."""
    return LeanHttpToolsProtocol if getattr(app, "lean", None) is not None and HttpToolsProtocol is not None \
        else "httptools"


if HttpToolsProtocol is not None:

    class LeanHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with overloaded answers in the parser callbacks (module docstring).

        Two more savings per request, same behaviour: the ASGI scope is built when the headers are
        complete and only for a request that goes the ASGI way; the keep-alive timeout is one timer
        per connection that re-checks the idle deadline when it fires, instead of a timer armed
        after every response and cancelled by the next request's first bytes."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # the application object as given to uvicorn (config.loaded_app may wrap it in middleware)
            lean = getattr(self.config.app, "lean", None)
            ok = lean is not None and self.limit_concurrency is None and not self.access_log
            self._svc = lean.svc if ok else None
            self._route: str | None = None  #: route of the request being answered here, else None
            self._body: list[bytes] = []
            self._size = 0
            self._arrival_ns: int | None = None
            self._idle_due = 0.0  #: loop time the idle connection closes at; 0.0 while a request is in progress

        # -- per request -------------------------------------------------------------------------
        def on_message_begin(self) -> None:
            self.url = b""
            self.expect_100_continue = False
            self.headers = []

        def _build_scope(self) -> None:
            """uvicorn's scope for the request whose URL and headers were parsed."""
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()
            self.url, self.headers, self.expect_100_continue = url, headers, expect
            self.scope["headers"] = headers

        def on_headers_complete(self) -> None:
            svc = self._svc
            if svc is not None:
                route = _TARGETS.get(self.url)
                if route is not None and svc.admission.full and self._refusable(svc):
                    self._route = route
                    self._body = []
                    self._size = 0
                    self._arrival_ns = time.monotonic_ns() if _logging_requests() else None
                    return
            self._build_scope()
            super().on_headers_complete()

        def _refusable(self, svc: Any) -> bool:
            parser = self.parser
            if parser.get_method() != b"POST" or svc.cfg.api_key is not None:
                return False
            if self.expect_100_continue or parser.should_upgrade() or self.flow.write_paused:
                return False
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                return False  # pipelined behind a response in progress: answers stay in order
            for name, value in self.headers:
                if name == b"content-length":
                    return value.isdigit() and int(value) <= svc.cfg.payload_limit
            return True

        def on_body(self, body: bytes) -> None:
            if self._route is None:
                super().on_body(body)
                return
            self._body.append(body)
            self._size += len(body)
            if self._size > self._svc.cfg.payload_limit:  # type: ignore[union-attr]
                self._to_asgi(more_body=True)

        def on_message_complete(self) -> None:
            route = self._route
            if route is None:
                super().on_message_complete()
                return
            svc = self._svc
            answer = None
            if svc.admission.full:  # type: ignore[union-attr]
                rid = None
                for name, value in self.headers:
                    if name == b"x-request-id":
                        rid = value
                        break
                body = self._body
                answer = overload_answer(svc, route, body[0] if len(body) == 1 else b"".join(body), rid)
            if answer is None:
                self._to_asgi(more_body=False)
                return
            self._route = None
            self._body = []
            status, headers, body, chunked, rid_s = answer
            parser = self.parser
            keep_alive = parser.should_keep_alive() and parser.get_http_version() != "1.0"
            self.transport.write(wire_bytes(status, self.server_state.default_headers, headers, body, chunked,
                                            keep_alive))
            if not keep_alive:
                self.transport.close()
            self.on_response_complete()
            if chunked and self._arrival_ns is not None:
                log_overloaded_stream(rid_s, {"headers": self.headers}, self._arrival_ns)

        def _to_asgi(self, more_body: bool) -> None:
            """Create the cycle and task as uvicorn does, with the body kept so far."""
            body = b"".join(self._body)
            self._route = None
            self._body = []
            self._build_scope()
            super().on_headers_complete()
            cycle = self.cycle
            cycle.body += body
            if more_body:
                return
            cycle.more_body = False
            cycle.message_event.set()

        def shutdown(self) -> None:
            if self._route is not None:  # a body still arriving: uvicorn's cycle answers, then closes
                self._to_asgi(more_body=True)
            super().shutdown()

        # -- keep-alive timeout -------------------------------------------------------------------
        def _unset_keepalive_if_required(self) -> None:
            self._idle_due = 0.0  # the armed timer, if any, finds this and waits for the next response

        def on_response_complete(self) -> None:
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self._idle_due = 0.0
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
                return
            loop = self.loop
            self._idle_due = loop.time() + self.timeout_keep_alive
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = loop.call_later(self.timeout_keep_alive, self._keepalive_due)

        def _keepalive_due(self) -> None:
            self.timeout_keep_alive_task = None
            due = self._idle_due
            if due == 0.0:
                return  # a request in progress: armed again when its response is complete
            left = due - self.loop.time()
            if left > 0:
                self.timeout_keep_alive_task = self.loop.call_later(left, self._keepalive_due)
                return
            self.timeout_keep_alive_handler()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None
            super().connection_lost(exc)


    def _logging_requests() -> bool:
        return _request_log.isEnabledFor(logging.DEBUG)

else:  # pragma: no cover
    LeanHttpToolsProtocol = None  # type: ignore[assignment,misc]
