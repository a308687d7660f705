"""The live view's latency table gains the reasoning/tool-call rows only for traffic that has them.

Checked in a subprocess: harness.locust imports Locust, which monkey-patches the process it is imported in.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r'''
import json
from harness.locust.live import LiveStats
from harness.metrics import tool_call_ms, ttft_answer_ms
from harness.records import RequestRecord

MS = 1_000_000

def rec(**kw):
    base = dict(send_ns=0, intended_ns=0, headers_ns=5 * MS, token_ns=[100 * MS, 120 * MS, 140 * MS],
                tokens_per_event=[1, 1, 1], output_tokens_events=3, end_ns=150 * MS, outcome="ok")
    base.update(kw)
    return RequestRecord(**base)

plain = LiveStats()
plain.add(rec())
reasoning = rec(first_reasoning_ns=100 * MS, first_answer_ns=140 * MS, reasoning_tokens=2)
tool = rec(first_tool_call_ns=120 * MS, tool_call_end_ns=140 * MS, tool_call_tokens=2, finish_reason="tool_calls")
mixed = LiveStats()
mixed.add(reasoning)
mixed.add(tool)
print(json.dumps({"plain": plain.latency_rows(), "mixed": mixed.latency_rows(),
                  "ttft_answer": ttft_answer_ms(reasoning), "tool_call": tool_call_ms(tool)}))
'''


def test_channel_rows_only_for_reasoning_and_tool_traffic_with_the_dictionary_values():
    out = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                                    check=True).stdout)
    assert [r["metric"] for r in out["plain"]] == ["TTFT", "ITL", "TPOT", "E2E", "Schedule lag"]
    rows = {r["metric"]: r for r in out["mixed"]}
    answer, tool = rows["TTFT, first answer token"], rows["Tool-call completion"]
    assert answer["count"] == 1 and tool["count"] == 1
    assert out["ttft_answer"] == 140.0 and out["tool_call"] > 0
    # HdrHistogram: 3 significant digits
    assert abs(answer["p50"] - out["ttft_answer"]) <= out["ttft_answer"] * 1e-3
    assert abs(tool["p50"] - out["tool_call"]) <= out["tool_call"] * 1e-3 + 0.01
