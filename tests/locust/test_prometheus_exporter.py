"""The Prometheus exporter (locust --prometheus-port) and the Grafana dashboard in examples/grafana/.

- Every metric the dashboard's queries name is exposed by the exporter or by the reference
  server's /metrics (both read for real: the exporter's text from a subprocess, the server's over HTTP).
- Debian's ``prometheus`` (skipped, with the reason, when the binary is absent) scrapes a single
  Locust process, a master with one worker and the server during real runs; PromQL then gives each
  run's request count exactly, a TTFT median within the width of the buckets holding it and the
  summary's, an in-flight gauge that ends at 0, and every dashboard query returns data.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from locust_helpers import SCENARIOS, free_port, start_locust

from harness.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "examples" / "grafana" / "stream-harness.json"
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
#: Grafana's variables, as the dashboard's own "All" values and a rate window fit for 1 s scrapes
_VARS = {"$__rate_interval": "10s", "$job": ".*", "$scenario": ".*", "$server_job": ".*"}


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, label matchers, ranges, grouping
    clauses, functions and keywords removed)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    out = set()
    for m in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        if m.group() in _KEYWORDS or s[m.end():].lstrip().startswith("("):
            continue
        out.add(m.group())
    return out


def exposed_names(text: str) -> set[str]:
    """Series names of a Prometheus text exposition: those with samples, and those its ``# TYPE``
    lines declare (a family may have no sample yet, e.g. worker clocks without workers)."""
    names = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        suffixes = ("_bucket", "_sum", "_count") if m.group(2) == "histogram" else ("",)
        names.update(m.group(1) + x for x in suffixes)
    return names


# A subprocess, so Locust (which harness.locust imports, and which monkey-patches the process) stays
# out of the test process. Records of every kind the exporter distinguishes: ok, failed, open loop.
_EXPORTER_TEXT = """
from prometheus_client import CollectorRegistry, generate_latest
from harness.locust.prometheus_exporter import Exporter
from harness.records import RequestRecord
e = Exporter()
e.local_inflight = lambda: 0
base = dict(scenario="s", target="http://h/generate_stream", input_tokens_client=8, output_tokens_events=3,
            tokens_per_event=[1, 1, 1])
e.observe(RequestRecord(intended_ns=0, send_ns=5, token_ns=[10, 20, 30], end_ns=40, **base))
e.observe(RequestRecord(intended_ns=0, send_ns=0, end_ns=9, outcome="overloaded", scenario="s", target="http://h/x"))
r = CollectorRegistry(auto_describe=False)
r.register(e)
print(generate_latest(r).decode())
"""


def test_dashboard_queries_name_exported_metrics(serve):
    queries = dashboard_queries()
    assert queries and all(metric_names(q) for q in queries)
    out = subprocess.run([sys.executable, "-c", _EXPORTER_TEXT], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    exporter = exposed_names(out.stdout)
    server = serve(["--model", "simulated", "--sim-ttft-ms", "5", "--sim-itl-ms", "1"])
    httpx.post(server.url + "/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 2}}, timeout=30)
    served = exposed_names(httpx.get(server.url + "/metrics", timeout=10).text)
    missing = {(name, q) for q in queries for name in metric_names(q) if name not in exporter | served}
    assert not missing, missing
    # both sides appear on the dashboard
    used = set().union(*(metric_names(q) for q in queries))
    assert used & exporter and used & served


# ----------------------------------------------------------------------------------- Prometheus

class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def range(self, expr: str, start: float, end: float) -> list[tuple[dict, list[float]]]:
        """query_range with a 1 s step: [(labels, values)]; AssertionError on a query error."""
        r = httpx.get(self.url + "/api/v1/query_range",
                      params={"query": expr, "start": start, "end": end, "step": "1s"}, timeout=10).json()
        assert r["status"] == "success", (expr, r)
        return [(s["metric"], [float(v) for _, v in s["values"]]) for s in r["data"]["result"]]

    def last(self, expr: str, start: float, end: float) -> float:
        series = self.range(expr, start, end)
        assert len(series) == 1, (expr, series)
        return [v for v in series[0][1] if not math.isnan(v)][-1]


def start_prometheus(tmp: Path, jobs: dict[str, int]) -> Prometheus:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus package is not installed (apt-get install -y prometheus)")
    cfg = tmp / "prometheus.yml"
    lines = ["global:", "  scrape_interval: 1s", "  scrape_timeout: 1s", "scrape_configs:"]
    for job, port in jobs.items():
        lines += [f"  - job_name: {job}", "    static_configs:", f"      - targets: ['127.0.0.1:{port}']"]
    cfg.write_text("\n".join(lines) + "\n")
    port = free_port()
    log = tmp / "prometheus.log"
    server = ServerProcess([binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                           port, log, ready_path="/-/ready")
    try:
        server.start(30)
    except RuntimeError as exc:
        raise AssertionError(f"prometheus did not start: {exc}") from None
    assert server.proc is not None
    return Prometheus(server.url, server.proc, log)


@pytest.fixture
def prometheus_factory(tmp_path):
    started: list[Prometheus] = []

    def make(jobs: dict[str, int]) -> Prometheus:
        p = start_prometheus(tmp_path, jobs)
        started.append(p)
        return p

    yield make
    for p in started:
        p.proc.terminate()
        try:
            p.proc.wait(10)
        except subprocess.TimeoutExpired:
            p.proc.kill()


def _ui(*extra: str) -> list[str]:
    """Web-UI mode that starts at once and quits 3 s after the run: the exporter is scraped after
    the last record was accounted (a headless process would exit at once). The stop timeout is
    short because a worker in this mode sleeps that long after a stop before it reports ready again
    (a master quitting meanwhile never tells it to quit); 1 s is far above one request (160 ms)."""
    return ["--autostart", "--autoquit", "3", "--web-host", "127.0.0.1", "--web-port", str(free_port()),
            # 8 s: the dashboard's rate() panels need two scrapes (1 s apart) taken while requests are
            # counted; on a loaded machine Prometheus's first scrape of a new target can come seconds late
            "-r", "16", "-t", "8s", "--stop-timeout", "1", "--output-tokens", "fixed:8", *extra]


@pytest.mark.timeout(120)
def test_prometheus_scrapes_single_process_and_master(sim, prometheus_factory, tmp_path):
    server = sim(64)
    ports = {"local": free_port(), "master": free_port(), "server": server.port}
    prom = prometheus_factory(ports)
    t0 = time.time()
    locustfile = SCENARIOS / "chat_stream.py"
    local = start_locust(tmp_path, "local", [*_ui("--host", server.url, "-u", "2",
                                                  "--prometheus-port", str(ports["local"]))], locustfile)
    rpc = free_port()
    master = start_locust(tmp_path, "master", [*_ui("--host", server.url, "-u", "2", "--master",
                                                    "--master-bind-host", "127.0.0.1", "--master-bind-port", str(rpc),
                                                    "--expect-workers", "1", "--prometheus-port", str(ports["master"]))],
                          locustfile)
    worker = start_locust(tmp_path, "worker", ["--worker", "--master-host", "127.0.0.1", "--master-port", str(rpc)],
                          locustfile)
    for run in (local, master):
        assert run.wait(90) == 0, run.log()[-3000:]
    worker.wait(30)
    t1 = time.time()

    for job, run in (("local", local), ("master", master)):
        sel = f'job="{job}"'
        n = len(run.records())
        assert n > 0 and prom.last(f"sum(stream_harness_requests_total{{{sel}}})", t0, t1) == n
        assert prom.last(f'sum(stream_harness_requests_total{{{sel}, outcome="ok"}})', t0, t1) == n
        # TTFT median: PromQL's bucket interpolation vs the run's own summary (exact percentiles)
        q50 = prom.last("histogram_quantile(0.5, sum by (le) "
                        f"(gen_ai_client_operation_time_to_first_chunk_seconds_bucket{{{sel}}}))", t0, t1)
        summary_ms = json.loads((run.run_dir / "summary.json").read_text())["ttft_p50_ms"]
        bounds = sorted({float(s[0]["le"]) for s in prom.range(
            f"gen_ai_client_operation_time_to_first_chunk_seconds_bucket{{{sel}}}", t0, t1)} - {math.inf})
        tolerance = _bucket_width(bounds, q50) + _bucket_width(bounds, summary_ms / 1e3)
        print(f"\n{job}: {n} requests; TTFT p50 PromQL {q50 * 1e3:.2f} ms, summary {summary_ms:.2f} ms "
              f"(tolerance {tolerance * 1e3:.1f} ms)")
        assert abs(q50 - summary_ms / 1e3) <= tolerance, (job, q50, summary_ms, tolerance)
        # in-flight: never above the users, 0 once everything was accounted
        inflight = prom.range(f"sum(stream_harness_requests_in_flight{{{sel}}})", t0, t1)[0][1]
        assert max(inflight) <= 2 and [v for v in inflight if not math.isnan(v)][-1] == 0
    # the master's exporter shows its worker's clock (same host: exactly aligned)
    assert prom.last('stream_harness_clock_uncertainty_seconds{job="master"}', t0, t1) == 0

    # every dashboard query is valid PromQL and returns data for these runs
    for expr in dashboard_queries():
        for var, value in _VARS.items():
            expr = expr.replace(var, value)
        assert any(any(not math.isnan(v) for v in vals) for _, vals in prom.range(expr, t0, t1)), expr


def _bucket_width(bounds: list[float], v: float) -> float:
    """Width of the histogram bucket holding ``v`` (bounds are the upper ``le`` values)."""
    lower = 0.0
    for b in bounds:
        if v <= b:
            return b - lower
        lower = b
    return math.inf
