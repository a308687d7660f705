"""benchmarks/peers.py figures on a known trace, with each peer's output written in its documented format.

No peer is installed here: the files are built the way each tool writes them (vLLM `bench serve
--save-detailed` JSON, AIPerf's raw and per-record JSONL exports, GuideLLM's JSON report, the
harness's records.jsonl), from one server trace with known client delays, and the figures must
come out as constructed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.calibration.join import read_trace
from harness.records import RequestRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peers  # noqa: E402

MS = 1_000_000
SEND = 5_000 * MS
N = 4
#: server writes token k (1..4) of request j at SEND + j*s + 200 ms + (k-1)*20 ms; the client stamps each
#: 0.5 ms later, except token 3 (1.5 ms later)
DELAY_MS = {1: 0.5, 2: 0.5, 3: 1.5, 4: 0.5}


def server_ns(j: int, k: int) -> int:
    return SEND + j * 1000 * MS + 200 * MS + (k - 1) * 20 * MS


def client_ns(j: int, k: int) -> int:
    return server_ns(j, k) + int(DELAY_MS[k] * MS)


@pytest.fixture()
def trace(tmp_path: Path) -> dict:
    path = tmp_path / "trace.jsonl"
    with open(path, "w") as fh:
        for prefix in ("pv-", "ap-", "hx-", "gl-"):
            for j in range(2):
                for k in range(1, N + 1):
                    fh.write(json.dumps({"request_id": f"{prefix}{j}", "index": k, "t_ns": server_ns(j, k)}) + "\n")
    return read_trace(path)


def check_joined(fig: dict) -> None:
    assert fig["joined_requests"] == 2
    assert fig["ttft_inflation_ms"]["method"] == "join"
    assert fig["ttft_inflation_ms"]["p50"] == pytest.approx(0.5, abs=1e-3)
    assert fig["token_delay_every_ms"]["count"] == 2 * N
    assert fig["token_delay_every_ms"]["max"] == pytest.approx(1.5, abs=1e-3)
    # gaps 1-2: 0, 2-3: +1.0, 3-4: -1.0 -> |error| 0, 1, 1 per request
    assert fig["itl_abs_error_ms"]["count"] == 2 * (N - 1)
    assert fig["itl_abs_error_ms"]["max"] == pytest.approx(1.0, abs=1e-3)
    assert fig["itl_abs_error_ms"]["p50"] == pytest.approx(1.0, abs=1e-3)
    assert fig["server_itl_ms"]["p50"] == pytest.approx(20.0)


def test_vllm_detailed_json(tmp_path: Path, trace: dict) -> None:
    starts = [(SEND + j * 1000 * MS) / 1e9 for j in range(2)]
    doc = {"start_times": starts, "ttfts": [(client_ns(j, 1) - SEND - j * 1000 * MS) / 1e9 for j in range(2)],
           "itls": [[(client_ns(j, k + 1) - client_ns(j, k)) / 1e9 for k in range(1, N)] for j in range(2)],
           "latencies": [(client_ns(j, N) - SEND - j * 1000 * MS) / 1e9 for j in range(2)],
           "output_lens": [N, N], "errors": ["", ""]}
    (tmp_path / "vllm.json").write_text(json.dumps(doc))
    reqs = peers.read_vllm(tmp_path / "vllm.json")
    fig = peers.figures(reqs, trace, 200.0, 20.0)
    check_joined(fig)
    # vLLM TPOT = (latency - ttft) / (n - 1): client (t4 - t1) = server + 0 ms -> error 0
    assert fig["tpot_error_ms"]["method"] == "join"
    assert fig["tpot_error_ms"]["p50"] == pytest.approx(0.0, abs=1e-3)


def test_aiperf_raw_export(tmp_path: Path, trace: dict) -> None:
    raw, rec = [], []
    for j in range(2):
        rid = f"ap-{j}"
        start = SEND + j * 1000 * MS
        chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": " x"}}]}
        responses = [{"perf_ns": client_ns(j, k), "packets": [{"name": "data", "value": json.dumps(chunk)}]}
                     for k in range(1, N + 1)]
        responses.append({"perf_ns": client_ns(j, N) + MS, "packets": [
            {"name": "data", "value": json.dumps({"choices": [], "usage": {"completion_tokens": N}})}]})
        responses.append({"perf_ns": client_ns(j, N) + MS, "packets": [{"name": "data", "value": "[DONE]"}]})
        raw.append({"metadata": {"x_request_id": rid}, "start_perf_ns": start, "status": 200, "responses": responses})
        icl = [(client_ns(j, k + 1) - client_ns(j, k)) / MS for k in range(1, N)]
        rec.append({"metadata": {"x_request_id": rid}, "metrics": {
            "time_to_first_token": {"value": (client_ns(j, 1) - start) / MS, "unit": "ms"},
            "inter_chunk_latency": {"value": icl, "unit": "ms"},
            "inter_token_latency": {"value": (client_ns(j, N) - client_ns(j, 1)) / MS / (N - 1), "unit": "ms"},
            "output_token_count": {"value": N, "unit": "tokens"}}})
    (tmp_path / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in raw))
    (tmp_path / "rec.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rec))
    reqs = peers.read_aiperf(tmp_path / "raw.jsonl", tmp_path / "rec.jsonl")
    assert [len(r.token_ns) for r in reqs] == [N, N]  # the usage chunk and [DONE] are no token events
    check_joined(peers.figures(reqs, trace, 200.0, 20.0))


def test_harness_records(tmp_path: Path, trace: dict) -> None:
    lines = [RequestRecord(request_id=f"hx-{j}", send_ns=SEND + j * 1000 * MS,
                           token_ns=[client_ns(j, k) for k in range(1, N + 1)], tokens_per_event=[1] * N,
                           output_tokens_events=N).to_json()
             for j in range(2)]
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n")
    fig = peers.figures(peers.read_harness(tmp_path / "records.jsonl"), trace, 200.0, 20.0)
    check_joined(fig)
    assert fig["tpot_error_ms"]["p99"] == pytest.approx(0.0, abs=1e-3)


def test_guidellm_report_without_ids(tmp_path: Path, trace: dict) -> None:
    wall0 = 1_800_000_000.0  # GuideLLM stamps time.time(): no join, TTFT against the script
    succ = [{"info": {"timings": {"request_start": wall0 + j, "first_token_iteration": wall0 + j + 0.2025,
                                  "last_token_iteration": wall0 + j + 0.2025 + (N - 1) * 0.020,
                                  "token_iterations": N}},
             "output_metrics": {"text_tokens": N}} for j in range(2)]
    (tmp_path / "g.json").write_text(json.dumps({"benchmarks": [{"requests": {"successful": succ}}]}))
    reqs = peers.read_guidellm(tmp_path / "g.json")
    fig = peers.figures(reqs, trace, 200.0, 20.0)
    assert fig["joined_requests"] == 0
    assert fig["ttft_inflation_ms"]["method"] == "script"
    assert fig["ttft_inflation_ms"]["p50"] == pytest.approx(2.5, abs=1e-3)
    assert fig["tpot_error_ms"]["method"] == "distribution"
    assert fig["tpot_error_ms"]["p50"] == pytest.approx(0.0, abs=1e-3)
    assert fig["itl_abs_error_ms"] is None and fig["token_delay_every_ms"] is None


def test_pins_never_leave_torch_unpinned() -> None:
    for p in peers.PEERS.values():
        for step in p.steps:
            assert "--no-deps" in step or peers.TORCH in step, (p.name, step)
