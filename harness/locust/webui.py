"""Live web UI tabs: "Streaming latency" (charts over time, then TTFT, ITL, TPOT, E2E, schedule lag
percentiles, ms) and "Outcomes" (requests and share of attempted per outcome class, then the attempted
total and the overload rate), merged over workers.

Uses Locust's table-tab extension points: ``extended_tabs``/``extended_tables`` template args and
``extended_stats`` injected into the ``/stats/requests`` JSON the UI polls. Values come from the
process's :class:`~harness.locust.live.LiveStats` (HdrHistograms, 3 significant digits), which on the
master holds the merged worker deltas. The charts (:mod:`harness.locust.webui_charts`) are a script
the index page loads; it reads ``/harness/series`` (per-second series, :class:`~harness.locust.live.LiveSeries`).

A locustfile folder with several user classes (``locust -f scenarios``) turns on Locust's class
picker when no class was named: the form then starts the scenarios ticked there, with the users and
spawn rate typed in it; the folder's step shape runs only when picked as the shape ("Default" = none).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from harness.locust.live import LiveStats
from harness.locust.webui_charts import script
from harness.metrics import PERCENTILE_KEYS, PERCENTILES

LATENCY_TAB = "harness-latency"
OUTCOME_TAB = "harness-outcomes"


def _latency_structure() -> list[dict[str, str]]:
    cols = [("metric", "Metric"), ("count", "# samples"), ("mean", "Mean (ms)"), ("min", "Min (ms)")]
    cols += [(PERCENTILE_KEYS[p], f"p{p:g} (ms)") for p in PERCENTILES]
    cols.append(("max", "Max (ms)"))
    return [{"key": k, "title": t} for k, t in cols]


def outcome_table(stats: LiveStats) -> list[dict[str, Any]]:
    """The Outcomes tab's rows: :meth:`LiveStats.outcome_rows` with shares as percentages ("12.5 %")."""
    return [{**r, "rate": f"{r['rate']:.1%}".replace("%", " %") if r["rate"] != "" else ""}
            for r in stats.outcome_rows()]


def wants_class_picker(environment: Any) -> bool:
    """True for a locustfile folder (several user classes) run without naming a class or --class-picker."""
    opts = getattr(environment, "parsed_options", None)
    available = getattr(environment, "available_user_classes", None) or {}
    return len(available) > 1 and not getattr(opts, "user_classes", None)


def install(environment: Any, live: Callable[[], LiveStats]) -> None:
    """Add the two tabs and the charts to the web UI (no-op without a web UI, e.g. headless or on workers)."""
    web_ui = getattr(environment, "web_ui", None)
    if not web_ui:
        return
    from flask import Response, request

    if wants_class_picker(environment) and not web_ui.userclass_picker_is_active:
        web_ui.userclass_picker_is_active = True
        # Locust's picker starts without a shape unless one is picked ("Default"); so does the first run
        environment.shape_class = None

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
                                      {"key": OUTCOME_TAB, "data": outcome_table(stats)}]
            response.set_data(json.dumps(data))
        elif request.path.rstrip("/") == web_ui.app.config.get("APPLICATION_ROOT", "/").rstrip("/") and \
                response.mimetype == "text/html" and response.status_code == 200:
            page = response.get_data(as_text=True)
            if "</body>" in page and "harness/charts.js" not in page:
                response.set_data(page.replace("</body>", '<script src="./harness/charts.js"></script></body>', 1))
        return response

    @web_ui.app.route("/harness/charts.js")
    def _charts_js() -> Any:
        return Response(script(LATENCY_TAB), mimetype="text/javascript")

    @web_ui.app.route("/harness/series")
    def _series_json() -> Any:
        running = getattr(environment.runner, "state", "") in ("spawning", "running")
        return live().series_view(time.monotonic_ns() if running else None)

    @web_ui.app.route("/harness/live")
    def _live_json() -> Any:
        stats = live()
        return {"latency": stats.latency_rows(), "outcomes": stats.outcome_rows(),
                "overload_rate": stats.overload_rate()}
