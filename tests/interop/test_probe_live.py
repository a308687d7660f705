"""`harness probe` against each live target: a correct description, and a printed command that works.

The probe runs as a user would (a subprocess, ``--json`` to read its findings); then its first printed
Locust command is run as printed, only shortened (``-t 8s``, 2 users) and given a run dir here.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from interop_checks import SENDS_DONE, USAGE_IN_STREAM

from harness.records import RequestRecord

BIN = Path(sys.executable).parent


def _probe(target) -> dict:
    # transformers serve spends seconds on its first batching steps: a 60 s budget, as docs/probe.md advises
    p = subprocess.run([str(BIN / "harness"), "probe", "--host", target.url, "--timeout", "60", "--json"],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-2000:], target.log()[-2000:])
    return json.loads(p.stdout)


def test_probe_describes_the_target_and_its_command_runs(target, tmp_path):
    out = _probe(target)
    assert out["usable"] is True, out
    routes = {r["endpoint"]: r for r in out["probe"]["routes"]}
    chat = routes["/v1/chat/completions"]
    assert chat["status"] == "ok" and chat["protocol"] == "openai", chat
    assert chat["done"] is SENDS_DONE[target.name], chat
    assert chat["usage"] == ("last_chunk" if USAGE_IN_STREAM[target.name] else "absent"), chat
    assert chat["ttft_ms"] > 0 and chat["tokens_events"] >= 1
    assert routes.get("/generate_stream", {}).get("status") != "ok"  # neither target speaks TGI's routes

    cmd = next(c for c in out["commands"]["locust"] if "/v1/chat/completions" in c)
    argv = shlex.split(cmd.replace('"$HARNESS_API_KEY"', ""))
    argv[argv.index("-t") + 1] = "8s"
    argv[argv.index("-u") + 1] = "2"
    argv[argv.index("-r") + 1] = "2"
    argv[0] = str(BIN / "locust")
    run_dir = tmp_path / "run"
    p = subprocess.run([*argv, "--run-dir", str(run_dir), "--output-tokens", "fixed:8", "--only-summary"],
                       capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert p.returncode == 0, (cmd, p.stdout[-2000:], p.stderr[-2000:])
    recs = [RequestRecord.from_dict(json.loads(x)) for x in (run_dir / "records.jsonl").read_text().splitlines() if x]
    assert recs and all(r.outcome == "ok" for r in recs), [(r.outcome, r.error_text) for r in recs]
