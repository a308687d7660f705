"""The lean path: generation requests answered before FastAPI routing.

Two parts, both entered from the application object (``harness.server.app``) before the framework
sees the request, both falling back to the framework routes (the request body replayed) whenever
they cannot give exactly the answer those would:

**Overloaded answers first** (every backend). A ``POST`` to ``/generate``, ``/generate_stream`` or
``/`` while every admission permit is held (or the server is closing) is answered from pre-built
bytes, written whole in one ``transport.write`` where uvicorn's httptools protocol serves it: ``/generate`` and ``/`` without ``stream``:
429 ``{"error":"Model is overloaded","error_type":"overloaded"}``; ``/generate_stream`` and ``/``
with ``stream``: 200 and that object as one SSE event. The body is only checked to be a JSON object
whose ``inputs`` is a string and whose parameters ask nothing that TGI refuses before the permit
(``best_of`` != 1, streamed ``decoder_input_details``); anything else, the OpenAI routes (their
stream headers need the chat template's prompt), every request of a server with ``--api-key`` and
bodies over ``--payload-limit`` go the framework way. So a request that is valid JSON but not a valid
``GenerateRequest`` (e.g. ``"max_new_tokens": "x"``) is answered "overloaded" while the server is
full, where the framework path answers 422: TGI's own order differs there (its JSON extractor runs
first); the admission check first is what keeps a storm of refusals cheap. Under ``harness serve``
most refusals never reach this module's ASGI entry: :mod:`harness.server.lean_http` answers them
in uvicorn's parser callbacks with the same two functions (:func:`overload_answer`,
:func:`wire_bytes`), before any ASGI task exists.

**Token streams of the simulated backend.** ``/generate_stream``, ``/`` with ``stream``,
``/v1/chat/completions`` with ``stream`` and ``/v1/completions`` with ``stream`` and one prompt are
parsed, admitted and validated with the same functions as the framework routes (a request those
refuse before the 200, and every non-stream request, goes the framework way); then the response
headers go out through the ASGI server's ``send`` and the stream is handed to the backend's
:class:`~harness.server.backends.simulated.Ticker` as a callback. When a token is due, the ticker's
one loop callback calls :meth:`LeanStream.on_due` for every stream due: it computes the token
(:meth:`SimulatedStream.step`), formats the event with the route's own formatter
(:func:`~harness.server.native_routes.native_token_event`,
:class:`~harness.server.openai_routes.ChatStreamFormat`, :func:`~harness.server.openai_routes.completion_event`),
writes it in HTTP/1.1 chunked framing straight to the connection's transport (one ``write``), stamps
the trace right after that write, and registers the stream's next due time. No task wakes per
token, no async generator chain, no ASGI ``send`` per token. Keep-alive comments are due times on
the same ticker. The request's own task waits in ``receive()`` for the client going away (then the
stream is cancelled and its permit released at once) or for the ticker's signal that the stream
ended (then it sends the chunked terminator through the ASGI server, which finishes the response).
Backpressure: when the transport's buffer is over its high-water mark the ticker hands the stream
to its task, which waits for the buffer to drain (as the ASGI server's ``send`` does) before the next
token is written.

Needs the ASGI server's ``send`` to be a method of uvicorn's request-response cycle (``transport``,
``flow``, ``message_event``, ``disconnected``: both of uvicorn's HTTP/1.1 protocols); with another
server every request goes the framework way. Wire bytes are those of the framework path: same
header list, same events (one formatting function), same chunk framing as uvicorn's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic_core import from_json
from starlette.types import Receive, Scope, Send

from harness.server import httputil
from harness.server.admission import Permit
from harness.server.backends.base import REQUEST_ARRIVAL_NS, GenerationError, StepOutput
from harness.server.backends.simulated import EARLY_S, SimulatedBackend, SimulatedStream
from harness.server.generation import Service, Timing
from harness.server.infer_errors import GenerationFailed, IncompleteGenerationStream, InferError, Overloaded
from harness.server.native_routes import native_error_chunk, native_token_event, stream_header_list
from harness.server.openai_routes import (
    DONE,
    ChatStreamFormat,
    _model_name,
    chat_parameters,
    chat_prompt,
    completion_event,
    completion_parameters,
    openai_error_chunk,
)
from harness.server.request_log import log as _request_log
from harness.server.request_log import log_request, trace_id_from_scope
from harness.server.schemas import (
    ChatRequest,
    CompatGenerateRequest,
    CompletionRequest,
    GenerateParameters,
    GenerateRequest,
)
from harness.server.sse_response import KEEPALIVE, SSE_HEADERS, data_event, dumps, encode_str
from harness.server.trace import TokenTrace
from harness.server.validation import ValidRequest, default_parameters, parse_body

#: formats token event ``index`` (from 1) of a stream; the chunk after its last token event (or None)
Event = Callable[[int, StepOutput], bytes]
AfterLast = Callable[[StepOutput], bytes | None]

_monotonic = time.monotonic
_now_ns = time.monotonic_ns
#: routes whose overloaded answer is pre-built: path -> (stream answer?, or None: "stream" key decides)
OVERLOAD_ROUTES: dict[str, bool | None] = {"/generate": False, "/generate_stream": True, "/": None}
_GENERATION_ROUTES = frozenset(("/generate", "/generate_stream", "/", "/v1/chat/completions", "/v1/completions"))
_KEEPALIVE_CHUNK = b"%x\r\n%b\r\n" % (len(KEEPALIVE), KEEPALIVE)
_BODY_END = {"type": "http.response.body", "body": b"", "more_body": False}


def _overloaded_body() -> bytes:
    return dumps(Overloaded().body()).encode()


_OVERLOADED_JSON = _overloaded_body()
_OVERLOADED_EVENT = data_event(_OVERLOADED_JSON.decode())
_OVERLOADED_429_HEADERS = [(b"content-length", str(len(_OVERLOADED_JSON)).encode()),
                           (b"content-type", b"application/json")]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return v
    return None


def _sse_headers(svc: Service, inputs: str, rid: str) -> list[tuple[bytes, bytes]]:
    """The header list of the framework's :class:`~harness.server.sse_response.SSEResponse`."""
    return [*SSE_HEADERS, *stream_header_list(svc, inputs, rid)]


def _request_id(scope: Scope) -> str:
    """As :func:`harness.server.httputil.request_id` (same counter), from the raw headers."""
    return _request_id_of(_header(scope, b"x-request-id"))


def _request_id_of(rid: bytes | None) -> str:
    """The request id from the ``x-request-id`` header's value, or the next generated one."""
    return rid.decode("latin-1")[:200] if rid else f"{httputil._PREFIX}{next(httputil._ids):x}"


def _replay(body: bytes, more_body: bool, receive: Receive) -> Receive:
    """``receive`` that first gives back the body already read."""
    pending = [{"type": "http.request", "body": body, "more_body": more_body}]

    async def replayed() -> dict:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


try:  # the ASGI server the reference server runs on (harness serve: uvicorn, http="httptools")
    from uvicorn.protocols.http import httptools_impl as _httptools
except ImportError:  # pragma: no cover - uvicorn is a server dependency
    _httptools = None


def wire_bytes(status: int, default_headers: list[tuple[bytes, bytes]], headers: list[tuple[bytes, bytes]],
               body: bytes, chunked: bool, keep_alive: bool) -> bytes:
    """A whole response as uvicorn's httptools ``send`` writes it for a start message with
    ``headers`` and one last body message: status line, its default headers (``date``, ``server``)
    first, ``connection: close`` when the connection is not kept alive, the chunked framing."""
    content = [_httptools.STATUS_LINE[status]]
    for name, value in default_headers:
        content += (name.lower(), b": ", value, b"\r\n")
    for name, value in headers:
        content += (name, b": ", value, b"\r\n")
    if not keep_alive:
        content.append(b"connection: close\r\n")
    if chunked:
        content.append(b"transfer-encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(body), body))
    else:
        content += (b"\r\n", body)
    return b"".join(content)


def overload_answer(svc: Service, path: str, raw: bytes, rid_header: bytes | None,
                    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool, str] | None:
    """The pre-built overloaded answer to ``raw`` (the whole body) on ``path`` (a key of
    :data:`OVERLOAD_ROUTES`) while the server is full: ``(status, headers, body, chunked, request
    id)``, the request counted in the metrics; None (nothing counted) when the body needs the
    framework's checks (module docstring)."""
    try:
        body = from_json(raw)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
        return None
    stream = OVERLOAD_ROUTES[path]
    if stream is None:
        stream = body.get("stream") is True
        if body.get("stream") not in (None, True, False):
            return None
    params = body.get("parameters")
    if params is not None:
        if not isinstance(params, dict) or params.get("best_of") not in (None, 1):
            return None
        if stream and params.get("decoder_input_details") not in (None, False):
            return None
    rid_s = _request_id_of(rid_header)
    svc.metrics.count_request()
    svc.metrics.failure("overloaded")
    if not stream:
        return 429, [(b"x-request-id", rid_s.encode("latin-1")), *_OVERLOADED_429_HEADERS], _OVERLOADED_JSON, False, rid_s
    return 200, _sse_headers(svc, body["inputs"], rid_s), _OVERLOADED_EVENT, True, rid_s


def log_overloaded_stream(rid: str, scope: Scope, arrival_ns: int | None) -> None:
    """The request log line of an overloaded stream answer (as the framework route's), when on."""
    if _request_log.isEnabledFor(logging.DEBUG):
        now = _now_ns()
        log_request(rid, trace_id_from_scope(scope), arrival_ns or now, 0, now, 0, "done")


def _write_whole(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, chunked: bool) -> bool:
    """Write a whole response in one ``transport.write``, as uvicorn's httptools ``send`` of the
    start message and one last body message would (same bytes: its default headers first,
    ``connection: close`` when the connection is not kept alive, the chunked framing), and mark the
    response complete as that ``send`` does. False (nothing written) where that is not certain."""
    cycle = getattr(send, "__self__", None)
    if (_httptools is None or type(cycle) is not _httptools.RequestResponseCycle or cycle.response_started
            or cycle.access_log or cycle.disconnected or cycle.flow.write_paused or cycle.scope["method"] != "POST"):
        return False
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.transport.write(wire_bytes(status, cycle.default_headers, headers, body, chunked, cycle.keep_alive))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True


def _cycle_of(send: Send) -> Any:
    """uvicorn's request-response cycle behind ``send``, or None (another ASGI server)."""
    cycle = getattr(send, "__self__", None)
    if cycle is None or not all(hasattr(cycle, a) for a in ("transport", "flow", "message_event", "disconnected")):
        return None
    return cycle


class LeanPath:
    """The pre-routing fast paths of one server (module docstring)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.streams = isinstance(svc.backend, SimulatedBackend)

    def wants(self, scope: Scope) -> bool:
        """Whether :meth:`handle` may answer this request (cheap: method and path)."""
        return scope["method"] == "POST" and scope["path"] in _GENERATION_ROUTES

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Answer the request, or return the ``receive`` the framework must use (body replayed)."""
        svc, cfg = self.svc, self.svc.cfg
        path = scope["path"]
        if cfg.api_key is not None:
            return receive  # 401 and its order are the framework's
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > cfg.payload_limit:
            return receive
        full = svc.admission.full
        if not full and not self.streams:
            return receive  # admitted requests without the simulated backend: the framework routes
        if (path == "/generate" and not full) or (full and path not in OVERLOAD_ROUTES):
            return receive
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay(b"".join(parts), True, receive)  # gone mid-body: the framework's way
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > cfg.payload_limit:
                return _replay(b"".join(parts), message.get("more_body", False), receive)
            if not message.get("more_body", False):
                break
        raw = b"".join(parts)
        if full:
            if await self._overloaded(scope, send, path, raw):
                return None
            return _replay(raw, False, receive)
        cycle = _cycle_of(send)
        if cycle is None:
            return _replay(raw, False, receive)
        svc = self.svc
        try:  # an error here is answered by the framework route, as is any non-stream request
            if path == "/v1/chat/completions":
                chat = parse_body(raw, ChatRequest)
                if not chat.stream:
                    return _replay(raw, False, receive)
                p = chat_parameters(svc, chat)
                await self._chat(scope, receive, send, cycle, chat, p, chat_prompt(svc, chat))
                return None
            if path == "/v1/completions":
                comp = parse_body(raw, CompletionRequest)
                if not comp.stream:
                    return _replay(raw, False, receive)
                prompts, p = completion_parameters(svc, comp)
                if len(prompts) != 1:  # several prompts interleave: the framework route merges them
                    return _replay(raw, False, receive)
                await self._completion(scope, receive, send, cycle, comp, prompts[0], p)
                return None
            req = parse_body(raw, GenerateRequest if path == "/generate_stream" else CompatGenerateRequest)
        except InferError:
            return _replay(raw, False, receive)
        if path == "/" and not req.stream:
            return _replay(raw, False, receive)
        await self._native(scope, receive, send, cycle, req, path == "/")
        return None

    async def _overloaded(self, scope: Scope, send: Send, path: str, raw: bytes) -> bool:
        """The pre-built overloaded answer; False when the body needs the framework's checks."""
        answer = overload_answer(self.svc, path, raw, _header(scope, b"x-request-id"))
        if answer is None:
            return False
        status, headers, body, chunked, rid_s = answer
        if not _write_whole(send, status, headers, body, chunked):
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
        if chunked:
            log_overloaded_stream(rid_s, scope, REQUEST_ARRIVAL_NS.get())
        return True

    async def _native(self, scope: Scope, receive: Receive, send: Send, cycle: Any,
                      req: GenerateRequest, compat: bool) -> None:
        svc = self.svc
        svc.metrics.count_request()
        params = req.parameters if req.parameters is not None else default_parameters()

        def admit(timing: Timing) -> tuple[list[Permit], ValidRequest]:
            return svc.admit(req.inputs, params, stream=True, return_full_text_default=compat, timing=timing)

        def formats(valid: ValidRequest) -> tuple[Event, AfterLast | None]:
            return (lambda index, out: native_token_event(valid, index, out)), None

        await self._stream(scope, receive, send, cycle, req.inputs, admit, formats, native_error_chunk, None)

    async def _chat(self, scope: Scope, receive: Receive, send: Send, cycle: Any, req: ChatRequest,
                    p: GenerateParameters, prompt: str) -> None:
        svc = self.svc
        svc.metrics.count_request()
        fmt = ChatStreamFormat(svc, req)

        def admit(timing: Timing) -> tuple[list[Permit], ValidRequest]:
            svc.metrics.count_request()  # TGI counts OpenAI requests twice (as the framework route)
            return svc.admit(prompt, p, stream=True, return_full_text_default=False, timing=timing)

        def formats(valid: ValidRequest) -> tuple[Event, AfterLast | None]:
            n_in = len(valid.input_ids)
            return (lambda index, out: fmt.token(out)), (lambda out: fmt.after_last(out, n_in))

        await self._stream(scope, receive, send, cycle, prompt, admit, formats, openai_error_chunk, DONE)

    async def _completion(self, scope: Scope, receive: Receive, send: Send, cycle: Any, req: CompletionRequest,
                          prompt: str, p: GenerateParameters) -> None:
        svc = self.svc
        svc.metrics.count_request()
        model = encode_str(_model_name(svc, req.model))
        created = int(time.time())

        def admit(timing: Timing) -> tuple[list[Permit], ValidRequest]:
            svc.metrics.count_request()
            return svc.admit(prompt, p, stream=True, return_full_text_default=False, timing=timing)

        def formats(valid: ValidRequest) -> tuple[Event, AfterLast | None]:
            n_in = len(valid.input_ids)
            return (lambda index, out: completion_event(0, out, n_in, created, model)), None

        await self._stream(scope, receive, send, cycle, prompt, admit, formats, openai_error_chunk, DONE)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, cycle: Any, inputs: str,
                      admit: Callable[[Timing], tuple[list[Permit], ValidRequest]],
                      formats: Callable[[ValidRequest], tuple[Event, AfterLast | None]],
                      error: Callable[[InferError], tuple[bytes, int]], tail: bytes | None) -> None:
        """Headers, admission, then the stream on the ticker; the task waits for its end."""
        svc = self.svc
        timing = Timing(_now_ns())
        rid = _request_id(scope)
        headers = _sse_headers(svc, inputs, rid)
        trace_id = trace_id_from_scope(scope)
        arrival = REQUEST_ARRIVAL_NS.get() or timing.start_ns
        permits: list[Permit] = []
        try:
            permits, valid = admit(timing)
            stream = svc.backend.submit(valid.input_ids, valid.params)
        except (InferError, GenerationError) as exc:
            for permit in permits:
                permit.release()
            err = exc if isinstance(exc, InferError) else GenerationFailed(str(exc))
            svc.metrics.failure(err.metric)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": error(err)[0], "more_body": True})
            await send({"type": "http.response.body", "body": tail or b"", "more_body": False})
            now = _now_ns()
            log_request(rid, trace_id, arrival, 0, now, 0, "done")
            return
        assert isinstance(stream, SimulatedStream)
        event, after_last = formats(valid)
        ls = LeanStream(svc, cycle, stream, timing, permits, rid, trace_id, event, after_last, error, tail)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            ls.start()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect" and not ls.finished:
                    ls.stop("disconnected")
                    break
                if ls.paused:
                    ls.paused = False
                    await cycle.flow.drain()
                    if cycle.disconnected:
                        ls.stop("disconnected")
                        break
                    ls.resume()
                    continue
                if ls.finished:
                    break
            if ls.status == "done":
                await send(_BODY_END)
        except BaseException:
            if not ls.finished:
                ls.stop("failed")
            raise
        finally:
            log_request(rid, trace_id, arrival, ls.first_ns, _now_ns(), ls.index, ls.status)


class LeanStream:
    """One native token stream driven by the ticker (module docstring)."""

    __slots__ = ("svc", "cycle", "transport", "stream", "timing", "permits", "index", "first_ns",
                 "last", "keepalive_s", "finished", "paused", "status", "ticker", "prefix", "record", "_due",
                 "event", "after_last", "error", "tail")

    def __init__(self, svc: Service, cycle: Any, stream: SimulatedStream, timing: Timing,
                 permits: list[Permit], request_id: str, trace_id: str | None, event: Event,
                 after_last: AfterLast | None, error: Callable[[InferError], tuple[bytes, int]],
                 tail: bytes | None) -> None:
        self.svc = svc
        self.cycle = cycle
        self.transport = cycle.transport
        self.stream = stream
        self.event = event
        self.after_last = after_last
        self.error = error
        self.tail = tail
        self.timing = timing
        self.permits = permits
        self.index = 0
        self.first_ns = 0
        self.last = _monotonic()
        self.keepalive_s = svc.cfg.keepalive_s
        self.finished = False
        self.paused = False
        self.status = "failed"
        self.ticker = stream._ticker
        trace: TokenTrace | None = svc.trace
        self.prefix = TokenTrace.line_prefix(request_id, trace_id) if trace is not None else ""
        self.record = trace.record if trace is not None else None
        self._due = self.on_due

    def start(self) -> None:
        self.last = _monotonic()
        self._schedule()

    def _schedule(self) -> None:
        due = self.stream._next_t
        ka = self.last + self.keepalive_s
        self.ticker.call_at(due if due < ka else ka, self._due)

    def resume(self) -> None:
        """After the task waited for the transport to drain."""
        if not self.finished:
            self._schedule()

    def on_due(self) -> None:
        """Ticker callback: write the token now due (or a keep-alive comment), then register again."""
        if self.finished:
            return
        cycle = self.cycle
        if cycle.disconnected:
            return  # the task's receive() tells, and stops the stream
        if cycle.flow.write_paused:
            self.paused = True
            cycle.message_event.set()
            return
        stream = self.stream
        now = _monotonic()
        if stream._next_t - now > EARLY_S:
            if now >= self.last + self.keepalive_s - EARLY_S:
                self.transport.write(_KEEPALIVE_CHUNK)
                self.last = now
            self._schedule()
            return
        try:
            out = stream.step()
        except GenerationError as exc:
            self._fail(GenerationFailed(str(exc)))
            return
        except StopAsyncIteration:
            self._fail(IncompleteGenerationStream())
            return
        self.index = index = self.index + 1
        event = self.event(index, out)
        self.transport.write(b"%x\r\n%b\r\n" % (len(event), event))
        t_ns = _now_ns()
        if self.record is not None:
            self.record(self.prefix, index, t_ns)
        if index == 1:
            self.first_ns = t_ns
        self.last = last = t_ns / 1e9  # time.monotonic_ns and time.monotonic read one clock
        if out.finish_reason is None:
            due, ka = stream._next_t, last + self.keepalive_s
            self.ticker.call_at(due if due < ka else ka, self._due)
            return
        timing = self.timing
        timing.queued_ns = out.queued_ns or timing.validated_ns
        timing.started_ns = out.started_ns or timing.queued_ns
        timing.finished_ns = out.finished_ns or t_ns
        self.svc.record_success(timing, out.generated_tokens)
        extra = self.after_last(out) if self.after_last is not None else None
        self._write_after(extra)
        self._end("done")

    def _write_after(self, extra: bytes | None) -> None:
        """The chunks after the last token event or an error event: ``extra``, then the tail."""
        parts = [b"%x\r\n%b\r\n" % (len(x), x) for x in (extra, self.tail) if x]
        if parts:
            self.transport.write(b"".join(parts))

    def _fail(self, exc: InferError) -> None:
        self.svc.metrics.failure(exc.metric)
        self._write_after(self.error(exc)[0])
        self._end("done")

    def _end(self, status: str) -> None:
        self.finished = True
        self.status = status
        self._due = None  # the bound method referred to self: no cycle left for the collector
        self.stream.cancel()
        for permit in self.permits:
            permit.release()
        self.cycle.message_event.set()  # wakes the request's task in receive()

    def stop(self, status: str) -> None:
        """The client went away (or the task failed): cancel the stream, release the permit."""
        if status == "disconnected":
            self.svc.metrics.failure("dropped")
        self._end(status)
