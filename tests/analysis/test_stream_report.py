"""The large-run reader (harness.analysis.stream): the same figures as the exact path, chunk by chunk.

Small runs are read with tiny chunks (so many chunks straddle the steady window's edges and are read
again) by two worker processes, and compared with the per-record path figure by figure: equal when the
values fit the exact budget, and within HdrHistogram's precision (the hdrh package's own percentiles of
the same values) when a zero budget forces histograms.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields

import numpy as np
import pytest
from stream_records import varied
from synthetic_runs import closed_loop, write_run

from harness import metrics as m
from harness.analysis import columns as C
from harness.analysis import hdr
from harness.analysis.frame import GAP_METRICS, REQUEST_METRICS, build_frame, load_frame
from harness.analysis.report import build_report
from harness.analysis.summary import window_mask
from harness.records import RequestRecord

SLO = m.Slo(ttft_ms=60.0, itl_ms=8.0, tpot_ms=5.0, e2e_ms=100.0)


def _block(recs):
    return C.block_arrays(C.parse_block(("\n".join(r.to_json() for r in recs) + "\n").encode()))


@pytest.mark.parametrize("slo", [None, SLO])
def test_vectorized_columns_equal_the_dictionary_per_record(slo):
    recs = varied(1500, seed=1)
    ref = build_frame(recs, slo)
    got = C.columns(_block(recs), slo)
    assert ref.cols.keys() == got.cols.keys()
    for k, v in ref.cols.items():
        assert v.dtype == got.cols[k].dtype, k
        assert np.array_equal(v, got.cols[k], equal_nan=True), k
    for k in GAP_METRICS:
        assert np.array_equal(ref.gaps[k], got.gaps[k]), k
    assert len(ref.gaps["itl"]) > 1000 and not np.array_equal(ref.gaps["itl"], ref.gaps["itl_per_token"])
    assert np.array_equal(ref.gap_row, got.gap_row)
    # every request metric has values in this data, so each formula was compared on something
    assert all((~np.isnan(ref.cols[k])).sum() > 10 for k in REQUEST_METRICS)


def test_a_request_metric_without_a_formula_is_computed_by_the_dictionary():
    def double_ttft(r):
        """Twice the TTFT, ms (a test metric)."""
        v = m.ttft_ms(r)
        return None if v is None else 2 * v

    m.register_metric(m.MetricDef("test_double_ttft", "ms", "request", double_ttft))
    try:
        recs = varied(200, seed=4)
        import harness.analysis.frame as F

        names = (*F.REQUEST_METRICS, "test_double_ttft")
        old_r, old_c = F.REQUEST_METRICS, C.REQUEST_METRICS
        F.REQUEST_METRICS = C.REQUEST_METRICS = names  # the tuples are taken at import time
        try:
            data = ("\n".join(r.to_json() for r in recs) + "\n").encode()
            assert C.schema_for(data).names == [f.name for f in fields(RequestRecord)]
            got = C.columns(C.block_arrays(C.parse_block(data, C.schema_for(data)))).cols["test_double_ttft"]
        finally:
            F.REQUEST_METRICS, C.REQUEST_METRICS = old_r, old_c
        want = np.array([np.nan if (v := double_ttft(r)) is None else v for r in recs])
        assert np.array_equal(got, want, equal_nan=True) and (~np.isnan(want)).sum() > 100
    finally:
        m.METRICS.pop("test_double_ttft", None)


def test_one_token_blocks_skip_the_token_counts():
    one = closed_loop(20, users=2)
    data = ("\n".join(r.to_json() for r in one) + "\n").encode()
    assert C.schema_for(data) is C.SCHEMA_ONE_TOKEN
    assert C.schema_for(data.replace(b'"tokens_per_event":[1,', b'"tokens_per_event": [1,', 1)) is C.SCHEMA
    assert C.schema_for(data.replace(b'"tokens_per_event":[1,', b'"tokens_per_event":[2,', 1)) is C.SCHEMA
    assert C.schema_for(("\n".join(r.to_json() for r in varied(50)) + "\n").encode()) is C.SCHEMA


def test_lines_longer_than_a_parse_block_are_read():
    recs = closed_loop(3, users=1, n_tokens=80_000)  # ~1.4 MB lines
    data = ("\n".join(r.to_json() for r in recs) + "\n").encode()
    assert len(data) > 3 * C.BLOCK_BYTES
    got = C.columns(C.block_arrays(C.parse_block(data)))
    assert np.array_equal(got.gaps["itl"], build_frame(recs).gaps["itl"])


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: missing on one side" for k in set(a) ^ set(b)]
        for k in set(a) & set(b):
            out += _diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _run(tmp_path, recs):
    run = write_run(tmp_path / "run", recs)
    with open(run / "records.jsonl", "a", encoding="utf-8") as fh:  # what a killed writer leaves, and noise
        fh.write('\n[1, 2]\n   \n{"send_ns": 5, "token_ns": [1, 2')
    return run


def test_chunked_report_equals_the_exact_report(tmp_path):
    slo = "ttft_p95=60,itl=8,e2e=100"
    recs = varied(800, seed=2) + closed_loop(600, users=6, noise=0.3, overloaded_every=7, t0_ns=10**13 + 10**11)
    run = _run(tmp_path, recs)
    exact = build_report(run, tmp_path / "exact", slo, warmup_s=3.3, stream=False)
    chunked = build_report(run, tmp_path / "chunked", slo, warmup_s=3.3, stream=True, chunk_bytes=20_000)
    assert exact.summary["steady_window_info"]["applied"]
    assert _diff(exact.summary, chunked.summary) == []
    assert chunked.summary["percentiles"]["text"] == "exact (from every record)"
    assert [p.path.name for p in exact.plots] == [p.path.name for p in chunked.plots]
    assert json.loads((tmp_path / "chunked" / "summary.json").read_text())["whole_run"]["requests"] == len(recs)
    assert (tmp_path / "chunked" / "summary.md").read_text() == (tmp_path / "exact" / "summary.md").read_text()


def test_histogram_report_is_hdrhistogram_of_the_window_values(tmp_path):
    recs = closed_loop(1000, users=8, noise=0.4, overloaded_every=11, n_tokens=12) + varied(400, seed=3)
    run = _run(tmp_path, recs)
    exact = build_report(run, tmp_path / "exact", None, warmup_s=2.7, stream=False).summary
    got = build_report(run, tmp_path / "hdr", None, warmup_s=2.7, stream=True, chunk_bytes=20_000,
                       budget_bytes=0).summary
    methods = got["percentiles"]["method"]
    assert methods["ttft"] == "exact" and methods["itl"] == methods["e2e"] == methods["tpot"] == "hdr"
    frame = load_frame(run)
    sub = frame.subset(window_mask(frame, (got["steady_window"]["start_ns"], got["steady_window"]["end_ns"])))
    ok = sub.cols["ok"]
    checked = 0
    for name in (*REQUEST_METRICS, *GAP_METRICS):
        unit = m.METRICS[name].unit
        assert got[f"{name}_count"] == exact[f"{name}_count"], name
        if not exact[f"{name}_count"]:
            continue
        for st in ("min", "max"):
            assert got[f"{name}_{st}_{unit}"] == exact[f"{name}_{st}_{unit}"], (name, st)
        assert got[f"{name}_mean_{unit}"] == pytest.approx(exact[f"{name}_mean_{unit}"], rel=1e-12)
        if methods[name] != "hdr":
            continue
        values = sub.gaps[name] if name in GAP_METRICS else sub.cols[name][ok]
        acc = m.HdrAccumulator()
        for v in values[~np.isnan(values)].tolist():
            acc.record_ms(v)
        want = acc.summary_ms()
        for key in m.PERCENTILE_KEYS.values():
            assert got[f"{name}_{key}_{unit}"] == want[key], (name, key)
            if name in ("ttfb", "tpot", "e2e", "itl"):  # nearest rank vs interpolation: close on dense values
                assert got[f"{name}_{key}_{unit}"] == pytest.approx(exact[f"{name}_{key}_{unit}"], rel=0.02,
                                                                    abs=0.002), (name, key)
        checked += 1
    assert checked >= 8
    for key in ("outcomes", "tokens", "failures", "request_throughput", "output_tokens_per_s", "error_rate",
                "overload_rate", "measurement_window_s", "ttft_p99_ms", "steady_window_info"):
        assert got[key] == exact[key], key
    md = (tmp_path / "hdr" / "summary.md").read_text()
    assert "HdrHistogram percentiles, 3 significant digits" in md and "| HdrHistogram (3 digits) |" in md
    assert "HdrHistogram (3 digits)" in (tmp_path / "hdr" / "report.html").read_text()


def test_histogram_counts_match_hdrh():
    rng = np.random.default_rng(5)
    v = np.r_[rng.lognormal(3, 2, 20000), [0.0, -1.0, 0.0004, 5e9]]
    acc = m.HdrAccumulator()
    for x in v.tolist():
        acc.record_ms(x)
    idx, cnt = hdr.sparse_counts(np.r_[v, np.nan])
    counts = hdr.dense([(idx[:10], cnt[:10]), (idx[10:], cnt[10:])])
    assert counts.sum() == acc.count and all(acc.h.get_count_at_index(int(i)) == c for i, c in zip(idx, cnt, strict=True))
    got = hdr.summary(counts, len(v), float(v.mean()), float(v.min()), float(v.max()))
    want = acc.summary_ms()
    assert all(got[k] == want[k] for k in m.PERCENTILE_KEYS.values())
