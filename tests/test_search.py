"""`harness sweep --search`: bootstrap intervals, verdicts and cliffs (pure functions), the bracketing and
bisection order, bad options, and a real search against a real grid on the simulated server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import metrics as m
from harness.analysis import boundary as bd
from harness.sweep.search import Probe, SearchOptions, search_cap

ROOT = Path(__file__).resolve().parents[1]


# --- bootstrap intervals and verdicts ---------------------------------------------------------------------

def test_bootstrap_estimate_is_the_dictionary_percentile_and_the_interval_holds_it():
    rng = np.random.default_rng(7)
    v = rng.exponential(100.0, 400)
    iv = bd.bootstrap_ci(v, None, "p95")
    assert iv.estimate == pytest.approx(m.percentile(sorted(v.tolist()), 95))
    assert iv.low < iv.estimate < iv.high and iv.n == 400 and iv.clusters == 400
    assert bd.bootstrap_ci(v, None, "p95") == iv  # seeded: reproducible
    wider = bd.bootstrap_ci(v, None, "p95", confidence=0.99)
    assert wider.low <= iv.low and wider.high >= iv.high
    more = bd.bootstrap_ci(np.tile(v, 4), None, "p95")  # 4x the data: a narrower interval
    assert more.high - more.low < iv.high - iv.low


def test_cluster_bootstrap_keeps_a_requests_gaps_together():
    """Gaps of one request that share its level: resampling requests gives a wider (honest) interval
    than resampling gaps as if independent."""
    rng = np.random.default_rng(3)
    levels = rng.normal(100.0, 20.0, 40)
    values = np.repeat(levels, 25) + rng.normal(0, 1.0, 1000)
    rows = np.repeat(np.arange(40), 25)
    by_request = bd.bootstrap_ci(values, rows, "p50")
    by_gap = bd.bootstrap_ci(values, None, "p50")
    assert by_request.estimate == by_gap.estimate and by_request.clusters == 40
    assert by_request.high - by_request.low > 2 * (by_gap.high - by_gap.low)


def test_bootstrap_edge_cases():
    assert bd.bootstrap_ci(np.array([]), None, "p95").estimate is None
    one = bd.bootstrap_ci(np.array([5.0, np.nan]), None, "p99")
    assert (one.estimate, one.low, one.high, one.n) == (5.0, 5.0, 5.0, 1)
    mx = bd.bootstrap_ci(np.array([1.0, 9.0, 3.0]), None, "max")
    assert mx.low == mx.high == mx.estimate == 9.0
    assert bd.bootstrap_ci(np.array([1.0, 3.0]), None, "mean").estimate == 2.0
    with pytest.raises(ValueError, match="unknown statistic"):
        bd.bootstrap_ci(np.array([1.0, 3.0]), None, "p42")


@pytest.mark.parametrize("low,high,verdict", [(10, 90, bd.PASS), (90, 100, bd.PASS), (101, 120, bd.FAIL),
                                              (95, 105, bd.CLOSE), (None, None, bd.FAIL)])
def test_judge(low, high, verdict):
    est = None if low is None else (low + high) / 2
    assert bd.judge(bd.Interval(est, low, high, 10, 10), 100.0) == verdict


def test_combine_and_estimate():
    assert bd.combine([bd.PASS, bd.PASS]) == bd.PASS
    assert bd.combine([bd.PASS, bd.CLOSE]) == bd.CLOSE
    assert bd.combine([bd.CLOSE, bd.FAIL]) == bd.FAIL
    assert bd.combine([bd.PASS], ["error rate 5.0% > 1.0%"]) == bd.FAIL
    ivs = {"ttft_p95_ms": bd.Interval(99.0, 90.0, 110.0, 5, 5), "itl_p99_ms": bd.Interval(51.0, 45.0, 55.0, 5, 5)}
    assert bd.by_estimate(ivs, {"ttft_p95_ms": 100.0, "itl_p99_ms": 50.0}) == bd.FAIL
    assert bd.by_estimate(ivs, {"ttft_p95_ms": 100.0, "itl_p99_ms": 52.0}) == bd.PASS


def test_cliffs_only_over_one_step():
    pts = [(1.0, {"k": 10.0}), (2.0, {"k": 12.0}), (4.0, {"k": 50.0}), (5.0, {"k": 200.0}), (6.0, {"k": 210.0})]
    cliffs = bd.find_cliffs(pts, step=1.0, factor=3.0)
    assert [(c.low, c.high, c.metric) for c in cliffs] == [(4.0, 5.0, "k")]  # 2 -> 4 is two steps apart
    assert cliffs[0].ratio == pytest.approx(4.0) and "jumps 4.0x" in cliffs[0].text("users")
    assert bd.find_cliffs(pts, step=1.0, factor=5.0) == []
    rel = bd.find_cliffs([(10.0, {"k": 10.0}), (10.5, {"k": 40.0}), (20.0, {"k": 400.0})], 0.1, 3.0, relative=True)
    assert [(c.low, c.high) for c in rel] == [(10.0, 10.5)]


# --- the bracketing and bisection order ---------------------------------------------------------------------

def _threshold_probe(limit: float, seen: list[float]):
    """A deterministic judge: loads up to ``limit`` pass (the search's order is what is under test)."""

    def probe(load: float) -> Probe:
        seen.append(load)
        return Probe(load, bd.PASS if load <= limit else bd.FAIL, "interval")

    return probe


@pytest.mark.parametrize("limit", [0, 1, 2, 3, 5, 8, 13, 31, 32, 33, 100])
def test_search_users_finds_the_limit(limit):
    opts = SearchOptions("users", 1.0, 64.0, 1.0)
    seen: list[float] = []
    lo, hi, probes = search_cap(_threshold_probe(limit, seen), opts)
    if limit == 0:
        assert (lo, hi, seen) == (None, 1.0, [1.0])
    elif limit >= 64:
        assert (lo, hi) == (64.0, None) and seen == [1, 2, 4, 8, 16, 32, 64]
    else:
        assert (lo, hi) == (limit, limit + 1)
    assert len(set(seen)) == len(seen) and len(seen) <= 2 * 7  # never the same load twice, ~2 log2(max)


def test_search_rate_relative_resolution():
    opts = SearchOptions("rate", 0.5, 100.0, 0.1)
    seen: list[float] = []
    lo, hi, _ = search_cap(_threshold_probe(7.3, seen), opts)
    assert lo <= 7.3 < hi and hi - lo <= 0.1 * lo
    assert all(len(f"{x:g}".replace(".", "").lstrip("0")) <= 3 for x in seen)  # 3 significant digits


def test_inconclusive_probe_stops_the_search():
    def probe(load: float) -> Probe:
        return Probe(load, bd.PASS if load < 4 else bd.INCONCLUSIVE, "failure rule")

    lo, hi, probes = search_cap(probe, SearchOptions("users", 1.0, 64.0, 1.0))
    assert (lo, hi) == (2.0, None) and probes[-1].verdict == bd.INCONCLUSIVE and probes[-1].load == 4.0


# --- the command ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,msg", [
    (["--users", "1,2"], "--search finds the loads itself"),
    (["--search-start", "1.5"], "whole numbers"),
    (["--search-start", "8", "--search-max", "4"], "must be > 0 and <= --search-max"),
    (["--search-cliff", "1"], "--search-cliff must be > 1"),
])
def test_bad_search_options_one_line(tmp_path, extra, msg):
    r = subprocess.run([sys.executable, "-m", "harness", "sweep", "--search", "users", "--caps", "2",
                        "--model", "simulated", "--out", str(tmp_path / "s"), *extra],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "s").exists()


def test_search_finds_the_grid_boundary_on_the_simulated_server(tmp_path):
    """ITL grows 20 ms per running stream (--sim-batch-slowdown 1): ITL p50 <= 70 ms holds up to 3 users.
    A dense grid over 1..5 users and the search must agree within one user. (The median, not a tail:
    on a busy shared machine a few late gaps can move a p99 past the bound at any load.)"""
    common = ["--caps", "8", "--duration", "6", "--warmup", "1", "--model", "simulated",
              "--server-args", "--sim-ttft-ms 10 --sim-itl-ms 20 --sim-batch-slowdown 1",
              "--input-tokens", "fixed:8", "--output-tokens", "fixed:8", "--slo", "itl_p50=70", "--no-point-reports"]
    harness = [sys.executable, "-m", "harness", "sweep"]
    grid = subprocess.run([*harness, *common, "--users", "1,2,3,4,5", "--out", str(tmp_path / "grid")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=400)
    assert grid.returncode == 0, grid.stdout + grid.stderr
    grid_max = json.loads((tmp_path / "grid" / "sweep.json").read_text())["capacity"][0]["max_load"]
    search = subprocess.run([*harness, *common, "--search", "users", "--search-max", "5",
                             "--out", str(tmp_path / "search")], capture_output=True, text=True, cwd=tmp_path,
                            timeout=400)
    assert search.returncode == 0, search.stdout + search.stderr
    data = json.loads((tmp_path / "search" / "search.json").read_text())
    cap = data["caps"][0]
    both = f"grid:\n{grid.stdout}\nsearch:\n{search.stdout}{search.stderr}"
    assert cap["boundary"] is not None and grid_max is not None, both
    assert abs(cap["boundary"] - grid_max) <= 1, both
    lo, hi = cap["interval"]
    assert lo == cap["boundary"] and hi == lo + 1, both
    loads = [p["load"] for p in cap["probes"]]
    assert loads[:2] == [1.0, 2.0] and len(loads) == len(set(loads))
    for p in cap["probes"]:  # every probe judged by its interval (or its repeat), with the evidence
        assert p["verdict"] in (bd.PASS, bd.FAIL) and "itl_p50_ms" in p["terms"], both
        t = p["terms"]["itl_p50_ms"]
        assert t["low"] <= t["estimate"] <= t["high"] and t["n"] > t["clusters"] > 0
    assert f"search: cap 8: boundary {cap['boundary']:g} user" in search.stdout
    html = (tmp_path / "search" / "sweep.html").read_text()
    assert "Search: the highest load within the SLO" in html and "the limit lies in" in html
    sweep = json.loads((tmp_path / "search" / "sweep.json").read_text())
    assert sweep["capacity"][0]["max_load"] == cap["boundary"] and sweep["search"]["caps"][0]["boundary"] == lo
