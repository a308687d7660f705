"""Live web UI tabs: "Streaming latency" (TTFT, ITL, TPOT, E2E, schedule lag percentiles, ms) and
"Outcomes" (counts per outcome class, overload rate), merged over workers.

Uses Locust's table-tab extension points: ``extended_tabs``/``extended_tables`` template args and
``extended_stats`` injected into the ``/stats/requests`` JSON the UI polls. Values come from the
process's :class:`~harness.locust.live.LiveStats` (HdrHistograms, 3 significant digits), which on the
master holds the merged worker deltas.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from harness.locust.live import LiveStats
from harness.metrics import PERCENTILE_KEYS, PERCENTILES

LATENCY_TAB = "harness-latency"
OUTCOME_TAB = "harness-outcomes"


def _latency_structure() -> list[dict[str, str]]:
    cols = [("metric", "Metric"), ("count", "# samples"), ("mean", "Mean (ms)"), ("min", "Min (ms)")]
    cols += [(PERCENTILE_KEYS[p], f"p{p:g} (ms)") for p in PERCENTILES]
    cols.append(("max", "Max (ms)"))
    return [{"key": k, "title": t} for k, t in cols]


def install(environment: Any, live: Callable[[], LiveStats]) -> None:
    """Add the two tabs to the web UI (no-op without a web UI, e.g. headless or on workers)."""
    web_ui = getattr(environment, "web_ui", None)
    if not web_ui:
        return
    from flask import request

    web_ui.template_args.update(
        extended_tabs=[{"title": "Streaming latency", "key": LATENCY_TAB}, {"title": "Outcomes", "key": OUTCOME_TAB}],
        extended_tables=[
            {"key": LATENCY_TAB, "structure": _latency_structure()},
            {"key": OUTCOME_TAB, "structure": [{"key": "outcome", "title": "Outcome"},
                                               {"key": "count", "title": "Requests"},
                                               {"key": "rate", "title": "Share of attempted"}]},
        ],
    )

    @web_ui.app.after_request
    def _inject(response: Any) -> Any:
        if request.path.endswith("/stats/requests") and response.is_json:
            data = response.get_json()
            stats = live()
            data["extended_stats"] = [{"key": LATENCY_TAB, "data": stats.latency_rows()},
                                      {"key": OUTCOME_TAB, "data": stats.outcome_rows()}]
            response.set_data(json.dumps(data))
        return response

    @web_ui.app.route("/harness/live")
    def _live_json() -> Any:
        stats = live()
        return {"latency": stats.latency_rows(), "outcomes": stats.outcome_rows(),
                "overload_rate": stats.overload_rate()}
