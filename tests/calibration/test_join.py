"""The client/server timestamp join, level parsing, the limit and the client-bound check, on known data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.analysis.calibration_limit import (
    Limit,
    check_run,
    client_bound_reasons,
    default_path,
    load_limit,
    worker_loads,
)
from harness.calibration import levels as L
from harness.calibration import result
from harness.calibration.join import join, read_trace
from harness.records import RequestRecord

MS = 1_000_000


def write_trace(path: Path, lines: list[tuple[str, int, int]]) -> Path:
    with open(path, "w") as fh:
        for rid, index, t in lines:
            fh.write(json.dumps({"request_id": rid, "index": index, "t_ns": t}) + "\n")
        fh.write('{"request_id": "broken"\n')  # a torn last line is skipped
    return path


def test_join_known_delays(tmp_path: Path) -> None:
    # Request a: server writes at 100, 120, 140 ms; client stamps 0.5, 0.7, 0.4 ms later.
    # Request b: server writes at 200, 230 ms; client stamps 1.0 ms later, then 0.2 ms *before* the stamp.
    trace = write_trace(tmp_path / "trace.jsonl", [
        ("a", 1, 100 * MS), ("a", 2, 120 * MS), ("a", 3, 140 * MS),
        ("b", 1, 200 * MS), ("b", 2, 230 * MS), ("other", 1, 1 * MS)])
    a = RequestRecord(request_id="a", send_ns=90 * MS,
                      token_ns=[100 * MS + 500_000, 120 * MS + 700_000, 140 * MS + 400_000])
    b = RequestRecord(request_id="b", send_ns=190 * MS, token_ns=[201 * MS, 230 * MS - 200_000])
    res = join([a, b], read_trace(trace))
    assert res.client_tokens == 5 and res.joined == 5 and res.coverage == 1.0 and res.requests == 2
    assert res.ttft_error_ms == pytest.approx([0.5, 1.0])
    assert res.delay_ms == pytest.approx([0.5, 0.7, 0.4, 1.0, -0.2])
    # ITL error = client gap - server gap = delay[i] - delay[i-1]
    assert res.itl_error_ms == pytest.approx([0.2, -0.3, -1.2])
    s = res.summary()
    assert s["ttft_error_ms"]["max"] == pytest.approx(1.0) and s["ttft_error_ms"]["p50"] == pytest.approx(0.75)
    assert s["itl_abs_error_ms"]["max"] == pytest.approx(1.2) and s["itl_error_ms"]["min"] == pytest.approx(-1.2)
    assert s["join_coverage"] == 1.0


def test_join_missing_lines_and_warmup(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [("a", 1, 10 * MS), ("a", 2, 20 * MS), ("a", 4, 40 * MS),
                                              ("a", 5, 50 * MS), ("b", 1, 60 * MS)])
    a = RequestRecord(request_id="a", token_ns=[t * MS + 100_000 for t in (10, 20, 30, 40, 50)])
    unknown = RequestRecord(request_id="zzz", token_ns=[70 * MS])
    res = join([a, unknown], read_trace(trace))
    # token 3 of a has no server line: not joined, and it breaks the ITL chain (no 2->4 pair)
    assert (res.client_tokens, res.joined) == (6, 4)
    assert res.coverage == pytest.approx(4 / 6)
    assert res.itl_error_ms == pytest.approx([0.0, 0.0])  # pairs 1->2 and 4->5
    # warm-up: only tokens the server wrote at >= 35 ms count; the first-token error needs token 1
    late = join([a], read_trace(trace), t_from_ns=35 * MS)
    assert late.joined == 2 and late.ttft_error_ms == [] and late.itl_error_ms == pytest.approx([0.0])
    # time filter of the reader
    assert set(read_trace(trace, t_min_ns=45 * MS)) == {"a", "b"} and read_trace(trace, t_max_ns=5 * MS) == {}


def test_levels_parse_and_script() -> None:
    lv = L.parse_levels("16, 256@10k,512@20000")
    assert [(x.streams, x.tokens_per_s) for x in lv] == [(16, 625.0), (256, 10000.0), (512, 20000.0)]
    # the scripted rate reproduces the offered rate: streams * n / (ttft + (n-1) * itl)
    for x in lv:
        rate = x.streams * L.OUTPUT_TOKENS / ((L.TTFT_MS + (L.OUTPUT_TOKENS - 1) * x.itl_ms) / 1000)
        assert rate == pytest.approx(x.tokens_per_s)
    for bad in ("", "abc", "0", "16@0", "4@100000"):
        with pytest.raises(ValueError, match="--levels"):
            L.parse_levels(bad)


def _level(label: str, streams: int, rate: float, ttft_p99: float, itl_p99: float, cov: float = 1.0) -> dict:
    return {"level": label, "streams": streams, "offered_tokens_per_s": rate, "achieved_tokens_per_s": rate * 0.97,
            "ttft_error_ms": {"p99": ttft_p99}, "itl_abs_error_ms": {"p99": itl_p99}, "join_coverage": cov}


def test_find_limit_largest_within_budget(tmp_path: Path) -> None:
    levels = [_level("16", 16, 625, 0.3, 0.2), _level("64", 64, 2500, 0.9, 0.5),
              _level("128", 128, 5000, 0.8, 1.4), _level("256", 256, 10000, 0.95, 0.99, cov=0.9)]
    doc = result.build(levels, 1.0, {}, __import__("datetime").datetime.now(), 1.0, result.machine_info())
    assert [lv["within_budget"] for lv in doc["levels"]] == [True, True, False, False]
    assert doc["limit"]["streams"] == 64 and doc["limit"]["tokens_per_s"] == pytest.approx(2425)
    assert doc["machine"]["cpu_count"] and doc["software"]["packages"]["locust"]
    path = result.write(doc, tmp_path / "calibration.json")
    assert "limit per worker: 64 streams" in result.table(doc)
    lim = load_limit(path)
    assert lim == Limit(64, pytest.approx(2425), 1.0, str(path))
    none = result.build([_level("16", 16, 625, 3.0, 0.2)], 1.0, {}, __import__("datetime").datetime.now(), 1.0, {})
    assert none["limit"] is None and "none" in result.table({**none, "machine": result.machine_info()})


def test_default_path_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HARNESS_CALIBRATION", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_path() == tmp_path / "stream-harness" / "calibration.json"
    monkeypatch.setenv("HARNESS_CALIBRATION", str(tmp_path / "x.json"))
    assert default_path() == tmp_path / "x.json"
    monkeypatch.setenv("HARNESS_CALIBRATION", "off")
    assert default_path() is None and load_limit() is None


def _stream(worker: str, send_s: float, n: int, gap_ms: float = 10.0) -> RequestRecord:
    send = int(send_s * 1e9)
    toks = [send + int((i + 1) * gap_ms * MS) for i in range(n)]
    return RequestRecord(worker=worker, send_ns=send, token_ns=toks, end_ns=toks[-1] + MS)


def test_worker_loads_and_client_bound(tmp_path: Path) -> None:
    # worker w0: 3 overlapping streams of 100 tokens over ~1 s each; w1: one stream
    recs = [_stream("w0", 100.0, 100), _stream("w0", 100.2, 100), _stream("w0", 100.4, 100), _stream("w1", 100, 50)]
    loads = worker_loads(recs)
    assert loads["w0"].streams == 3 and loads["w1"].streams == 1
    # 300 events in one 5 s window; the worker's token span is 0.01 .. 1.4 s -> 300 / 1.39 s
    assert loads["w0"].tokens_per_s == pytest.approx(300 / 1.39)
    within = Limit(4, 1000.0, 1.0, "cal.json")
    assert client_bound_reasons(recs, within) == []
    tight = Limit(2, 100.0, 1.0, "cal.json")
    reasons = client_bound_reasons(recs, tight)
    assert any(r.startswith("w0: 216 token events/s > calibrated limit 100") for r in reasons)
    assert any(r.startswith("w0: 3 concurrent streams > calibrated limit 2") for r in reasons)
    assert not any(r.startswith("w1") for r in reasons)
    assert "no load within" in client_bound_reasons(recs, Limit(None, None, 1.0, "cal.json"))[0]
    assert client_bound_reasons([], tight) == [] and client_bound_reasons(recs, None) == []
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_limit(bad)
    assert check_run(recs, bad) == []  # an unreadable calibration is ignored with a warning
