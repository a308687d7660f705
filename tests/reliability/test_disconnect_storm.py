"""Disconnect storm: thousands of streams cut at random points (partial body, before headers, during
prefill/queue, mid-stream with FIN or RST) on every route. Afterwards no batch row lingers, a full cap
of new concurrent streams all get tokens (no permit leaked), RSS is back to its level, and the server
logged no traceback. The 10,000-request version is ``benchmarks/soak_disconnect.py`` (``make soak``)."""

from __future__ import annotations

import asyncio

from rel_util import no_tracebacks, soak_disconnect

SIM = ["--model", "simulated", "--sim-ttft-ms", "30", "--sim-itl-ms", "5", "--sim-output-tokens", "0"]
RSS_BOUND_KB = 48 * 1024  #: generous: a leak of ~25 KB per request would pass it only below 2,000 requests


def test_storm_2000_simulated_no_leak(serve) -> None:
    cap = 64
    s = serve([*SIM, "--max-concurrent-requests", str(cap)])
    out = soak_disconnect.run_soak(s.port, s.url, s.proc.pid, requests=2000, cap=cap, concurrency=48,
                                   ttft_s=0.03, seed=7, warmup=300)
    storm = out["storm"]
    assert set(storm["cuts"]) == set(soak_disconnect.CUTS) and min(storm["cuts"].values()) > 150, storm
    assert set(storm["routes"]) == set(soak_disconnect.ROUTES), storm
    assert storm["client_errors"] == 0 and storm["overloaded"] == 0, storm
    assert storm["incomplete_controls"] == 0 and storm["completed"] == storm["cuts"]["complete"], storm
    assert out["full_cap"] == {"token": cap}, out
    assert out["batch_after"] == 0 and out["queue_after"] == 0, out
    assert out["rss_growth_kb"] < RSS_BOUND_KB, out
    assert out["server_failures"].get('tgi_request_failure{err="dropped"}', 0) > 1000, out
    # one more cap after the check streams were cut: still nothing held
    soak_disconnect.wait_idle(s.url)
    assert asyncio.run(soak_disconnect.full_cap(s.port, cap)) == {"token": cap}
    assert s.stop() == 0
    no_tracebacks(s.log())


def test_storm_100_tiny_model_no_batch_row_lingers(serve) -> None:
    cap = 8
    s = serve(["--model", "tiny", "--max-concurrent-requests", str(cap), "--max-batch-size", "4"])
    out = soak_disconnect.run_soak(s.port, s.url, s.proc.pid, requests=100, cap=cap, concurrency=12,
                                   ttft_s=0.05, seed=3, warmup=0, max_new=(2, 12))
    storm = out["storm"]
    assert storm["client_errors"] == 0 and storm["incomplete_controls"] == 0, storm
    assert out["batch_after"] == 0 and out["queue_after"] == 0, out
    assert out["full_cap"] == {"token": cap}, out
    assert s.stop() == 0
    no_tracebacks(s.log())
