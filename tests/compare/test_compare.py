"""`harness compare`: two real sweeps of the simulated server that differ only in --sim-itl-ms; their runs
compared (ITL worse with an interval excluding zero, an unchanged metric no change) and their Pareto fronts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.compare import pareto_front, verdict

ITLS = (10, 20)


def _harness(cwd: Path, *argv: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("sweeps")
    out = {}
    for itl in ITLS:
        d = root / f"itl{itl}"
        r = _harness(root, "sweep", "--caps", "8", "--users", "1,2", "--duration", "3", "--warmup", "0.5",
                     "--model", "simulated", "--server-args", f"--sim-ttft-ms 30 --sim-itl-ms {itl}",
                     "--input-tokens", "fixed:8", "--output-tokens", "fixed:16", "--no-point-reports", "--out", str(d))
        assert r.returncode == 0, r.stdout + r.stderr
        out[itl] = d
    return out


def test_pareto_front_and_verdict_by_hand():
    # (latency, throughput): (30, 100) is beaten by (20, 120); (50, 200) and (80, 150) - only the first stays
    assert pareto_front([(20, 120), (30, 100), (50, 200), (80, 150), (50, 200)]) == [(20, 120), (50, 200)]
    assert verdict((0.5, 2.0), higher_better=False) == "worse"
    assert verdict((0.5, 2.0), higher_better=True) == "better"
    assert verdict((-1.0, 2.0), higher_better=False) == "no change"
    assert verdict((0.0, 0.0), higher_better=False) == "no change"


def test_runs_itl_worse_unchanged_metric_no_change(sweeps, tmp_path):
    a, b = (sweeps[i] / "cap-8" / "users-2" for i in ITLS)
    out = tmp_path / "cmp"
    r = _harness(tmp_path, "compare", str(a), str(b), "--label", "itl10", "--label", "itl20", "--resamples", "300",
                 "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "itl20 vs itl10" in r.stdout and (out / "compare.html").is_file() and (out / "compare.md").is_file()
    data = json.loads((out / "compare.json").read_text())
    by_key = {d["key"]: d for d in data["comparisons"][0]["deltas"]}
    itl = by_key["itl_p50_ms"]
    assert itl["verdict"] == "worse" and itl["ci"][0] > 0, itl  # the whole interval above zero
    assert by_key["drops"]["verdict"] == "no change"  # no drops in either run
    assert by_key["tpot_p50_ms"]["verdict"] == "worse"
    assert all(d["verdict"] in ("better", "worse", "no change", "point only", "n/a") for d in by_key.values())
    assert "ITL p50" in (out / "compare.md").read_text()


def test_sweeps_draw_both_fronts(sweeps, tmp_path):
    out = tmp_path / "cmp"
    r = _harness(tmp_path, "compare", str(sweeps[10]), str(sweeps[20]), "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((out / "compare.json").read_text())
    assert data["kind"] == "sweeps"
    for key in ("ttft_p95_ms", "itl_p99_ms"):
        assert set(data["fronts"][key]) == {"itl10", "itl20"} and all(data["fronts"][key].values())
    assert (out / "pareto.png").stat().st_size > 0 and "data:image/png" in (out / "compare.html").read_text()


def test_bad_input_is_one_line(sweeps, tmp_path):
    run = sweeps[10] / "cap-8" / "users-1"
    for argv, msg in ((["compare", str(run)], "two or more"),
                      (["compare", str(run), str(sweeps[20])], "mix of runs and sweeps"),
                      (["compare", str(run), str(tmp_path)], "neither a run dir"),
                      (["compare", str(run), str(run), "--label", "x"], "one per path")):
        r = _harness(tmp_path, *argv, "--out", str(tmp_path / "o"))
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
