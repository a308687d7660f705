"""`harness comply`: rulesets, the verdict's reasons, the rate search, and real runs against the simulated
server scripted just under and just over a TPOT limit (shortened minimums, so marked not MLPerf-valid;
100 queries at p90 pass early stopping with up to 3 over the limit, so one stall of a busy machine is tolerated)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.comply import find_max_rate, judge, load_ruleset, packaged
from harness.comply.early_stopping import min_passing_queries
from harness.comply.rulesets import Ruleset
from harness.records import RequestRecord

MS = 1_000_000


def _comply(tmp_path: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "comply", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=timeout)


def test_packaged_rulesets_hold_the_mlperf_table():
    names = set(packaged())
    assert {"llama2-70b-server", "llama3.1-8b-interactive", "gpt-oss-120b-server", "deepseek-r1-interactive"} <= names
    r = load_ruleset("llama3.1-8b-server")
    assert (r.ttft_ms, r.tpot_ms, r.percentile, r.min_duration_s, r.min_queries) == (2000, 100, 99.0, 600, 100)
    assert load_ruleset("deepseek-r1-interactive").tpot_ms == 15


@pytest.mark.parametrize("text,msg", [
    ("ttft_ms = 100\n", "missing tpot_ms"),
    ("ttft_ms = 100\ntpot_ms = -1\n", "must be a positive number"),
    ("ttft_ms = 100\ntpot_ms = 5\npercentile = 100\n", "between 0 and 100"),
    ("ttft_ms = 100\ntpot_ms = 5\nlimit = 3\n", "unknown field"),
    ("ttft_ms = [", "not a TOML ruleset"),
])
def test_bad_ruleset_is_one_line(tmp_path, text, msg):
    p = tmp_path / "r.toml"
    p.write_text(text)
    with pytest.raises(ValueError, match=msg):
        load_ruleset(str(p))


def _rec(i: int, ttft_ms: float, tpot_ms: float, tokens: int = 5, outcome: str = "ok") -> RequestRecord:
    t0 = i * 10 * MS
    first = t0 + int(ttft_ms * MS)
    end = first + int(tpot_ms * (tokens - 1) * MS)
    return RequestRecord(intended_ns=t0, send_ns=t0, token_ns=[first] * tokens, tokens_per_event=[1] * tokens,
                         end_ns=end, output_tokens_events=tokens, outcome=outcome)


def test_judge_reasons_from_records():
    n = min_passing_queries(0, p=0.9)  # the judged window (records 10 ms apart) holds exactly n queries
    rules = Ruleset("t", ttft_ms=100, tpot_ms=10, percentile=90, min_duration_s=(n - 1) / 100, min_queries=10)
    good = [_rec(i, 50, 5) for i in range(n)]
    v = judge(good, rules)
    assert v.valid and not v.reasons and any("shortened" in m for m in v.marks)
    slow = [_rec(i, 150 if i % 5 == 0 else 50, 5) for i in range(n)]  # 20 % over the TTFT limit
    v = judge(slow, rules)
    assert not v.valid and any(r.startswith("TTFT p90") for r in v.reasons)
    assert any(r.startswith("early stopping (TTFT)") for r in v.reasons) and not any("TPOT" in r for r in v.reasons)
    failed = [_rec(0, 0, 0, outcome="timeout"), *good[1:]]
    v = judge(failed, rules)
    assert not v.valid and any("did not complete: timeout 1" in r for r in v.reasons)
    short = judge(good[:5], rules)
    assert any("min query count not met: 5 < 10" in r for r in short.reasons)


def test_search_brackets_then_bisects():
    limit = 7.3
    best, trials = find_max_rate(lambda r: r <= limit, 1.0, 0.01, 1024, 0.05, 20)
    assert best is not None and best <= limit < best * 1.05
    assert [r for r, _ in trials[:4]] == [1.0, 2.0, 4.0, 8.0]  # doubling until the first INVALID rate
    assert all(ok == (r <= limit) for r, ok in trials)
    none, trials = find_max_rate(lambda r: False, 1.0, 0.2, 1024, 0.05, 20)
    assert none is None and [r for r, _ in trials] == [1.0, 0.5, 0.25]


def test_short_minimums_need_the_flag_and_bad_input_is_one_line(tmp_path):
    r = _comply(tmp_path, "--ruleset", "llama3.1-8b-server", "--rate", "1", "--min-duration", "5")
    assert r.returncode == 2 and "add --shorten" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _comply(tmp_path, "--ruleset", "nope", "--rate", "1")
    assert r.returncode == 2 and "neither a packaged ruleset" in r.stderr
    assert not list(tmp_path.iterdir())  # refused before writing anything


RULES = "ttft_ms = 500\ntpot_ms = 10\npercentile = 90\nconfidence = 0.99\n"


@pytest.mark.parametrize("itl_ms,valid", [(5, True), (12, False)])
def test_simulated_server_under_and_over_the_tpot_limit(tmp_path, itl_ms, valid):
    (tmp_path / "rules.toml").write_text(RULES)
    out = tmp_path / "out"
    r = _comply(tmp_path, "--rules", "rules.toml", "--rate", "30", "--min-duration", "2", "--min-queries", "100",
                "--shorten", "--drain", "2", "--model", "simulated",
                "--server-args", f"--sim-ttft-ms 30 --sim-itl-ms {itl_ms}",
                "--input-tokens", "fixed:8", "--output-tokens", "fixed:8", "--out", str(out))
    assert r.returncode == (0 if valid else 1), r.stdout + r.stderr
    data = json.loads((out / "comply.json").read_text())
    run = data["runs"][0]
    assert run["verdict"] == ("VALID" if valid else "INVALID") and run["queries"] >= 100, run["reasons"]
    assert "not MLPerf-valid: shortened" in r.stdout and (out / "comply.html").is_file()
    if valid:
        assert run["reasons"] == [] and run["tpot"]["p"] < 10
    else:  # every request's TPOT is at least the scripted 12 ms: the TPOT limit and its early stopping fail
        assert any(x.startswith("TPOT p90") and "> limit 10 ms" in x for x in run["reasons"]), run["reasons"]
        assert any(x.startswith("early stopping (TPOT)") for x in run["reasons"])
        assert not any("TTFT" in x for x in run["reasons"])
