"""The stream client: sends one request, runs the SSE timing loop, fills a RequestRecord.

Protocol adapters (:mod:`harness.client.tgi`, :mod:`harness.client.openai`) subclass
:class:`StreamClient` and provide the request body and the per-event parsing loop; this module
owns the transport, timeouts, retries and outcome classification, and never raises for request
failures: ``stream()`` always returns a record whose ``outcome`` says what happened.

Timing fields (monotonic ns): ``send_ns`` just before the first attempt's request bytes are
written (user-perceived start), ``attempt_send_ns`` the same for the final attempt, ``headers_ns``
when the final attempt's status line and headers were parsed, ``token_ns`` one stamp per token
event (the arrival of its first ``data:`` line), ``end_ns`` at the final event (``[DONE]``, TGI's
last event), at an error, or when the failure was detected.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from harness.client import http
from harness.client.errors import (
    OVERLOAD_STATUSES,
    classify_status,
    format_error,
    parse_error_body,
    parse_retry_after,
)
from harness.client.sse import Event, iter_events
from harness.client.tracecontext import HEADER as TRACEPARENT_HEADER
from harness.client.tracecontext import traceparent
from harness.records import Outcome, RequestRecord
from harness.workload.prompt import Prompt

MAX_ERROR_BODY = 64 * 1024  #: bytes of a non-2xx body read for its error text
DRAIN_TIMEOUT_S = 1.0  #: after the final event, wait at most this long for the body's end


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Client timeouts, seconds: TCP connect, each socket read (i.e. between tokens), whole request.

    The total covers every attempt including retry back-off, measured from the first send.
    """

    connect_s: float = 10.0
    read_s: float = 60.0
    total_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "read_s", "total_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"timeout {name} must be > 0, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of overloaded requests (429, 503, 529, ``overloaded`` error events before any token).

    Back-off before retry ``k`` (1-based): ``min(max_backoff_s, max(retry_after_s,
    base_backoff_s * 2**(k-1)))``, i.e. a server's ``Retry-After`` is honoured, exponential
    otherwise, always capped. ``max_retries=0`` (default) disables retrying. A retry never starts
    when its back-off would pass the total timeout.
    """

    max_retries: int = 0
    max_backoff_s: float = 10.0
    base_backoff_s: float = 0.1
    retry_statuses: tuple[int, ...] = OVERLOAD_STATUSES

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.max_backoff_s < 0 or self.base_backoff_s < 0:
            raise ValueError("retry counts and back-offs must be >= 0")

    def backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Back-off before retry number ``attempt`` (1-based), seconds."""
        expo = self.base_backoff_s * (2 ** (attempt - 1))
        return min(self.max_backoff_s, max(retry_after_s or 0.0, expo))


#: the request-id header sent by default (servers log and echo it; the simulated server's
#: ``--trace-file`` is keyed by it); ``request_id_header=None`` sends none
REQUEST_ID_HEADER = "X-Request-Id"
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def new_request_id() -> str:
    """A request id in UUID form (``str(uuid.uuid4())``, 36 characters).

    The form every server accepts: llama.cpp's server answers 400 to an ``X-Request-Id`` that is
    not a UUID (with or without dashes).
    """
    return str(uuid.uuid4())


class _Timeout(Exception):
    """The total deadline passed."""


class StreamClient:
    """Base class of the protocol clients; one keep-alive connection, one request at a time.

    Not safe for concurrent use: give each Locust user / greenlet its own client.
    """

    protocol = ""
    default_endpoint = ""

    def __init__(
        self,
        base_url: str,
        endpoint: str | None = None,
        api_key: str | None = None,
        model_name: str | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        max_new_tokens: int | None = None,
        extra_body: dict | None = None,
        retokenize: Callable[[str], Sequence[int]] | None = None,
        request_id_header: str | None = REQUEST_ID_HEADER,
        send_traceparent: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.endpoint = endpoint or self.default_endpoint
        if not self.endpoint.startswith("/"):
            self.endpoint = "/" + self.endpoint
        self.api_key = api_key
        self.model_name = model_name
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.max_new_tokens = max_new_tokens
        self.extra_body = dict(extra_body or {})
        self.retokenize = retokenize
        self.target = self.base_url + self.endpoint
        self.conn = http.Connection(self.base_url, self.timeouts.connect_s, self.timeouts.read_s)
        headers = [
            ("User-Agent", "stream-harness"),
            ("Content-Type", "application/json"),
            ("Accept", "text/event-stream"),
        ]
        if api_key:
            headers.append(("Authorization", f"Bearer {api_key}"))
        self._headers = headers
        self.request_id_header = request_id_header or None
        #: W3C ``traceparent`` derived from the request id (harness.client.tracecontext); False: none
        self.send_traceparent = send_traceparent
        if self.request_id_header and not _HEADER_NAME.fullmatch(self.request_id_header):
            raise ValueError(f"bad request-id header name {request_id_header!r}: letters, digits and -_ only")

    # ------------------------------------------------------------------ adapter hooks

    def build_body(self, prompt: Prompt) -> dict:  # pragma: no cover - abstract
        """The JSON request body for ``prompt`` (streaming on)."""
        raise NotImplementedError

    def read_stream(self, events: Iterator[Event], rec: RequestRecord, texts: list[str] | None,
                    on_text: Callable[[str], None] | None) -> bool:  # pragma: no cover - abstract
        """Consume ``events``, filling ``rec``; True when the stream's terminator arrived.

        On an error event the adapter sets ``rec.outcome``, ``rec.error_text`` and ``rec.end_ns``
        and returns False. It appends token texts to ``texts`` when given, and calls ``on_text``.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ public API

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stream(self, prompt: Prompt | str, record: RequestRecord | None = None, intended_ns: int | None = None,
               keep_text: bool = False, on_text: Callable[[str], None] | None = None) -> RequestRecord:
        """Send ``prompt`` as a streaming request and time it; returns the filled record.

        Blocking (cooperative under gevent). Never raises for request failures; a
        ``BaseException`` such as ``GreenletExit`` or ``KeyboardInterrupt`` marks the record
        ``cancelled``, closes the connection and propagates.
        """
        if isinstance(prompt, str):
            prompt = Prompt(text=prompt)
        rec = record if record is not None else RequestRecord()
        rec.protocol = self.protocol
        rec.target = self.target
        if not rec.request_id:
            rec.request_id = new_request_id()
        if intended_ns is not None:  # kept also when the request is cancelled before its first send
            rec.intended_ns = intended_ns
        if prompt.input_tokens is not None:
            rec.input_tokens_client = prompt.input_tokens
        if prompt.turn is not None:
            rec.turn = prompt.turn
        body = json.dumps(self.build_body(prompt), ensure_ascii=False).encode("utf-8")
        want_text = keep_text or self.retokenize is not None
        texts: list[str] | None = [] if (want_text or on_text is not None) else None
        try:
            self._run(rec, body, intended_ns, texts, on_text)
        except BaseException:
            rec.outcome = Outcome.CANCELLED.value
            rec.error_text = "cancelled by the harness"
            if rec.end_ns is None:
                rec.end_ns = time.monotonic_ns()
            self.conn.close()
            raise
        if texts is not None:
            text = "".join(texts)
            if keep_text:
                rec.text = text
            if self.retokenize is not None and rec.outcome == Outcome.OK:
                try:
                    rec.output_tokens_retokenized = len(self.retokenize(text))
                except Exception:  # noqa: BLE001 - a user tokenizer must not fail the request
                    rec.output_tokens_retokenized = None
        if self.api_key and rec.error_text and self.api_key in rec.error_text:
            rec.error_text = rec.error_text.replace(self.api_key, "***")
        return rec

    # ------------------------------------------------------------------ internals

    def _run(self, rec: RequestRecord, body: bytes, intended_ns: int | None, texts: list[str] | None,
             on_text: Callable[[str], None] | None) -> None:
        t = self.timeouts
        attempt = 0
        first_send: int | None = None
        while True:
            if texts is not None:
                texts.clear()
            self._attempt(rec, body, texts, on_text, first_send)
            if first_send is None:
                first_send = rec.send_ns
                if rec.send_ns is not None:
                    rec.intended_ns = intended_ns if intended_ns is not None else rec.send_ns
            if not self._should_retry(rec, attempt):
                break
            attempt += 1
            delay = self.retry.backoff_s(attempt, rec.retry_after_s)
            start = first_send if first_send is not None else time.monotonic_ns()
            if time.monotonic_ns() + int(delay * 1e9) >= start + int(t.total_s * 1e9):
                break
            time.sleep(delay)
            rec.retries = attempt
        if rec.intended_ns is None:
            rec.intended_ns = intended_ns if intended_ns is not None else rec.send_ns

    def _should_retry(self, rec: RequestRecord, attempt: int) -> bool:
        if attempt >= self.retry.max_retries or rec.token_ns:
            return False
        return rec.outcome == Outcome.OVERLOADED or rec.http_status in self.retry.retry_statuses

    def _attempt(self, rec: RequestRecord, body: bytes, texts: list[str] | None,
                 on_text: Callable[[str], None] | None, first_send: int | None) -> None:
        """One attempt: fills rec (timings of this attempt, outcome). Never raises for failures."""
        rec.token_ns = []
        rec.tokens_per_event = []
        rec.reasoning_events = 0
        rec.output_tokens_events = 0
        rec.output_tokens_server = None
        rec.input_tokens_server = None
        rec.finish_reason = None
        rec.done_missing = False
        rec.headers_ns = None
        rec.end_ns = None
        rec.http_status = None
        rec.error_text = None
        rec.outcome = Outcome.OK.value
        conn = self.conn
        total_ns = int(self.timeouts.total_s * 1e9)
        resp = None
        deadline: int | None = None
        try:
            for _try in range(2):
                send_ns = time.monotonic_ns()
                if first_send is None:
                    rec.send_ns = send_ns
                rec.attempt_send_ns = send_ns
                deadline = (first_send if first_send is not None else send_ns) + total_ns
                self._limit_read(deadline, send_ns)
                # X-Request-Id: servers echo/log it; the simulated server keys its --trace-file by it
                headers = self._headers
                if self.request_id_header:
                    headers = [*headers, (self.request_id_header, rec.request_id)]
                if self.send_traceparent:
                    headers = [*headers, (TRACEPARENT_HEADER, traceparent(rec.request_id))]
                reused = conn.send("POST", self.endpoint, headers, body)
                try:
                    resp = conn.read_response()
                    break
                except http.ConnectionClosed:
                    if not reused:
                        raise
                    conn.close()  # an idle keep-alive connection the server had closed: resend once
            assert resp is not None
            rec.headers_ns = time.monotonic_ns()
            rec.http_status = resp.status
            if not 200 <= resp.status < 300:
                self._http_failure(rec, resp)
                return
            ctype = resp.headers.get("content-type", "")
            if "text/event-stream" not in ctype:
                raw = resp.body.read_all(MAX_ERROR_BODY)
                conn.finish(resp)
                rec.end_ns = time.monotonic_ns()
                etype, msg, _ = parse_error_body(raw)
                rec.outcome = Outcome.HTTP_ERROR.value
                rec.error_text = format_error(resp.status, etype, f"expected text/event-stream, got "
                                              f"{ctype or 'no content-type'}: {msg}")
                return
            check_at, check = self._deadline_check(deadline)
            events = iter_events(resp.body.read_piece, check_at_ns=check_at, check=check)
            done = self.read_stream(events, rec, texts, on_text)
            if rec.end_ns is None:
                rec.end_ns = time.monotonic_ns()
            rec.output_tokens_events = sum(rec.tokens_per_event)
            if rec.outcome != Outcome.OK:
                self._drain(resp)
            elif not done or (rec.done_missing and resp.body.truncated):
                rec.outcome = Outcome.INCOMPLETE.value
                rec.error_text = ("stream ended without its final event"
                                  + (" (connection closed mid-body)" if resp.body.truncated else ""))
                rec.done_missing = False
                conn.close()
            else:
                self._drain(resp)
        except _Timeout:
            self._fail(rec, Outcome.TIMEOUT, f"total timeout of {self.timeouts.total_s:g}s passed")
        except http.ConnectTimeout as exc:
            self._fail(rec, Outcome.TIMEOUT, str(exc))
        except http.ConnectError as exc:
            self._fail(rec, Outcome.CONNECT_ERROR, str(exc))
        except http.ReadTimeout as exc:
            self._fail(rec, Outcome.TIMEOUT, str(exc))
        except TimeoutError:
            if deadline is not None and time.monotonic_ns() >= deadline - 5_000_000:
                text = f"total timeout of {self.timeouts.total_s:g}s passed"
            else:
                text = f"no {'token' if rec.token_ns else 'data'} for {self.timeouts.read_s:g}s (read timeout)"
            self._fail(rec, Outcome.TIMEOUT, text)
        except http.ProtocolError as exc:
            self._fail(rec, Outcome.HTTP_ERROR, f"protocol error: {exc}")
        except (http.ConnectionClosed, OSError) as exc:
            self._fail(rec, Outcome.INCOMPLETE, f"connection failed: {exc}")
        rec.output_tokens_events = sum(rec.tokens_per_event)

    def _fail(self, rec: RequestRecord, outcome: Outcome, text: str) -> None:
        rec.outcome = outcome.value
        rec.error_text = text
        if rec.end_ns is None:
            rec.end_ns = time.monotonic_ns()
        self.conn.close()

    def _limit_read(self, deadline: int, now: int) -> None:
        """Per-read timeout = min(read_s, time left to the total deadline)."""
        left = (deadline - now) / 1e9
        if left <= 0:
            raise _Timeout
        self.conn.set_read_timeout(min(self.timeouts.read_s, left))

    def _deadline_check(self, deadline: int) -> tuple[int, Callable[[int], int]]:
        """(first check time, check) for :func:`iter_events`: enforces the total deadline per piece.

        Until ``deadline - read_s`` nothing is checked (the per-read timeout is the tighter
        bound); after it, every piece lowers the socket timeout to the time left, and a piece
        arriving past the deadline ends the request as a timeout.
        """
        read_s_ns = int(self.timeouts.read_s * 1e9)
        limit = self._limit_read

        def check(t: int) -> int:
            limit(deadline, t)  # raises _Timeout past the deadline
            return deadline - read_s_ns if deadline - t > read_s_ns else t

        return deadline - read_s_ns, check

    def _http_failure(self, rec: RequestRecord, resp: http.Response) -> None:
        """Non-2xx: read the (JSON) error body, classify, note Retry-After."""
        try:
            raw = resp.body.read_all(MAX_ERROR_BODY)
            self.conn.finish(resp)
        except (OSError, http.TransportError):
            raw = b""
            self.conn.close()
        rec.end_ns = time.monotonic_ns()
        etype, msg, _ = parse_error_body(raw)
        rec.outcome = classify_status(resp.status, etype, msg)
        rec.error_text = format_error(resp.status, etype, msg or resp.reason)
        ra = parse_retry_after(resp.headers.get("retry-after"))
        if ra is not None:
            rec.retry_after_s = ra

    def _drain(self, resp: http.Response) -> None:
        """Read the rest of the body (briefly) so the connection can be reused; else close it."""
        body = resp.body
        if body.complete:
            self.conn.finish(resp)
            return
        try:
            self.conn.set_read_timeout(min(DRAIN_TIMEOUT_S, self.timeouts.read_s))
            for _ in range(1000):
                if not body.read_piece() or body.complete:
                    break
        except (OSError, http.TransportError):
            self.conn.close()
            return
        self.conn.set_read_timeout(self.timeouts.read_s)
        self.conn.finish(resp)
