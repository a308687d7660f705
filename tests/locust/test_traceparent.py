"""Locust runs send W3C traceparent (derived from each record's request id) unless --no-traceparent."""

from __future__ import annotations

import json

from locust_helpers import SCENARIOS, headless, start_locust

from harness.client.tracecontext import trace_id_of


def test_traceparent_by_default_and_none_with_the_option(sim, tmp_path):
    trace = tmp_path / "trace.jsonl"
    server = sim(64, "--trace-file", str(trace))
    runs = {flag: start_locust(tmp_path, name, [*headless(server.url, 1, "2s", "--output-tokens", "fixed:4"),
                                                *([flag] if flag else [])], SCENARIOS / "chat_stream.py")
            for flag, name in (("", "on"), ("--no-traceparent", "off"))}
    for run in runs.values():
        assert run.wait(60) == 0, run.log()[-3000:]
    server.stop()  # flushes the trace file
    seen: dict[str, set] = {}
    for line in trace.read_text().splitlines():
        d = json.loads(line)
        seen.setdefault(d["request_id"], set()).add(d.get("trace_id"))
    on, off = runs[""].records(), runs["--no-traceparent"].records()
    assert on and off
    assert all(seen[r["request_id"]] == {trace_id_of(r["request_id"])} for r in on)
    assert all(seen[r["request_id"]] == {None} for r in off)
