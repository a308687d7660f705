"""The web UI started on the scenarios folder runs what the form says (class picker, no step shape unless
picked) and serves the streaming tab's charts: the script, and the per-second series it draws."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx
from locust_helpers import SCENARIOS, free_port, headless, start_locust


def _wait_for(fn, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {last}")


def test_folder_web_ui_runs_the_chosen_class_and_serves_chart_series(sim, tmp_path):
    server = sim(64)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ui = start_locust(tmp_path, "ui", ["--host", server.url, "--web-host", "127.0.0.1", "--web-port", str(port),
                                       "--output-tokens", "fixed:12", "--input-tokens", "fixed:16"], SCENARIOS)
    try:
        page = _wait_for(lambda: httpx.get(base + "/", timeout=2).text, 60, "the web UI")
        args = json.loads(page.split("window.templateArgs = ", 1)[1].split("</script>", 1)[0])
        assert args["show_userclass_picker"] is True and "StepShape" in args["available_shape_classes"]
        assert '<script src="./harness/charts.js"></script>' in page
        js = httpx.get(base + "/harness/charts.js", timeout=5)
        assert js.headers["content-type"].startswith("text/javascript") and '"harness-latency"' in js.text
        assert all(p[0] in js.text for p in ("ttft_p99_ms", "itl_p99_ms", "output_tokens_per_s", "in_flight"))

        r = httpx.post(base + "/swarm", data={"user_classes": "ChatStreamUser", "user_count": "3", "spawn_rate": "3",
                                              "host": server.url, "shape_class": "Default", "run_time": "6s"},
                       timeout=10).json()
        assert r["success"], r

        def series() -> dict | None:
            d = httpx.get(base + "/harness/series", timeout=2).json()
            return d if any(v and v > 0 for v in d["output_tokens_per_s"]) else None

        d = _wait_for(series, 30, "chart series with tokens")
        n = len(d["t_s"])
        assert n and all(len(d[k]) == n for k in ("ttft_p50_ms", "ttft_p99_ms", "itl_p99_ms", "overload_rate",
                                                    "in_flight"))
        assert any(v is not None for v in d["ttft_p50_ms"]) and any(v for v in d["in_flight"])
        stats = httpx.get(base + "/stats/requests", timeout=2).json()
        assert stats["user_count"] <= 3
        outcomes = next(t["data"] for t in stats["extended_stats"] if t["key"] == "harness-outcomes")
        ok = next(row for row in outcomes if row["outcome"] == "ok")
        assert ok["count"] > 0 and ok["rate"].endswith(" %")
        assert next(row for row in outcomes if row["outcome"] == "overload rate")["count"] == ""
        _wait_for(lambda: httpx.get(base + "/stats/requests", timeout=2).json()["state"] == "stopped", 30,
                  "the 6 s run to stop")
    finally:
        ui.proc.send_signal(signal.SIGTERM)
        try:
            ui.wait(30)
        except AssertionError:
            pass
    rows = ui.records()
    assert rows and {r["scenario"] for r in rows} == {"chat_stream"}
    assert len({r["user"] for r in rows}) <= 3
    assert not ui.run_meta().get("steps")
    assert ui.run_meta()["scenario"] == "chat_stream"  # the picked class names the run, not "mixed"


def test_folder_steps_are_opt_in(sim, tmp_path):
    """overload_burst's default steps apply to it alone, not to a folder run with other classes."""
    server = sim(64)
    run = start_locust(tmp_path, "mixed", [*headless(server.url, 2, "4s", "--output-tokens", "fixed:6",
                                                     "--input-tokens", "fixed:16"),
                                           "ChatStreamUser", "OverloadBurstUser"], SCENARIOS)
    assert run.wait(60) == 0, run.log()[-3000:]
    assert not run.run_meta().get("steps")
    assert len({(r["scenario"], r["user"]) for r in run.records()}) <= 2


# A subprocess: harness.locust imports Locust, which monkey-patches the process it is imported in.
_SERIES_SCRIPT = """
import json
from harness.locust.live import LiveSeries, sketch_percentile
from harness.records import RequestRecord
s = LiveSeries()
t0 = 10 * 10**9
# one request: sent at 10.0 s, 4 tokens at 10.5, 11.5, 12.5, 13.5 s, server says 8 tokens, ends at 13.6 s
s.add(RequestRecord(send_ns=t0, intended_ns=t0, end_ns=t0 + 3_600_000_000, outcome="ok",
                    token_ns=[t0 + 500_000_000 + k * 10**9 for k in range(4)], tokens_per_event=[1] * 4,
                    output_tokens_server=8, output_tokens_events=4))
other = LiveSeries()
other.merge(json.loads(json.dumps(s.encode())))  # as shipped from a worker
print(json.dumps({"view": other.view(), "empty": sketch_percentile({}, 50)}))
"""


def test_series_bins_tokens_by_arrival():
    out = subprocess.run([sys.executable, "-c", _SERIES_SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    v = res["view"]
    assert v["t_s"] == [0, 1, 2, 3]
    assert v["output_tokens_per_s"] == [2.0, 2.0, 2.0, 2.0]
    assert abs(sum(v["in_flight"]) - 3.6) < 1e-9
    assert abs(v["ttft_p50_ms"][0] - 500.0) / 500.0 < 0.025
    assert v["itl_p99_ms"][0] is None and abs(v["itl_p99_ms"][1] - 1000.0) / 1000.0 < 0.025
    assert v["overload_rate"][0] == 0.0 and res["empty"] is None
