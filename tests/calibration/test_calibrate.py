"""A short `harness calibrate` (real simulated server + real headless Locust), its install, a Locust
run stamped client-bound by the installed calibration, and that run's report showing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = ROOT / "scenarios" / "chat_stream.py"


def harness(args: list[str], env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_short_calibrate_writes_and_installs(tmp_path: Path, serve) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("HARNESS_CALIBRATION", None)
    out = tmp_path / "cal"
    p = harness(["calibrate", "--levels", "4,16", "--duration-per-level", "4", "--warmup", "1", "--out", str(out)],
                env)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((out / "calibration.json").read_text())
    assert [lv["streams"] for lv in doc["levels"]] == [4, 16]
    for lv in doc["levels"]:
        # the client's tokens found the server's write lines of the same tokens (a token written
        # while its client went away at the end of the level may lack its line)
        assert lv["joined_tokens"] > 100 and lv["join_coverage"] >= 0.99, lv
        for key in ("ttft_error_ms", "itl_abs_error_ms"):
            d = lv[key]
            assert d["count"] > 0 and d["p50"] <= d["p99"] <= d["max"]
        # loose sanity only (shared 2-core machines; the server stamps after its write returned,
        # so a descheduled server can stamp after the client read): not seconds late or early
        assert -2000 < lv["delay_ms"]["min"] and lv["delay_ms"]["max"] < 5000
        assert lv["achieved_tokens_per_s"] > 0 and lv["within_budget"] in (True, False)
    assert doc["machine"]["cpu_count"] and doc["software"]["python"] and doc["budget_ms"] == 1.0
    assert "TTFT err" in p.stdout and "limit per worker" in p.stdout
    installed = tmp_path / "cache" / "stream-harness" / "calibration.json"
    assert json.loads(installed.read_text()) == doc

    # A run above the (here: forced tiny) limit is stamped client-bound in run.json.
    doc["limit"] = {"level": "1@1", "streams": 1, "tokens_per_s": 1.0}
    installed.write_text(json.dumps(doc))
    server = serve(["--model", "simulated", "--sim-ttft-ms", "5", "--sim-itl-ms", "5"])
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(SCENARIO), "--host", server.url, "--headless",
                           "-u", "2", "-r", "2", "-t", "2s", "--run-dir", str(run_dir), "--only-summary",
                           "--output-tokens", "fixed:16", "--loglevel", "WARNING"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["client_bound"] is True, proc.stdout + proc.stderr
    assert any("calibrated limit" in r and str(installed) in r for r in meta["client_bound_reasons"])
    # ... and its report says so
    rep = harness(["report", str(run_dir), "--out", str(tmp_path / "report")], env)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["run"]["client_bound"] is True
    assert "Client-bound:" in (tmp_path / "report" / "report.html").read_text()


def test_calibrate_bad_input_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    for args in (["--levels", "lots"], ["--budget-ms", "0"], ["--duration-per-level", "1"]):
        p = harness(["calibrate", "--out", str(tmp_path), *args], env, timeout=30)
        assert p.returncode == 2 and p.stderr.startswith("harness calibrate: error:"), p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
