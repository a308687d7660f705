"""RequestRecord, RecordSink (flush within 1 s, SIGKILL loses at most ~1 s) and readers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import harness
from harness.analysis.dataframe import export
from harness.records import (
    RECORD_COLUMNS,
    RecordSink,
    RequestRecord,
    iter_records,
    write_run_meta,
)


def sample(i: int = 0) -> RequestRecord:
    return RequestRecord(run_id="r", request_id=f"q{i}", protocol="tgi", send_ns=1000 + i, token_ns=[2000, 3000],
                         tokens_per_event=[1, 2], end_ns=4000, output_tokens_events=3, text="héllo 中")


def test_json_roundtrip_and_unknown_keys_ignored():
    r = sample()
    line = r.to_json()
    assert "\n" not in line and "中" in line
    d = json.loads(line)
    assert set(d) == set(RECORD_COLUMNS)
    assert RequestRecord.from_dict({**d, "from_the_future": 1}) == r
    assert r.ok and not RequestRecord(outcome="timeout").ok


def test_sink_flushes_within_one_second_without_close(tmp_path):
    sink = RecordSink(tmp_path, flush_interval_s=1.0)
    sink.write(sample(1))
    time.sleep(1.05)
    sink.write(sample(2))  # the interval has passed: this write flushes both
    with open(tmp_path / "records.jsonl", encoding="utf-8") as fh:  # an independent reader
        lines = fh.read().splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == ["q1", "q2"]
    sink.write(sample(3))
    sink.flush()
    assert len(list(iter_records(tmp_path))) == 3
    sink.close()
    assert sink.count == 3


CHILD = r"""
import sys, time
from harness.records import RecordSink, RequestRecord
sink = RecordSink(sys.argv[1], flush_interval_s=1.0)
i = 0
while True:
    sink.write(RequestRecord(request_id=str(i), send_ns=time.monotonic_ns()))
    i += 1
    time.sleep(0.01)
"""


def test_sigkilled_writer_loses_at_most_about_one_second(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "records.jsonl").exists() or (tmp_path / "records.jsonl").stat().st_size == 0:
            assert time.monotonic() < deadline, "the sink never flushed"
            time.sleep(0.05)
        time.sleep(1.6)
    finally:
        killed_at = time.monotonic_ns()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    recs = iter_records(tmp_path)
    assert recs, "nothing was flushed"
    lost_s = (killed_at - max(r.send_ns for r in recs)) / 1e9
    assert lost_s < 1.6  # flush interval 1 s + scheduling slack on a busy 2-core machine


def test_readers_tolerate_a_truncated_last_line(tmp_path):
    good = [sample(i).to_json() for i in range(3)]
    (tmp_path / "records.jsonl").write_text("\n".join(good) + "\n" + good[0][: len(good[0]) // 2])
    assert [r.request_id for r in iter_records(tmp_path)] == ["q0", "q1", "q2"]
    assert [r.request_id for r in iter_records(tmp_path / "records.jsonl")] == ["q0", "q1", "q2"]
    df = harness.load_run(tmp_path)
    assert len(df) == 3 and list(df["request_id"]) == ["q0", "q1", "q2"]
    assert list(df["itl_ms"].iloc[0]) == [(3000 - 2000) / 1e6]  # token_ns gaps, ms
    out = export(tmp_path, "parquet")
    assert out.exists()
    df2 = pd.read_parquet(out)
    assert len(df2) == 3 and list(df2["request_id"]) == ["q0", "q1", "q2"]


def test_run_meta_has_clock_anchors_and_merges(tmp_path):
    write_run_meta(tmp_path, scenario="chat", users=4)
    p = write_run_meta(tmp_path, client_bound=False)
    meta = json.loads(p.read_text())
    assert meta["scenario"] == "chat" and meta["users"] == 4 and meta["client_bound"] is False
    assert abs(meta["wall_anchor_ns"] - time.time_ns()) < 60e9 and meta["mono_anchor_ns"] > 0
