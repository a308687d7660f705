"""harness.load_run: one row per request with the dictionary's metrics in ms; harness export csv|parquet."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from synthetic_runs import closed_loop, write_run

import harness
from harness import metrics as m


def test_load_run_has_the_dictionary_metrics_per_request(tmp_path) -> None:
    recs = closed_loop(30, users=3, overloaded_every=5)
    run = write_run(tmp_path / "run", recs)
    df = harness.load_run(run)
    assert len(df) == len(recs) and list(df.request_id) == [r.request_id for r in recs]
    for name, d in m.METRICS.items():
        if d.scope == "request":
            want = [d.fn(r) for r in recs]
            got = df[f"{name}_{d.unit}"].tolist()
            assert all((w is None and g != g) or g == pytest.approx(w) for w, g in zip(want, got, strict=True)), name
    assert df.itl_ms.iloc[0] == pytest.approx(m.itl_ms(recs[0]))
    assert df.outcome.value_counts().to_dict() == {"ok": 24, "overloaded": 6}
    assert df.ok.sum() == 24 and df.output_tokens.tolist() == [m.output_tokens(r) for r in recs]
    assert str(df.send_time.dt.tz) == "UTC"


def test_export_csv_and_parquet_from_another_directory(tmp_path) -> None:
    run = write_run(tmp_path / "run", closed_loop(12, users=2))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for fmt in ("csv", "parquet"):
        p = subprocess.run([sys.executable, "-m", "harness", "export", str(run), "--format", fmt], cwd=elsewhere,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
    csv = pd.read_csv(run / "requests.csv")
    par = pd.read_parquet(run / "requests.parquet")
    assert len(csv) == len(par) == 12 and list(csv.columns) == list(par.columns)
    assert json.loads(csv.itl_ms.iloc[0]) == pytest.approx(list(par.itl_ms.iloc[0]))
    assert list(elsewhere.iterdir()) == []
    bad = subprocess.run([sys.executable, "-m", "harness", "export", str(tmp_path / "nope")], cwd=elsewhere,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no such run directory" in bad.stderr
