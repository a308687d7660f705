"""Summary percentiles are exact on records with known distributions, from memory and from files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic_runs import closed_loop, write_run

from harness import metrics as m
from harness.analysis import frame as frame_mod
from harness.analysis.frame import build_frame, load_frame
from harness.analysis.steady import detect
from harness.analysis.summary import analyse, dist, parse_slo, summarize
from harness.records import RequestRecord

MS = 1_000_000


def _ttft_records(ttfts_ms: list[int]) -> list[RequestRecord]:
    """One ok request per TTFT value, 3 token events 10 ms apart, sequential."""
    out, t = [], 10**12
    for i, v in enumerate(ttfts_ms):
        first = t + v * MS
        toks = [first, first + 10 * MS, first + 20 * MS]
        out.append(RequestRecord(request_id=str(i), intended_ns=t, send_ns=t, attempt_send_ns=t, headers_ns=t + MS,
                                 token_ns=toks, tokens_per_event=[1, 1, 1], end_ns=toks[-1] + MS,
                                 output_tokens_server=3, output_tokens_events=3))
        t = toks[-1] + 2 * MS
    return out


def test_percentiles_exact_for_uniform_ttft():
    recs = _ttft_records(list(range(1, 101)))  # TTFT 1..100 ms
    s = summarize(recs)
    # numpy-style linear interpolation: rank = p/100 * 99
    assert s["ttft_count"] == 100
    assert s["ttft_min_ms"] == 1.0 and s["ttft_max_ms"] == 100.0
    assert s["ttft_p50_ms"] == pytest.approx(50.5, abs=1e-9)
    assert s["ttft_p90_ms"] == pytest.approx(90.1, abs=1e-9)
    assert s["ttft_p95_ms"] == pytest.approx(95.05, abs=1e-9)
    assert s["ttft_p99_ms"] == pytest.approx(99.01, abs=1e-9)
    assert s["ttft_p99_9_ms"] == pytest.approx(99.901, abs=1e-9)
    assert s["ttft_mean_ms"] == pytest.approx(50.5)
    # every gap is exactly 10 ms; 2 gaps per request
    assert s["itl_count"] == 200 and s["itl_p50_ms"] == 10.0 and s["itl_p99_9_ms"] == 10.0
    assert s["tpot_p50_ms"] == pytest.approx(10.0)
    assert s["e2e_min_ms"] == pytest.approx(22.0)
    assert s["outcomes"]["ok"] == 100 and s["overload_rate"] == 0.0
    assert s["tokens"]["output_total"] == 300 and s["tokens"]["mismatched"] == 0


def test_dist_matches_metric_dictionary():
    rng = np.random.default_rng(3)
    v = rng.lognormal(3, 1, 997)
    ours, ref = dist(v), m.distribution(v.tolist())
    assert ours.keys() == ref.keys()
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], rel=1e-12)


def test_failures_counted_not_in_latency_and_goodput():
    recs = closed_loop(40, users=2, ttft_ms=50, itl_ms=10, n_tokens=5, overloaded_every=4)
    slow = _ttft_records([500])[0]
    s = summarize(recs + [slow], slo=parse_slo("ttft=100"))
    assert s["outcomes"]["overloaded"] == 10
    assert s["ok"] == 31
    assert s["overload_rate"] == pytest.approx(10 / 41)
    assert s["ttft_count"] == 31 and s["ttft_max_ms"] == pytest.approx(500.0)
    # goodput counts the 30 fast ok requests, not the slow one nor the overloaded ones
    assert s["goodput"] == pytest.approx(30 / s["measurement_window_s"])
    assert s["request_throughput"] == pytest.approx(31 / s["measurement_window_s"])


def test_token_mismatch_accounting():
    recs = closed_loop(10, n_tokens=6, server_tokens_delta=1)
    s = summarize(recs)
    assert s["token_mismatch_rate"] == 1.0
    assert s["tokens"]["output_server_total"] == 70 and s["tokens"]["output_events_total"] == 60


@pytest.mark.parametrize("parallel", [False, True])
def test_file_frame_equals_memory_frame(tmp_path, monkeypatch, parallel):
    recs = closed_loop(300, users=6, noise=0.4, overloaded_every=7, seed=5)
    run = write_run(tmp_path / "run", recs)
    if parallel:
        monkeypatch.setattr(frame_mod, "PARALLEL_MIN_BYTES", 1)
    slo = parse_slo("ttft_p95=60,itl_p99=15")
    from_file = summarize(load_frame(run, slo, workers=2 if parallel else 1), slo)
    in_memory = summarize(closed_loop(300, users=6, noise=0.4, overloaded_every=7, seed=5), slo)
    assert json.dumps(from_file, sort_keys=True) == json.dumps(in_memory, sort_keys=True)


def test_truncated_last_line_is_skipped(tmp_path):
    run = write_run(tmp_path / "run", closed_loop(20))
    with open(run / "records.jsonl", "a") as fh:
        fh.write('{"run_id": "x", "send_ns": 12')
    assert len(load_frame(run)) == 20


def _ramp_run() -> list[RequestRecord]:
    """8 users joining one per second, 20 s of steady load, then leaving one per second."""
    recs, t0 = [], 10**12
    for u in range(8):
        t = t0 + u * m.NS_PER_S
        stop = t0 + (28 - u) * m.NS_PER_S
        while t < stop:
            toks = [t + 20 * MS + k * 10 * MS for k in range(8)]
            recs.append(RequestRecord(user=str(u), intended_ns=t, send_ns=t, token_ns=toks, tokens_per_event=[1] * 8,
                                      end_ns=toks[-1], output_tokens_events=8))
            t = toks[-1] + MS
    return recs


def test_steady_window_excludes_ramp_and_drain():
    recs = _ramp_run()
    f = build_frame(recs)
    w = detect(f.cols["send_ns"], f.cols["end_ns"])
    assert w is not None and w.detected
    t0 = 10**12
    # plateau 8 in flight; 80 % threshold = 6.4: reached in the 7th second, left after second 21
    assert (w.start_ns - t0) / m.NS_PER_S == pytest.approx(7.0, abs=1.0)
    assert (w.end_ns - t0) / m.NS_PER_S == pytest.approx(22.0, abs=1.0)
    s, _ = analyse(f, None)
    assert s["steady_window_info"]["applied"] is True
    assert s["requests"] < len(recs)


def test_short_run_falls_back_to_whole_run():
    recs = closed_loop(5, users=1)
    s, w = analyse(build_frame(recs), None)
    assert w is not None and not w.detected
    assert s["requests"] == 5 and s["steady_window_info"]["applied"] is False


@pytest.mark.parametrize("bad", ["ttft", "ttft_p95=abc", "foo_p95=3", "ttft_p97=5", "ttft_p95=-1"])
def test_bad_slo_is_a_value_error(bad):
    with pytest.raises(ValueError):
        parse_slo(bad)


def test_requests_cancelled_at_the_end_are_outside_the_window():
    recs = _ramp_run()
    last = {r.user: r for r in recs}  # each user's last request is cut off by the end of the run
    for r in last.values():
        r.outcome = "cancelled"
    s, w = analyse(build_frame(recs), None)
    assert w is not None and w.detected and "cancelled" in w.reason
    assert s["outcomes"]["cancelled"] == 0 and s["error_rate"] == 0.0


def test_partitioned_percentiles_equal_sorted(monkeypatch):
    from harness.analysis import summary as summary_mod

    v = np.random.default_rng(9).gamma(2.0, 7.0, 5001)
    v[::97] = np.nan
    full = dist(v)
    monkeypatch.setattr(summary_mod, "PARTITION_MIN", 10)
    assert dist(v) == full


def test_bundled_events_get_their_own_per_token_gaps(tmp_path):
    recs = closed_loop(6, users=1, n_tokens=4, itl_ms=10)
    r = recs[3]
    r.tokens_per_event = [1, 2, 1, 1]  # the second event carries two tokens
    f = build_frame(recs)
    assert f.gaps["itl_per_token"] is not f.gaps["itl"]
    assert f.gaps["itl"].tolist().count(10.0) == 18
    assert sorted(f.gaps["itl_per_token"].tolist())[0] == 5.0
    plain = build_frame(closed_loop(6, users=1, n_tokens=4))
    assert plain.gaps["itl_per_token"] is plain.gaps["itl"]
