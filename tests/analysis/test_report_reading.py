"""What a reader sees: the SLO as given, definitions without reST, token counts explained, tokens/s by
token time, load labels in words (report.html and sweep.html, on synthetic runs)."""

from __future__ import annotations

import html as html_lib
import re

import numpy as np
from synthetic_runs import closed_loop, write_run

from harness.analysis.frame import build_frame
from harness.analysis.report import build_report
from harness.analysis.summary import summarize
from harness.analysis.sweep_report import SweepPlan, write_sweep_outputs
from harness.analysis.timeseries import per_second


def _text(path) -> str:
    return html_lib.unescape(path.read_text(encoding="utf-8"))


def test_report_states_slo_as_given_and_explains_tokens(tmp_path):
    run = write_run(tmp_path / "run", closed_loop(200, users=4, noise=0.2), host="http://x",
                    users={"ChatStreamUser": 4})
    rep = build_report(run, tmp_path / "out", "ttft_p95=500,itl_p99=50")
    page = rep.html.read_text(encoding="utf-8")
    text = html_lib.unescape(page)
    assert "TTFT p95 <= 500 ms (measured" in text and "ITL p99 <= 50 ms (measured" in text
    assert "ttft_ms" not in text.split("Appendix")[0]  # no internal field name before the appendix
    assert "users: 4 (ChatStreamUser)" in text and "{'ChatStreamUser'" not in text
    appendix = page.split("Appendix: metric definitions", 1)[1]
    assert "``" not in appendix and not re.search(r":(func|mod|data):`", appendix)
    assert "<td class='text'>Time to first token" in appendix  # the definition column is text, left-aligned
    for words in ("end-of-sequence token", "round(1.3 x words)", "server-reported"):
        assert words in text


def test_report_without_percentile_text_says_per_request(tmp_path):
    from harness.analysis.summary import parse_slo

    run = write_run(tmp_path / "run", closed_loop(50, users=2))
    text = _text(build_report(run, tmp_path / "out", parse_slo("ttft=500")).html)
    assert "TTFT <= 500 ms per request" in text


def test_tokens_per_second_by_token_time_is_smooth(tmp_path):
    # 4 users in lockstep, 5 s requests with a token every 25 ms: by end, each second either holds
    # 4 requests' worth of tokens or none; by token time, every full second holds about the same.
    recs = closed_loop(40, users=4, ttft_ms=50.0, itl_ms=25.0, n_tokens=200)
    frame = build_frame(recs)
    ts = per_second(frame)
    assert ts is not None
    total = sum(r.output_tokens_server for r in recs)
    assert np.isclose(ts.output_tokens_per_s.sum(), total)
    ends = np.array([r.end_ns for r in recs])
    by_end = np.bincount((ends - ts.t0_ns) // 10**9, weights=[r.output_tokens_server for r in recs],
                         minlength=len(ts.t_s))[:len(ts.t_s)]
    inner = slice(1, len(ts.t_s) - 1)  # full seconds only
    cv_tok = ts.output_tokens_per_s[inner].std() / ts.output_tokens_per_s[inner].mean()
    cv_end = by_end[inner].std() / by_end[inner].mean()
    assert cv_tok < cv_end / 5


def _point(cap: int, load: float, users: int, ttft_ms: float, run_dir) -> dict:
    s = summarize(closed_loop(200, users=users, ttft_ms=ttft_ms, itl_ms=50.0, n_tokens=20))
    return {"cap": cap, "load": load, "axis": "users", "summary": s, "run_dir": str(run_dir), "complete": True}


def test_sweep_page_labels(tmp_path):
    loads = [1.0, 2.0, 4.0, 8.0, 16.0]
    points = [_point(2, u, int(u), 40.0 + 5 * u, tmp_path) for u in loads]
    plan = SweepPlan([2], "users", loads, tmp_path)
    write_sweep_outputs(plan, points, "ttft_p95=5000", 0.05)
    text = _text(tmp_path / "sweep.html")
    assert "SLO: TTFT p95 <= 5000 ms" in text
    assert "16 users" in text
    assert not re.search(r"\b1 users\b", text)
    assert (tmp_path / "sweep_latency.png").read_bytes()[:4] == b"\x89PNG"


def test_harness_run_explains_token_counts(serve):
    import subprocess
    import sys

    server = serve(["--model", "simulated", "--sim-ttft-ms", "20", "--sim-itl-ms", "5"])
    p = subprocess.run([sys.executable, "-m", "harness", "run", "--host", server.url, "--prompt", "Say hello",
                        "--max-new-tokens", "4"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("tokens "))
    assert "per server" in lines[i] and "estimated" in lines[i]
    assert "1.3 tokens per word" in lines[i + 1] and "as the server tokenized it" in lines[i + 1]
