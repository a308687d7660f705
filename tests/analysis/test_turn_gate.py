"""TTFT by session turn as gate keys (issue 15): bounds on ``ttft_by_turn.<turn>.<stat>`` through the real
`harness gate` command on a synthetic session run (regressions on them are refused with one line)."""

from __future__ import annotations

import subprocess
import sys

from synthetic_runs import NS_PER_MS, closed_loop, write_run

from harness.analysis.summary import summarize


def session_run(seed: int, turn3_extra_ms: float = 0.0):
    recs = closed_loop(900, users=6, noise=0.2, seed=seed)
    for i, r in enumerate(recs):
        r.turn = i // 6 % 3 + 1  # every user: turn 1, 2, 3, 1, ...
        if r.turn == 3 and turn3_extra_ms:
            shift = int(turn3_extra_ms * NS_PER_MS)
            r.token_ns = [t + shift for t in r.token_ns]
            r.end_ns += shift
    return recs


def test_turn_keys_are_gate_bounds(tmp_path):
    slow = session_run(2, turn3_extra_ms=40)
    s = summarize(slow)
    assert list(s["ttft_by_turn"]) == ["1", "2", "3"]
    assert s["ttft_by_turn"]["3"]["p50"] > s["ttft_by_turn"]["1"]["p50"] + 30
    bound = s["ttft_by_turn"]["1"]["p95"] + 20  # turn 1 is within it, turn 3 is not
    rules = tmp_path / "gate.toml"
    rules.write_text(f'rules = ["ttft_by_turn.1.p95 <= {bound}", "ttft_by_turn.3.p95 <= {bound}"]\n')
    run = str(write_run(tmp_path / "slow", slow))
    out = subprocess.run([sys.executable, "-m", "harness", "gate", run, "--rules", str(rules)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 passed, 1 failed" in out.stdout, out.stdout
    rules.write_text('rules = []\n[regression.tolerance]\n"ttft_by_turn.3.p50" = "10%"\n')
    out = subprocess.run([sys.executable, "-m", "harness", "gate", run, "--rules", str(rules), "--baseline", run],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and "regression on 'ttft_by_turn.3.p50' is not supported" in out.stderr
