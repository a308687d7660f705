"""Issue 15 through real Locust: a multi-turn session run with per-user prefixes against the simulated
server's emulated prefix cache reports TTFT by turn (summary.json, summary.md, report.html); the
traffic options shape prompts and refuse bad values (checked in a subprocess: importing Locust
monkey-patches the process with gevent)."""

from __future__ import annotations

import json
import subprocess
import sys

from locust_helpers import SCENARIOS, headless, start_locust

from harness.analysis.report import build_report


def test_session_run_reports_ttft_by_turn(sim, tmp_path):
    server = sim(64, "--sim-ttft-per-input-token-ms", "0.5", "--sim-prefix-cache-blocks", "2048",
                 "--sim-output-tokens", "8")
    run = start_locust(tmp_path, "sessions", [*headless(server.url, 2, "5s", "--turns", "3", "--think-time", "0",
                                                        "--prefix-tokens", "64", "--prefixes", "0",
                                                        "--output-tokens", "fixed:8", "--input-tokens", "fixed:24")],
                       SCENARIOS / "sessions.py")
    assert run.wait() == 0, run.log()[-3000:]
    rows = run.records()
    assert {r["turn"] for r in rows} == {1, 2, 3} and all(r["outcome"] == "ok" for r in rows)
    # each turn resends the conversation: turn 2 and 3 find the earlier turns in the cache
    later = [r for r in rows if r["turn"] > 1]
    assert all(r["cached_input_tokens"] > 0 for r in later)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    by_turn = summary["ttft_by_turn"]
    assert list(by_turn) == ["1", "2", "3"]
    assert sum(d["count"] for d in by_turn.values()) == summary["ttft_count"]
    assert by_turn["3"]["cached_share_mean"] > 0 and summary["prefix_cache_hit_rate"] > 0
    md = (run.run_dir / "summary.md").read_text()
    assert "| TTFT by session turn (ms) |" in md and "| turn 3 |" in md and "| cached_share (fraction) |" in md
    report = build_report(run.run_dir, tmp_path / "report")
    html = report.html.read_text()
    assert "TTFT by session turn" in html and "turn 3</td>" in html
    assert report.summary["ttft_by_turn"].keys() == by_turn.keys()


PROBE = r"""
import json, types
from harness.locust.options import HarnessOptions, OptionError, resolve
from harness.locust.prompts import prompt_source
opts = resolve(types.SimpleNamespace(prefix_tokens=64, prefixes=3, prefix_share=1.0, cache_bust=True, tools=1,
                                     reasoning_prompts=True, reasoning_effort="high"))
p4, p1 = prompt_source(opts, 4)(), prompt_source(opts, 1)()
errors = []
for bad in ({"prefix_share": 2.0}, {"tools": 99}, {"prefix_tokens": -1}, {"reasoning_effort": "max"}):
    try:
        resolve(types.SimpleNamespace(**bad))
    except OptionError as exc:
        errors.append(str(exc))
print(json.dumps({"m4": p4.messages, "m1": p1.messages, "body": p4.body, "errors": errors,
                  "plain": prompt_source(HarnessOptions(), 0)().body}))
"""


def test_traffic_options_shape_prompts_and_refuse_bad_values():
    out = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                                    check=True).stdout)
    sys4, sys1 = out["m4"][0]["content"], out["m1"][0]["content"]
    # users 4 and 1 share prefix group 1; each prompt starts with its own salt
    assert sys4.split(None, 1)[1] == sys1.split(None, 1)[1] and sys4.split()[0] != sys1.split()[0]
    assert out["body"]["reasoning_effort"] == "high" and out["body"]["tools"][0]["function"]["name"] == "get_weather"
    assert out["m4"][1]["content"].startswith("Reason step by step") and out["plain"] is None
    assert [e.split(":")[0] for e in out["errors"]] == ["--prefix-share", "--tools", "--prefix-tokens",
                                                       "--reasoning-effort"]
