"""Closed loop against the scripted simulated server: records, timing accuracy, Locust's CSV/JSON rows."""

from __future__ import annotations

import statistics

from locust_helpers import SCENARIOS, headless, read_csv, start_locust

from harness.metrics import itl_ms, ttft_ms
from harness.records import RequestRecord


def test_chat_stream_records_timing_and_locust_stats(sim, tmp_path):
    server = sim(64)
    run = start_locust(tmp_path, "chat", [*headless(server.url, 4, "4s", "--output-tokens", "fixed:12",
                                                    "--csv", str(tmp_path / "chat" / "csv"))],
                       SCENARIOS / "chat_stream.py")
    assert run.wait() == 0, run.log()[-3000:]

    rows = run.records()
    e2e = run.entry("E2E")
    # one line per attempted request (every attempt fires exactly one E2E event), ids unique
    assert len(rows) == e2e["num_requests"] > 10
    assert len({r["request_id"] for r in rows}) == len(rows)
    recs = [RequestRecord.from_dict(r) for r in rows]
    assert all(r.outcome == "ok" and r.scenario == "chat_stream" and r.output_tokens_events == 12 for r in recs)

    # scripted: TTFT 40 ms, ITL 15 ms
    ttft_med = statistics.median(ttft_ms(r) for r in recs)
    itl_med = statistics.median(g for r in recs for g in itl_ms(r))
    assert abs(ttft_med - 40.0) <= 2.0, ttft_med
    assert abs(itl_med - 15.0) <= 2.0, itl_med

    # Locust's own outputs carry the TTFT and E2E rows, E2E length = tokens
    ttft = run.entry("TTFT")
    assert ttft["name"] == "chat_stream" and ttft["num_requests"] == len(rows)
    assert e2e["total_content_length"] == 12 * len(rows)
    types = {r["Type"] for r in read_csv(tmp_path / "chat" / "csv_stats.csv")}
    assert {"TTFT", "E2E"} <= types

    meta = run.run_meta()
    assert meta["scenario"] == "chat_stream" and meta["records"] == len(rows) and meta["exit_code"] == 0
    assert (run.run_dir / "summary.json").exists()
