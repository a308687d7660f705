"""Every scenario runs headless against the bundled simulated server; the folder lists them; the web UI tab."""

from __future__ import annotations

import subprocess
import time

import httpx
from locust_helpers import LOCUST, SCENARIOS, free_port, headless, start_locust

SCENARIO_USERS = {
    "ChatStreamUser": "chat_stream",
    "OpenAIChatUser": "openai_chat",
    "OpenLoopChatUser": "open_loop",
    "OverloadBurstUser": "overload_burst",
    "SessionsUser": "sessions",
}


def test_folder_lists_the_scenarios():
    out = subprocess.run([LOCUST, "-f", str(SCENARIOS), "--list"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert set(SCENARIO_USERS) <= set(out.stdout.split())
    assert "StreamingUser" not in out.stdout.split()  # base classes are abstract


def test_bad_option_is_one_line_exit_2(tmp_path):
    out = subprocess.run([LOCUST, "-f", str(SCENARIOS / "chat_stream.py"), "--headless", "--host", "http://127.0.0.1:9",
                          "--input-tokens", "bogus:1"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2
    assert "--input-tokens" in out.stderr and "Traceback" not in out.stderr


def test_every_scenario_runs_headless_and_the_web_ui_tab(sim, tmp_path):
    server, small = sim(64), sim(4)  # overload_burst steps past the small server's cap of 4
    common = ("--output-tokens", "fixed:6", "--input-tokens", "fixed:32")
    runs = {}
    for cls, name in SCENARIO_USERS.items():
        extra = [*common]
        if name == "open_loop":
            extra += ["--rate", "10"]
        if name == "overload_burst":
            extra += ["--steps", "2,10", "--step-time", "4"]
        if name == "sessions":
            extra += ["--think-time", "0.1", "--turns", "3"]
        users = 1 if name == "open_loop" else 4
        host = small.url if name == "overload_burst" else server.url
        runs[name] = start_locust(tmp_path, name, [*headless(host, users, "8s", *extra), cls], SCENARIOS)
    port = free_port()
    ui = start_locust(tmp_path, "webui", ["--host", server.url, "--web-host", "127.0.0.1", "--web-port", str(port),
                                          "--autostart", "-u", "2", "-r", "2", "-t", "6s", "--autoquit", "0",
                                          *common, "ChatStreamUser"], SCENARIOS)
    tab = _poll_extended_stats(f"http://127.0.0.1:{port}", timeout_s=20)
    assert ui.wait(60) == 0, ui.log()[-3000:]
    latency = next(t for t in tab if t["key"] == "harness-latency")["data"]
    assert {row["metric"] for row in latency} >= {"TTFT", "ITL", "TPOT", "E2E"}
    assert next(r for r in latency if r["metric"] == "TTFT")["count"] > 0
    outcomes = next(t for t in tab if t["key"] == "harness-outcomes")["data"]
    assert any(r["outcome"] == "overload rate" for r in outcomes)

    for name, run in runs.items():
        code = run.wait(60)
        assert code == 0, f"{name}:\n{run.log()[-3000:]}"
        rows = run.records()
        assert rows and {r["scenario"] for r in rows} == {name}
        assert {r["outcome"] for r in rows} <= {"ok", "overloaded", "cancelled"}, name
        assert sum(r["outcome"] == "ok" for r in rows) > 0, name
    steps = runs["overload_burst"].run_meta()["steps"]
    assert [s["users"] for s in steps] == [2, 10]
    assert steps[1]["overload_rate"] > 0 and steps[1]["attempted"] > 0


def _poll_extended_stats(base: str, timeout_s: float) -> list[dict]:
    """Poll the UI's /stats/requests until the harness tabs carry TTFT samples."""
    deadline = time.monotonic() + timeout_s
    last: list[dict] = []
    while time.monotonic() < deadline:
        try:
            data = httpx.get(base + "/stats/requests", timeout=2).json()
            last = data.get("extended_stats") or []
            lat = next((t["data"] for t in last if t["key"] == "harness-latency"), [])
            if any(r["metric"] == "TTFT" and r["count"] for r in lat):
                return last
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no harness tab data from the web UI: {last}")
