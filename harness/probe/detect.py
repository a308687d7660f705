"""What an endpoint speaks: model name, streaming routes, usage, ``[DONE]``, request-id header, timing.

:func:`probe` sends at most two ``GET`` requests (``/v1/models``, ``/info``) and one short
streaming request per route (plus one retry without the request-id header when a route answers
a 4xx that may be about that header), all inside one time budget. Every streaming request goes
through the harness client (:func:`harness.client.make_client`), so what the probe sees is what a
Locust run will see; the client's own SSE events are teed to tell how ``usage`` arrives and
whether ``[DONE]`` is sent. Timing figures come from :mod:`harness.metrics`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from harness.client import REQUEST_ID_HEADER, StreamClient, Timeouts, http, make_client
from harness.client.sse import Event
from harness.metrics import distribution, itl_ms, token_mismatch, tpot_ms, ttft_ms
from harness.records import Outcome, RequestRecord
from harness.workload import Prompt, count_tokens

#: (protocol, endpoint, label): the routes probed, in this order (also the order of preference)
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("tgi", "/generate_stream", "TGI native"),
    ("openai", "/v1/chat/completions", "OpenAI chat"),
    ("openai", "/v1/completions", "OpenAI completions"),
)
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
CONNECT_S = 3.0  #: TCP connect timeout of every probe request, s
READ_S = 5.0  #: longest wait for one byte (response or token), s; half the budget when that is longer
MIN_LEFT_S = 0.5  #: a route is skipped when less of the budget is left


class Unreachable(Exception):
    """The host cannot be talked to at all (connect refused/timed out, not HTTP)."""


@dataclass
class RouteResult:
    """One route's verdict. ``status``: ok | absent (404/405) | auth (401/403) | not_sse | failed | skipped.

    ``usage``: where the server's output-token count arrived: ``last_chunk`` (usage on a chunk that
    also has choices), ``separate_chunk`` (a ``choices: []`` chunk), ``final_event`` (TGI
    ``details.generated_tokens``) or ``absent``. ``done``: ``[DONE]`` seen (OpenAI routes only).
    ``tokens_per_event``: server count / token events when the server counts, else the client's.
    """

    protocol: str
    endpoint: str
    label: str
    status: str = "skipped"
    outcome: str | None = None
    http_status: int | None = None
    error: str | None = None
    usage: str | None = None
    done: bool | None = None
    events: int = 0
    tokens_events: int = 0
    tokens_server: int | None = None
    tokens_per_event: float | None = None
    token_mismatch: bool | None = None
    finish_reason: str | None = None
    ttft_ms: float | None = None
    itl_ms: dict = field(default_factory=dict)
    tpot_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class ProbeResult:
    host: str
    model_name: str | None = None
    model_source: str | None = None  #: "--model-name" | "/v1/models" | "/info"
    models: list[str] = field(default_factory=list)  #: ids listed by /v1/models
    info: dict | None = None  #: /info (TGI and servers that mirror it)
    routes: list[RouteResult] = field(default_factory=list)
    request_id_accepted: bool | None = None  #: None: not determined
    request_id_error: str | None = None  #: the server's text when it rejected the header
    auth_hint: bool = False  #: a GET answered 401/403
    elapsed_s: float = 0.0

    @property
    def usable(self) -> list[RouteResult]:
        return [r for r in self.routes if r.ok]


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.total = seconds
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _get_json(base_url: str, path: str, api_key: str | None, budget: _Budget) -> tuple[int, object]:
    """``GET path`` -> (status, decoded JSON or None). Raises Unreachable when the host can't be reached."""
    left = budget.left()
    conn = http.Connection(base_url, min(CONNECT_S, max(left, 0.1)), min(READ_S, max(left, 0.1)))
    headers = [("User-Agent", "stream-harness"), ("Accept", "application/json")]
    if api_key:
        headers.append(("Authorization", f"Bearer {api_key}"))
    try:
        conn.send("GET", path, headers)
        resp = conn.read_response("GET")
        raw = resp.body.read_all(1 << 20)
    except (http.ConnectError, http.ConnectTimeout, http.ProtocolError) as exc:
        raise Unreachable(_unreachable_text(exc, conn)) from None
    except (http.TransportError, OSError) as exc:  # reset, read timeout: this route says nothing
        return 0, str(exc)
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, None


def _unreachable_text(exc: Exception, conn: http.Connection) -> str:
    if isinstance(exc, http.ProtocolError):
        return f"{conn.host}:{conn.port} does not answer HTTP ({exc})"
    return str(exc)


def _tee(client: StreamClient, seen: list[Event]) -> None:
    """Record every SSE event the client's adapter reads, in order (nothing else changes)."""
    inner = client.read_stream

    def read_stream(events: Iterator[Event], *args: object) -> bool:
        def teed() -> Iterator[Event]:
            for ev in events:
                seen.append(ev)
                yield ev
        return inner(teed(), *args)

    client.read_stream = read_stream  # type: ignore[method-assign]


def _stream(base_url: str, protocol: str, endpoint: str, api_key: str | None, model_name: str | None,
            max_tokens: int, budget: _Budget, rid_header: str | None) -> tuple[RequestRecord, list[Event]]:
    left = max(round(budget.left(), 1), 0.1)  # rounded: the client's timeout texts print it
    # a longer --timeout also allows a longer first byte (servers that load the model on first use)
    timeouts = Timeouts(min(CONNECT_S, left), min(max(READ_S, budget.total / 2), left), left)
    client = make_client(protocol, base_url, endpoint=endpoint, api_key=api_key, model_name=model_name,
                         timeouts=timeouts, max_new_tokens=max_tokens, request_id_header=rid_header)
    seen: list[Event] = []
    _tee(client, seen)
    with client:
        rec = client.stream(Prompt(text=PROMPT, input_tokens=count_tokens(PROMPT)))
    return rec, seen


def _may_be_header(rec: RequestRecord) -> bool:
    """A 4xx that could be the server refusing the request-id header (not auth, route, or overload)."""
    s = rec.http_status
    return s is not None and 400 <= s < 500 and s not in (401, 403, 404, 405, 429)


def _fill(r: RouteResult, rec: RequestRecord, seen: list[Event]) -> None:
    """Classify the route from its record and the events the client read."""
    r.outcome, r.http_status, r.error = rec.outcome, rec.http_status, rec.error_text
    r.events = len(rec.token_ns)
    r.tokens_events = rec.output_tokens_events
    r.tokens_server = rec.output_tokens_server
    r.finish_reason = rec.finish_reason
    if rec.ok:
        r.status = "ok"
    elif rec.outcome == Outcome.CONNECT_ERROR or (rec.outcome == Outcome.TIMEOUT and rec.http_status is None
                                                  and not rec.token_ns and "connect" in (rec.error_text or "")):
        raise Unreachable(rec.error_text or "cannot connect")
    elif rec.http_status in (404, 405) and "model" not in (rec.error_text or "").lower():
        r.status = "absent"
    elif rec.http_status in (401, 403):
        r.status = "auth"
    elif rec.http_status is not None and 200 <= rec.http_status < 300 and "text/event-stream" in (
            rec.error_text or ""):
        r.status = "not_sse"
    else:
        r.status = "failed"
    if r.protocol == "openai" and (seen or rec.ok):
        r.done = any(data.strip() == b"[DONE]" for _, data, _ in seen)
    r.usage = _usage_shape(r.protocol, seen) if (seen or rec.ok) else None
    if rec.ok:
        n = r.tokens_server if r.tokens_server is not None else r.tokens_events
        r.tokens_per_event = n / r.events if r.events else None
        r.token_mismatch = token_mismatch(rec)
        r.ttft_ms = ttft_ms(rec)
        r.itl_ms = distribution(itl_ms(rec))
        r.tpot_ms = tpot_ms(rec)


def _usage_shape(protocol: str, seen: list[Event]) -> str:
    """Where the output-token count arrived in the stream (see :class:`RouteResult`)."""
    shape = "absent"
    for _, data, _ in seen:
        try:
            obj = json.loads(data)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if protocol == "tgi":
            details = obj.get("details")
            if isinstance(details, dict) and details.get("generated_tokens") is not None:
                shape = "final_event"
        elif isinstance(obj.get("usage"), dict):
            shape = "last_chunk" if obj.get("choices") else "separate_chunk"
    return shape


def probe(base_url: str, api_key: str | None = None, model_name: str | None = None, budget_s: float = 10.0,
          max_tokens: int = 16) -> ProbeResult:
    """Probe ``base_url`` within ``budget_s`` seconds; raises :class:`Unreachable` when it can't be reached."""
    t0 = time.monotonic()
    budget = _Budget(budget_s)
    res = ProbeResult(host=base_url, model_name=model_name, model_source="--model-name" if model_name else None)
    status, models = _get_json(base_url, "/v1/models", api_key, budget)
    res.auth_hint = status in (401, 403)
    if status == 200 and isinstance(models, dict) and isinstance(models.get("data"), list):
        res.models = [str(m["id"]) for m in models["data"] if isinstance(m, dict) and m.get("id")]
    if budget.left() > MIN_LEFT_S:
        status, info = _get_json(base_url, "/info", api_key, budget)
        res.auth_hint = res.auth_hint or status in (401, 403)
        if status == 200 and isinstance(info, dict) and info.get("model_id"):
            res.info = info
    if res.model_name is None:
        if res.models:
            res.model_name, res.model_source = res.models[0], "/v1/models"
        elif res.info:
            res.model_name, res.model_source = str(res.info["model_id"]), "/info"
    rid: str | None = REQUEST_ID_HEADER
    for protocol, endpoint, label in ROUTES:
        r = RouteResult(protocol, endpoint, label)
        res.routes.append(r)
        if budget.left() < MIN_LEFT_S:
            r.error = "not checked: the time budget was spent"
            continue
        rec, seen = _stream(base_url, protocol, endpoint, api_key, res.model_name, max_tokens, budget, rid)
        if rid and res.request_id_accepted is None and _may_be_header(rec) and budget.left() >= MIN_LEFT_S:
            rec2, seen2 = _stream(base_url, protocol, endpoint, api_key, res.model_name, max_tokens, budget, None)
            if rec2.ok or rec2.http_status != rec.http_status:
                res.request_id_accepted, res.request_id_error = False, rec.error_text
                rid = None
                rec, seen = rec2, seen2
        elif rid and rec.http_status is not None and 200 <= rec.http_status < 300:
            res.request_id_accepted = True
        _fill(r, rec, seen)
    res.elapsed_s = time.monotonic() - t0
    return res
