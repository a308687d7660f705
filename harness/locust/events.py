"""Locust request events for one finished :class:`~harness.records.RequestRecord`.

Per request (name = the scenario):
- ``E2E``: always, response time = ``e2e_intended_ms`` (end - intended start; = E2E in closed
  loop), response length = output tokens; failures carry :class:`StreamFailure` whose message is
  the outcome class, a stable error key (``StreamFailure('overloaded')``).
- ``TTFT``: ok requests only, response time = ``ttft_intended_ms``.
ITL is never a request event (one per token would flood "Aggregated" and lose sub-ms resolution);
it lives in the HdrHistograms of harness.locust.live.
"""

from __future__ import annotations

from typing import Any

from harness.metrics import e2e_intended_ms, output_tokens, ttft_intended_ms
from harness.records import Outcome, RequestRecord


class StreamFailure(Exception):
    """A failed stream; ``str()`` is the outcome class (e.g. ``overloaded``)."""


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
                   exception=StreamFailure(rec.outcome), context={})
