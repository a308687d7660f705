"""`harness report`: summary files, plots with their series, a self-contained report.html, CLI errors."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time

import httpx
from synthetic_runs import closed_loop, write_run

from harness.analysis.report import build_report
from harness.client.prometheus_scrape import MetricsScraper
from harness.records import series

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "report", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_report_files_plots_and_inlined_html(tmp_path):
    run = write_run(tmp_path / "run", closed_loop(400, users=4, noise=0.3, overloaded_every=9), host="http://x")
    rep = build_report(run, tmp_path / "out", None)
    names = {p.path.name: p for p in rep.plots}
    assert {"latency_cdf.png", "timeseries.png", "timeline.png", "outcomes.png", "tokens.png"} <= set(names)
    assert names["latency_cdf.png"].series == ["ttft", "itl", "tpot", "e2e"]
    assert {"sent", "completed ok", "in flight", "output tokens/s", "TTFT p50", "TTFT p99",
            "overload rate"} <= set(names["timeseries.png"].series)
    assert set(names["outcomes.png"].series) == {"ok", "overloaded"}
    assert "server.png" not in names  # nothing scraped
    for p in rep.plots:
        assert p.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["whole_run"]["outcomes"]["overloaded"] == 44
    assert "| ttft |" in (tmp_path / "out" / "summary.md").read_text()
    html = rep.html.read_text()
    imgs = re.findall(r'<img alt="[^"]*" src="([^"]+)"', html)
    assert len(imgs) == len(rep.plots)
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    assert base64.b64decode(imgs[0].split(",", 1)[1])[:4] == b"\x89PNG"
    assert "<script" not in html and 'src="http' not in html
    # headline numbers first, plots after them, definitions appendix last
    assert html.index("requests/s (ok)") < html.index("<h2>Plots</h2>") < html.index("Appendix: metric definitions")
    assert "Time to first token" in html


def test_server_metrics_plot_from_real_scrape(tmp_path, serve):
    server = serve(["--model", "simulated", "--sim-ttft-ms", "20", "--sim-itl-ms", "5"])
    run = tmp_path / "run"
    scraper = MetricsScraper(server.url, run, interval_s=0.2).start()
    t_start = time.monotonic_ns()
    with httpx.Client(timeout=10) as c:
        for _ in range(3):
            c.post(server.url + "/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 4}})
            time.sleep(0.2)
    scraper.stop()
    name, ts, vals = series(run, ("tgi_queue_size", "vllm:num_requests_waiting"))
    assert name == "tgi_queue_size" and len(ts) >= 3 and all(t >= t_start for t in ts)
    # records on the same clock, spanning the scrape
    recs = closed_loop(60, users=2, t0_ns=t_start)
    write_run(run, recs)
    rep = build_report(run, None, None)
    sp = [p for p in rep.plots if p.path.name == "server.png"]
    assert sp and sp[0].series[:2] == ["queue size", "batch size"]


def test_scraper_unreachable_is_noted_not_fatal(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sc = MetricsScraper(f"http://127.0.0.1:{port}", tmp_path, interval_s=0.1).start()
    time.sleep(0.5)
    sc.stop()
    lines = [json.loads(x) for x in (tmp_path / "server_metrics.jsonl").read_text().splitlines()]
    assert lines and all("error" in x and "t_ns" in x for x in lines)
    assert series(tmp_path, ("tgi_queue_size",)) == (None, [], [])


def test_cli_report_and_errors(tmp_path):
    run = write_run(tmp_path / "run", closed_loop(50))
    ok = _cli(str(run), "--slo", "ttft_p95=100")
    assert ok.returncode == 0, ok.stderr
    assert "report:" in ok.stdout and (run / "report.html").exists()
    assert json.loads((run / "summary.json").read_text())["slo"] == {"ttft_ms": 100.0}
    missing = _cli(str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such run directory" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = _cli(str(tmp_path / "empty"))
    assert empty.returncode == 2 and "no records" in empty.stderr
    bad = _cli(str(run), "--slo", "ttft_p95=fast")
    assert bad.returncode == 2 and "bad SLO value" in bad.stderr
