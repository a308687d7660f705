"""The metric dictionary on hand-built records with known answers."""

from __future__ import annotations

import math

import pytest

from harness import metrics as m
from harness.records import Outcome, RequestRecord

MS = 1_000_000


def rec(send=None, tokens=(), end=None, outcome="ok", intended=None, headers=None, tpe=None, server=None,
        retok=None, attempt=None) -> RequestRecord:
    tpe = list(tpe) if tpe is not None else [1] * len(tokens)
    return RequestRecord(
        intended_ns=None if intended is None else intended * MS, send_ns=None if send is None else send * MS,
        attempt_send_ns=None if attempt is None else attempt * MS,
        headers_ns=None if headers is None else headers * MS, token_ns=[t * MS for t in tokens],
        tokens_per_event=tpe, end_ns=None if end is None else end * MS, outcome=outcome,
        output_tokens_server=server, output_tokens_events=sum(tpe), output_tokens_retokenized=retok)


# r1: open loop, bundled second event; r2: closed loop, no server count; r3: a 429; r4: a drop;
# r5: server count differs from events; r6: a retried request (attempt later than send)
R1 = rec(intended=0, send=10, headers=15, tokens=(110, 130, 160), tpe=(1, 2, 1), end=170, server=4)
R2 = rec(send=0, tokens=(50, 60), end=70)
R3 = rec(send=5, end=6, outcome=Outcome.OVERLOADED.value)
R4 = rec(intended=20, outcome=Outcome.DROPPED.value)
R5 = rec(send=100, tokens=(150, 200), end=300, server=3)
R6 = rec(send=0, attempt=400, headers=410, tokens=(500,), end=510, server=1)
ALL = [R1, R2, R3, R4, R5, R6]


def test_ttft_family():
    assert m.ttft_ms(R1) == 100 and m.ttft_intended_ms(R1) == 110
    assert m.ttft_ms(R2) == 50 and m.ttft_intended_ms(R2) == 50  # closed loop: intended falls back to send
    assert m.ttft_ms(R3) is None and m.ttft_intended_ms(R4) is None
    assert m.ttft_ms(R6) == 500  # user-perceived: from the first attempt's send
    assert m.ttfb_ms(R1) == 5 and m.ttfb_ms(R6) == 10 and m.ttfb_ms(R2) is None  # TTFB of the final attempt


def test_itl_tpot_e2e_lag():
    assert m.itl_ms(R1) == [20, 30] and m.itl_per_token_ms(R1) == [10, 30]
    assert m.itl_ms(R6) == [] and m.itl_per_token_ms(R2) == m.itl_ms(R2) == [10]
    assert m.output_tokens(R1) == 4 and m.output_tokens(R2) == 2
    assert m.tpot_ms(R1) == pytest.approx(50 / 3) and m.tpot_ms(R2) == 10
    assert m.tpot_ms(R6) is None and m.tpot_ms(R3) is None
    assert m.e2e_ms(R1) == 160 and m.e2e_intended_ms(R1) == 170 and m.e2e_ms(R3) == 1
    assert m.e2e_ms(R4) is None
    assert m.schedule_lag_ms(R1) == 10 and m.schedule_lag_ms(R2) is None


def test_token_mismatch():
    assert m.token_mismatch(R1) is False and m.token_mismatch(R2) is None and m.token_mismatch(R5) is True
    fixed = rec(send=0, tokens=(1, 2), end=3, server=3, retok=3)
    assert m.token_mismatch(fixed) is False  # the retokenized count wins over events
    assert m.token_mismatch_rate(ALL) == pytest.approx(1 / 3)  # comparable ok requests: R1, R5, R6
    # EOS counted by the server without a visible event (OpenAI empty delta): not a mismatch...
    eos = rec(send=0, tokens=(1, 2), end=3, server=3)
    eos.finish_reason = "stop"
    assert m.token_mismatch(eos) is False
    # ... but only for one token, and only when the stream ended on EOS
    eos.output_tokens_server = 4
    assert m.token_mismatch(eos) is True
    eos.output_tokens_server, eos.finish_reason = 3, "length"
    assert m.token_mismatch(eos) is True


def test_run_metrics():
    w = m.measurement_window_s(ALL)
    assert w == pytest.approx(0.51)  # first send 0 ms .. last end 510 ms
    assert m.measurement_window_s([]) == 0.0
    assert m.output_tokens_per_s(ALL, w) == pytest.approx((4 + 2 + 3 + 1) / 0.51)
    assert m.request_throughput(ALL, w) == pytest.approx(4 / 0.51)
    assert m.output_tokens_per_s(ALL, 0) == 0.0 and m.request_throughput(ALL, 0) == 0.0
    assert m.attempted(ALL) == 5 and m.drop_count(ALL) == 1
    assert m.overload_rate(ALL) == pytest.approx(1 / 5) and m.overload_rate([]) == 0.0
    counts = m.outcome_counts(ALL)
    assert counts["ok"] == 4 and counts["overloaded"] == 1 and counts["dropped"] == 1 and counts["timeout"] == 0
    assert set(counts) == {o.value for o in Outcome}
    rates = m.error_rate_by_class(ALL)
    assert rates["overloaded"] == pytest.approx(0.2) and "ok" not in rates and "dropped" not in rates


def test_slo_and_goodput_only_count_ok_requests_meeting_every_bound():
    slo = m.Slo(ttft_ms=100, itl_ms=30)
    assert slo.met_by(R1) and slo.met_by(R2) and not slo.met_by(R5)  # R5 ttft 50 ok, gap 50 > 30
    assert not slo.met_by(R3) and not slo.met_by(R6)  # failed; ttft 500 > 100
    assert m.goodput(ALL, 0.5, slo) == pytest.approx(2 / 0.5)
    assert m.Slo(e2e_ms=1000).met_by(R3) is False  # a fast failure never counts
    assert m.Slo(tpot_ms=5).met_by(R6) is False  # an unknown value cannot meet a set bound


def test_percentile_exact_linear_interpolation():
    v = [1.0, 2.0, 3.0, 4.0]
    assert m.percentile(v, 50) == 2.5 and m.percentile(v, 90) == pytest.approx(3.7)
    assert m.percentile(v, 99.9) == pytest.approx(3.997) and m.percentile(v, 0) == 1 and m.percentile(v, 100) == 4
    assert m.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        m.percentile([], 50)
    d = m.distribution(range(1, 101))
    assert d["count"] == 100 and d["mean"] == 50.5 and d["min"] == 1 and d["max"] == 100
    assert d["p50"] == 50.5 and d["p90"] == pytest.approx(90.1) and d["p99"] == pytest.approx(99.01)
    assert d["p99_9"] == pytest.approx(99.901) and set(m.PERCENTILE_KEYS.values()) <= set(d)
    assert m.distribution([]) == {"count": 0}


def test_failed_requests_never_enter_latency_percentiles():
    from harness.analysis.summary import summarize

    slow_fail = rec(send=0, tokens=(5000,), end=9000, outcome=Outcome.TIMEOUT.value)
    s = summarize([R1, R2, R3, slow_fail])
    assert s["ttft_max_ms"] == 100 and s["ttft_p50_ms"] == 75  # ok requests only: 100 and 50
    assert s["e2e_max_ms"] == 160 and s["itl_max_ms"] == 30
    assert s["outcomes"]["timeout"] == 1 and s["outcomes"]["overloaded"] == 1


def test_hdr_accumulator_merge_across_encode_decode():
    a, b, both = m.HdrAccumulator(), m.HdrAccumulator(), m.HdrAccumulator()
    for i in range(1, 1001):
        a.record_ms(i * 0.1)  # 0.1 .. 100 ms
        both.record_ms(i * 0.1)
    for i in range(1, 501):
        b.record_ms(200 + i)  # 201 .. 700 ms
        both.record_ms(200 + i)
    wire = b.encode()
    assert isinstance(wire, str)
    merged = m.HdrAccumulator()
    merged.merge_encoded(a.encode())
    merged.merge_encoded(wire)
    merged.merge_encoded("")
    assert merged.count == 1500 == both.count
    for p in (50, 90, 99, 99.9):
        assert merged.percentile_ms(p) == both.percentile_ms(p)
    exact = m.distribution([i * 0.1 for i in range(1, 1001)] + [200 + i for i in range(1, 501)])
    s = merged.summary_ms()
    for k in ("p50", "p90", "p99", "p99_9", "max"):
        assert math.isclose(s[k], exact[k], rel_tol=2e-3, abs_tol=0.2)  # 3 significant digits
    assert s["min"] == pytest.approx(0.1, rel=1e-2)
    local = m.HdrAccumulator()
    local.merge(a)
    assert local.count == 1000
    local.record_ms(0.0)  # clamped to the 1 us floor, not lost
    assert local.count == 1001
    local.reset()
    assert local.count == 0 and local.summary_ms() == {"count": 0} and local.percentile_ms(50) == 0.0


def test_metric_registry_has_definitions_and_units():
    for name in ("ttft", "ttft_intended", "ttfb", "itl", "itl_per_token", "tpot", "e2e", "e2e_intended",
                 "schedule_lag", "output_tokens_per_s", "request_throughput", "goodput", "overload_rate",
                 "error_rate", "drops", "token_mismatch_rate"):
        d = m.METRICS[name]
        assert d.unit and d.scope in ("request", "gap", "run") and len(d.definition) > 20
