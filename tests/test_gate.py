"""Gate: bounds pass and fail as written, bootstrap regressions, bad rules files exit 2, JUnit XML."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from synthetic_runs import closed_loop, write_run

from harness.analysis.summary import summarize
from harness.gate import evaluate_rules, parse_rule

ROOT = Path(__file__).resolve().parents[1]
RULES = """
rules = ["ttft_p95_ms <= 500", "overload_rate <= 0.01", "output_tokens_per_s >= 50"]
[regression]
confidence = 0.95
resamples = 300
[regression.tolerance]
ttft_p95_ms = "10%"
itl_p99_ms = "15%"
overload_rate = 0.01
"""


def gate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "gate", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate")
    kw = dict(n=1500, users=8, noise=0.3)
    return {
        "base": write_run(d / "base", closed_loop(**kw, seed=1)),
        "same": write_run(d / "same", closed_loop(**kw, seed=2)),  # same distribution, other noise draw
        "slow": write_run(d / "slow", closed_loop(**kw, ttft_ms=75, seed=3)),  # TTFT +50 %
        "dir": d,
    }


def test_bounds_pass_and_fail_as_written():
    s = summarize(closed_loop(100, ttft_ms=50, itl_ms=10, n_tokens=8, overloaded_every=10))
    got = {v.name: v.passed for v in evaluate_rules(
        [parse_rule(r) for r in ("ttft_p95_ms <= 50", "ttft_p95_ms < 50", "overload_rate <= 0.1",
                                 "overload_rate < 0.1", "itl_p99_ms >= 10", "outcomes.overloaded == 10",
                                 "goodput >= 0")], s)}
    assert got == {"ttft_p95_ms <= 50": True, "ttft_p95_ms < 50": False, "overload_rate <= 0.1": True,
                   "overload_rate < 0.1": False, "itl_p99_ms >= 10": True, "outcomes.overloaded == 10": True,
                   "goodput >= 0": False}  # no SLO -> no goodput value -> the rule fails


@pytest.mark.parametrize("bad,msg", [("ttft_p97_ms<=5", "unknown metric"), ("ttft_p95_ms=5", "bad operator"),
                                     ("ttft_p95_ms <= fast", "bad threshold"), ("<= 5", "bad rule")])
def test_parse_rule_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        parse_rule(bad)


def test_noise_passes_clear_regression_fails(runs, tmp_path):
    rules = tmp_path / "gate.toml"
    rules.write_text(RULES)
    same = gate(str(runs["same"]), "--rules", str(rules), "--baseline", str(runs["base"]),
                "--junit", str(tmp_path / "j.xml"))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "6 passed, 0 failed" in same.stdout
    slow = gate(str(runs["slow"]), "--rules", str(rules), "--baseline", str(runs["base"]),
                "--junit", str(tmp_path / "k.xml"))
    assert slow.returncode == 1, slow.stdout + slow.stderr
    suite = ET.parse(tmp_path / "k.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "6" and suite.get("failures") == "1"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["ttft_p95_ms regression <= 10%"]
    ok = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert ok is not None and ok.get("failures") == "0"


def test_baseline_as_summary_json(runs, tmp_path):
    rules = tmp_path / "gate.toml"
    rules.write_text('rules = []\n[regression.tolerance]\nttft_p95_ms = "10%"\n')
    summary = tmp_path / "base_summary.json"
    summary.write_text(json.dumps(summarize(closed_loop(1500, users=8, noise=0.3, seed=1))))
    assert gate(str(runs["same"]), "--rules", str(rules), "--baseline", str(summary)).returncode == 0
    assert gate(str(runs["slow"]), "--rules", str(rules), "--baseline", str(summary)).returncode == 1


@pytest.mark.parametrize("text,msg", [
    ('rules = ["ttft_p95_ms <= 500"\n', "bad TOML"),
    ('rules = ["ttft_p96_ms <= 500"]\n', "unknown metric 'ttft_p96_ms'"),
    ('rules = ["ttft_p95_ms =< 500"]\n', "bad rule"),
    ('rules = ["ttft_p95_ms <= 500"]\n[regression.tolerance]\nttft_p95_ms = "ten"\n', "bad tolerance"),
    ('rule = ["ttft_p95_ms <= 500"]\n', "unknown top-level key"),
    ("rules = []\n", "nothing to check"),
])
def test_bad_rules_file_exits_2(runs, tmp_path, text, msg):
    rules = tmp_path / "bad.toml"
    rules.write_text(text)
    r = gate(str(runs["same"]), "--rules", str(rules))
    assert r.returncode == 2
    assert msg in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_missing_inputs_exit_2(runs, tmp_path):
    rules = tmp_path / "gate.toml"
    rules.write_text(RULES)
    single = gate(str(runs["same"]), "--rules", str(rules))  # regressions skipped with a note, bounds judged
    assert single.returncode == 0 and "no --baseline" in single.stdout, single.stdout + single.stderr
    r = gate(str(runs["same"]), "--rules", str(tmp_path / "none.toml"))
    assert r.returncode == 2 and "no such rules file" in r.stderr
    r = gate(str(tmp_path / "nope"), "--rules", str(rules), "--baseline", str(runs["base"]))
    assert r.returncode == 2 and "no such run directory" in r.stderr


def test_example_rules_file_is_valid():
    from harness.gate import load_config

    cfg = load_config(ROOT / "examples" / "gate.toml")
    assert cfg.rules and cfg.regressions
