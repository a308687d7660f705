"""Sweep: argument validation, capacity planning, and a real 2 caps x 2 loads sweep on the simulated server."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis.capacity import Point, capacity, recommend
from harness.analysis.summary import slo_spec
from harness.sweep import add_arguments, make_plan

ROOT = Path(__file__).resolve().parents[1]


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_plan_and_point_dirs(tmp_path):
    plan = make_plan(_args("--caps", "8,4", "--users", "4,1,2", "--out", str(tmp_path)))
    assert plan.caps == [4, 8] and plan.loads == [1, 2, 4] and plan.axis == "users" and plan.total == 6
    assert plan.point_dir(4, 2.0) == tmp_path / "cap-4" / "users-2"
    open_loop = make_plan(_args("--host", "http://127.0.0.1:9", "--rates", "0.5,2", "--out", str(tmp_path)))
    assert open_loop.caps == [None] and open_loop.axis == "rate" and open_loop.loads == [0.5, 2.0]
    assert open_loop.point_dir(None, 0.5).name == "rate-0.5"
    assert Path(_args().scenario or "x").name == "x"  # default filled by make_plan only


@pytest.mark.parametrize("argv,msg", [
    (["--caps", "4,x"], "--caps: 'x' is not a whole number"),
    (["--caps", "4", "--host", "http://h:1"], "only the load axis"),
    ([], "give --caps"),
    (["--caps", "4", "--users", "0"], "must be positive"),
    (["--caps", "4", "--slo", "ttft_p95=soon"], "bad SLO value"),
    (["--caps", "4", "--scenario", "nope.py"], "no such file"),
])
def test_plan_errors(argv, msg):
    with pytest.raises(ValueError, match=msg):
        make_plan(_args(*argv))


def _pt(cap, load, ttft, over=0.0):
    return Point(cap, load, {"ttft_p95_ms": ttft, "error_rate": over, "overload_rate": over, "ok": 25,
                             "steady_window_info": {"duration_s": 25.0},
                             "goodput": load * 1.0, "output_tokens_per_s": load * 10.0})


def test_capacity_and_recommendation():
    slo = slo_spec("ttft_p95=500")
    pts = [_pt(4, 1, 100), _pt(4, 2, 200), _pt(4, 4, 300, over=0.3),  # cap 4 rejects at 4 users
           _pt(8, 1, 100), _pt(8, 2, 200), _pt(8, 4, 450), _pt(8, 8, 900),  # cap 8 too slow at 8
           _pt(16, 1, 600), _pt(16, 2, 100)]  # fails at the lowest load: sustains nothing
    table = {c.cap: c for c in capacity(pts, slo)}
    assert table[4].max_load == 2 and "error rate 30.0%" in table[4].limiting
    assert table[8].max_load == 4 and "ttft_p95_ms 900.0 > 500" in table[8].limiting
    assert table[16].max_load is None
    rec = recommend(list(table.values()))
    assert rec.cap == 8 and rec.max_load == 4 and "cap 8 sustains the most load" in rec.reason
    none = recommend(capacity([_pt(4, 1, 900)], slo))
    assert none.cap is None and "no cap met the SLO" in none.reason


def test_sweep_end_to_end_and_resume(tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "harness", "sweep", "--caps", "1,4", "--users", "1,3", "--duration", "2.5",
           "--warmup", "0.5", "--model", "simulated", "--server-args", "--sim-ttft-ms 30 --sim-itl-ms 5",
           "--input-tokens", "fixed:8", "--output-tokens", "fixed:8", "--slo", "ttft_p95=500",
           "--no-point-reports", "--min-window", "1", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((out / "sweep.json").read_text())
    assert len(data["points"]) == 4 and all(p["complete"] for p in data["points"])
    for cap in (1, 4):
        for users in (1, 3):
            d = out / f"cap-{cap}" / f"users-{users}"
            assert (d / "records.jsonl").stat().st_size > 0 and (d / "point.json").exists()
    by = {(p["cap"], p["load"]): p for p in data["points"]}
    # cap 1 with 3 users must turn requests away; cap 4 must not
    assert by[(1, 3.0)]["summary"]["overload_rate"] > 0
    assert by[(4, 3.0)]["summary"]["overload_rate"] == 0.0
    cap_table = {c["cap"]: c for c in data["capacity"]}
    assert cap_table[1]["max_load"] == 1.0 and cap_table[4]["max_load"] == 3.0
    assert data["recommended"]["cap"] == 4
    html = (out / "sweep.html").read_text()
    assert "Recommended cap: 4" in html and html.count("data:image/png;base64,") == 2
    # resume: every point is complete, so nothing runs again
    before = (out / "cap-1" / "users-1" / "records.jsonl").stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "done earlier" in again.stderr
    assert (out / "cap-1" / "users-1" / "records.jsonl").stat().st_mtime_ns == before
