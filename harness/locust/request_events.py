"""Locust request events for one finished :class:`~harness.records.RequestRecord`.

Per request (name = the scenario):
- ``E2E``: always, response time = ``e2e_intended_ms`` (end - intended start; = E2E in closed
  loop), response length = output tokens; failures carry :class:`StreamFailure` whose message is
  the failure's cause, a stable grouping key for Locust's error table
  (:func:`harness.analysis.failures.failure_key`: ``StreamFailure('connect_error: connection refused')``,
  ``StreamFailure('http_error 400: <server text>')``, ``StreamFailure('overloaded 429')``). At most
  :data:`MAX_KEYS_PER_CLASS` distinct keys per outcome class and process; later new ones are
  reported as ``<class>: other causes``.
- ``TTFT``: ok requests only, response time = ``ttft_intended_ms``.
ITL is never a request event (one per token would flood "Aggregated" and lose sub-ms resolution);
it lives in the HdrHistograms of harness.locust.live.
"""

from __future__ import annotations

from typing import Any

from harness.analysis.failures import failure_key
from harness.metrics import e2e_intended_ms, output_tokens, ttft_intended_ms
from harness.records import Outcome, RequestRecord

#: distinct failure keys per outcome class and process before new ones are grouped as "other causes"
MAX_KEYS_PER_CLASS = 8
_seen: dict[str, set[str]] = {}


class StreamFailure(Exception):
    """A failed stream; ``str()`` is its cause's key (e.g. ``connect_error: connection refused``)."""


def bounded_key(rec: RequestRecord) -> str:
    """The record's failure key, or ``<class>: other causes`` once its class has
    :data:`MAX_KEYS_PER_CLASS` other keys (keeps Locust's error table bounded)."""
    key = failure_key(rec.outcome, rec.error_text)
    seen = _seen.setdefault(rec.outcome, set())
    if key in seen:
        return key
    if len(seen) < MAX_KEYS_PER_CLASS:
        seen.add(key)
        return key
    return f"{rec.outcome}: other causes"


def fire(environment: Any, name: str, rec: RequestRecord) -> None:
    """Fire the TTFT (ok only) and E2E request events of ``rec``."""
    fire_event = environment.events.request.fire
    e2e = e2e_intended_ms(rec)
    if rec.outcome == Outcome.OK:
        ttft = ttft_intended_ms(rec)
        if ttft is not None:
            fire_event(request_type="TTFT", name=name, response_time=ttft, response_length=0,
                       exception=None, context={})
        fire_event(request_type="E2E", name=name, response_time=e2e, response_length=output_tokens(rec),
                   exception=None, context={})
    else:
        fire_event(request_type="E2E", name=name, response_time=e2e, response_length=rec.output_tokens_events,
                   exception=StreamFailure(bounded_key(rec)), context={})
