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


FOLD_PROBE = r'''
import json, random
from harness.locust.live import FOLD_RECORDS, LiveStats, record_us
from harness.metrics import HdrAccumulator
from harness.records import RequestRecord

random.seed(7)
values = [random.choice([0, 1, 5, 2047, 2048, 2049, 4097]) for _ in range(50)]
values += [random.randint(1, 10**10) for _ in range(2000)] + [-3]
batch, single = HdrAccumulator(), HdrAccumulator()
record_us(batch, values)
for v in values:
    single.record_ms(v / 1000.0)
recs = []
for i in range(FOLD_RECORDS + 5):
    t0 = i * 10**9
    toks = sorted(t0 + random.randint(10**6, 10**9) for _ in range(random.choice([1, 2, 64])))
    recs.append(RequestRecord(send_ns=t0, intended_ns=t0, token_ns=toks, tokens_per_event=[1] * len(toks),
                              output_tokens_events=len(toks), end_ns=toks[-1], outcome="ok"))
stats = LiveStats()
for r in recs:
    stats.add(r)
gaps = HdrAccumulator()
for r in recs:  # itl_ms's gaps, rounded to us in integer arithmetic
    for a, b in zip(r.token_ns, r.token_ns[1:]):
        gaps.h.record_value(max(1, (b - a + 500) // 1000))
print(json.dumps({"batch": batch.encode(), "single": single.encode(), "summary": [batch.summary_ms(), single.summary_ms()],
                  "itl": stats.take_delta()["hist"]["itl"], "itl_single": gaps.encode()}))
'''


def test_batched_recording_equals_recording_one_by_one():
    out = json.loads(subprocess.run([sys.executable, "-c", FOLD_PROBE], capture_output=True, text=True, timeout=60,
                                    check=True).stdout)
    assert out["batch"] == out["single"]
    assert out["summary"][0] == out["summary"][1]
    assert out["itl"] == out["itl_single"]  # folded in batches of FOLD_RECORDS and at the view



STEP_PROBE = r'''
import json, random
from harness.locust.live import FOLD_RECORDS, LiveStats
from harness.records import RequestRecord

rnd = random.Random(11)
recs = []
for i in range(3 * FOLD_RECORDS + 7):
    t0 = i * 10**8
    toks = sorted(t0 + rnd.randint(10**6, 10**9) for _ in range(rnd.choice([1, 3, 64])))
    recs.append(RequestRecord(send_ns=t0, intended_ns=t0 - rnd.randint(0, 10**6), token_ns=toks,
                              tokens_per_event=[1] * len(toks), output_tokens_events=len(toks), end_ns=toks[-1],
                              outcome=rnd.choice(["ok", "ok", "ok", "overloaded", "incomplete"])))
whole, steps = LiveStats(), LiveStats()
steps.step_folds = True
views = []
for i, r in enumerate(recs):
    whole.add(r)
    steps.add(r)
    if steps.folding and i % 3:  # batches folded step by step, one step per record added
        steps.fold_step()
    if i == 2 * FOLD_RECORDS + 1:  # a view finishes a batch in progress
        views.append([steps.attempted, whole.attempted])
a, b = whole.take_delta(), steps.take_delta()
print(json.dumps({"whole": a, "steps": b, "views": views}))
'''


def test_stepwise_fold_equals_the_whole_fold_also_with_views_between_steps():
    out = json.loads(subprocess.run([sys.executable, "-c", STEP_PROBE], capture_output=True, text=True, timeout=60,
                                    check=True).stdout)
    assert out["views"] and all(v[0] == v[1] for v in out["views"])
    assert out["whole"] == out["steps"]
    assert out["whole"]["output_tokens"] > 0 and out["whole"]["hist"]["itl"]
