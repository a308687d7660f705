"""A real multi-host run: server, master and two workers on four network hosts (ip netns + veth).

The four namespaces hang off a bridge in a fifth; every process binds only its own address, so all
traffic stays inside namespaces this test creates (and deletes, also on failure). Both workers run
on a clock with another zero: w1 by the test-only ``HARNESS_TEST_CLOCK_SKEW_S`` (+3.5 s), w2 in a
Linux time namespace (``unshare --time --monotonic=-7``: a kernel CLOCK_MONOTONIC 7 s behind, as on
another machine). Server and master share the test's own clock, which makes the server's
``--trace-file`` a ground truth for the merged timeline.

Checks: the merged records are complete (= the server's request count = Locust's count, unique ids,
both workers); each worker's applied offset equals the injected skew within its reported
uncertainty (the exact check: all namespaces share one kernel clock, so the true offsets are the
injected ones); the merged timeline is causal against the server's trace within that uncertainty;
the server's trace file carries each record's trace id. Skips, with the reason, where namespaces
cannot be made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from locust_helpers import LOCUST, SCENARIOS

from harness.client.prometheus_scrape import parse_prometheus
from harness.client.tracecontext import trace_id_of

SKEW_ENV = "HARNESS_TEST_CLOCK_SKEW_S"  # harness.locust.clock_sync.SKEW_ENV (importing it would load Locust here)

SUBNET = "10.231.0"
HOSTS = ("srv", "mst", "w1", "w2")  # 10.231.0.1 .. .4
SKEW_W1_S = 3.5  # env var: worker clock = true + 3.5 s -> offset (master - worker) = -3.5 s
TIMENS_W2_S = -7  # time namespace: worker clock = true - 7 s -> offset = +7 s
PORT_HTTP, PORT_RPC = 3000, 5557


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class Lab:
    """Namespaces ``hs<tag>-<host>`` on a bridge in ``hs<tag>-br``; ``addr(host)`` is its IPv4 address."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.made: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def ns(self, host: str) -> str:
        return f"hs{self.tag}-{host}"

    @staticmethod
    def addr(host: str) -> str:
        return f"{SUBNET}.{HOSTS.index(host) + 1}"

    def up(self) -> None:
        br = self.ns("br")
        _ip("netns", "add", br)
        self.made.append(br)
        _ip("-n", br, "link", "add", "br0", "type", "bridge")
        _ip("-n", br, "link", "set", "br0", "up")
        for host in HOSTS:
            ns = self.ns(host)
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", br, "link", "add", f"v-{host}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", br, "link", "set", f"v-{host}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def start(self, host: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(log, "wb") as fh:
            p = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *cmd], stdout=fh, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.procs.append(p)
        return p

    def run_in(self, host: str, code: str, timeout: float = 30.0) -> str:
        """Run a Python snippet inside ``host``'s namespace; its stdout."""
        out = subprocess.run(["ip", "netns", "exec", self.ns(host), sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _can_make_namespaces() -> str | None:
    """None when this machine lets us make network namespaces, else the reason."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"hsprobe{uuid.uuid4().hex[:6]}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` is not allowed here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _time_namespace_prefix() -> list[str] | None:
    """``unshare --time --monotonic=-7`` when time namespaces work here, else None."""
    cmd = ["unshare", "--time", f"--monotonic={TIMENS_W2_S}"]
    if shutil.which("unshare") is None:
        return None
    r = subprocess.run([*cmd, sys.executable, "-c", "import time; print(time.monotonic())"],
                       capture_output=True, text=True, timeout=30)
    return cmd if r.returncode == 0 else None


@pytest.fixture
def lab():
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    lab = Lab()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def _wait_ready(lab: Lab, url: str, timeout_s: float = 60.0) -> None:
    lab.run_in("srv", "import time, urllib.request\n"
                      f"end = time.monotonic() + {timeout_s}\n"
                      "while True:\n"
                      "    try:\n"
                      f"        urllib.request.urlopen('{url}/health', timeout=1); break\n"
                      "    except OSError:\n"
                      "        if time.monotonic() > end: raise\n"
                      "        time.sleep(0.1)\n", timeout=timeout_s + 10)


@pytest.mark.timeout(120)
def test_server_master_two_workers_on_four_hosts_with_skewed_clocks(lab, tmp_path):
    url = f"http://{lab.addr('srv')}:{PORT_HTTP}"
    trace = tmp_path / "server_trace.jsonl"
    server = lab.start("srv", [sys.executable, "-m", "harness", "serve", "--host", lab.addr("srv"),
                               "--port", str(PORT_HTTP), "--model", "simulated", "--sim-ttft-ms", "40",
                               "--sim-itl-ms", "15", "--sim-jitter-ms", "0", "--sim-batch-slowdown", "0",
                               "--max-concurrent-requests", "64", "--trace-file", str(trace)],
                       tmp_path / "server.log")
    _wait_ready(lab, url)

    run_dir, stats = tmp_path / "run", tmp_path / "stats"
    locustfile = str(SCENARIOS / "chat_stream.py")
    master = lab.start("mst", [LOCUST, "-f", locustfile, "--master", "--master-bind-host", lab.addr("mst"),
                               "--master-bind-port", str(PORT_RPC), "--expect-workers", "2", "--headless",
                               "-u", "4", "-r", "16", "-t", "4s", "--stop-timeout", "10", "--only-summary",
                               "--host", url, "--output-tokens", "fixed:20", "--run-dir", str(run_dir),
                               "--json-file", str(stats)], tmp_path / "master.log")
    worker_args = [LOCUST, "-f", locustfile, "--worker", "--master-host", lab.addr("mst"),
                   "--master-port", str(PORT_RPC)]
    timens = _time_namespace_prefix()
    w1 = lab.start("w1", worker_args, tmp_path / "w1.log", env={SKEW_ENV: str(SKEW_W1_S)})
    if timens is not None:
        w2 = lab.start("w2", [*timens, *worker_args], tmp_path / "w2.log")
    else:  # no time namespaces here: the same injected kind of skew, via the variable
        w2 = lab.start("w2", worker_args, tmp_path / "w2.log", env={SKEW_ENV: str(TIMENS_W2_S)})
    expected_offset_ns = {w1.pid: int(-SKEW_W1_S * 1e9), w2.pid: int(-TIMENS_W2_S * 1e9)}

    try:
        code = master.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail("master did not finish in 60 s:\n" + (tmp_path / "master.log").read_text()[-3000:])
    assert code == 0, (tmp_path / "master.log").read_text()[-3000:]
    for w in (w1, w2):
        w.wait(30)
    end_ns = time.monotonic_ns()  # the test's clock = the master's and the server's
    metrics = parse_prometheus(lab.run_in("mst", f"import urllib.request; "
                                                 f"print(urllib.request.urlopen('{url}/metrics').read().decode())"))
    server.terminate()
    server.wait(15)  # flushes the trace file

    # complete: every request the server saw is one merged record, once
    rows = [json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines() if x.strip()]
    meta = json.loads((run_dir / "run.json").read_text())
    e2e = next(e for e in json.loads(stats.with_suffix(".json").read_text()) if e["method"] == "E2E")
    assert len(rows) == e2e["num_requests"] == metrics["tgi_request_count"] > 0
    assert len({r["request_id"] for r in rows}) == len(rows)
    assert {r["worker"] for r in rows} == {"w0", "w1"} and meta["complete"] is True
    assert {r["outcome"] for r in rows} == {"ok"}

    # the injected skews were measured and corrected within the reported uncertainty
    clocks = meta["clock_sync"]["workers"]
    assert len(clocks) == 2
    unc_by_node = {}
    for node, c in clocks.items():
        assert c["aligned"] and not c["exact"] and c["records"] == sum(r["worker"] == node for r in rows)
        assert abs(c["offset_ns"] - expected_offset_ns[c["pid"]]) <= c["uncertainty_ns"], (node, c)
        unc_by_node[node] = c["uncertainty_ns"]
    md = (run_dir / "summary.md").read_text()  # the report shows each worker's offset and uncertainty
    assert all(f"| {node} | " in md and f"{c['offset_ns'] / 1e9:+.6f}" in md for node, c in clocks.items())
    print(f"\nclock uncertainty per worker (ms): {({k: v / 1e6 for k, v in unc_by_node.items()})}, "
          f"best round trips (ms): {({k: c['best_rtt_ns'] / 1e6 for k, c in clocks.items()})}")

    # the merged timeline is causal on the master's clock: nothing sent before the master started
    # the test or ended after we looked; a request was sent before the server wrote its first token,
    # and token event i+1 arrived after the server had stamped event i (the server stamps an event
    # right *after* its write, so event i itself may arrive before its own stamp)
    written: dict[tuple[str, int], int] = {}
    trace_ids: dict[str, set] = {}
    for line in trace.read_text().splitlines():
        d = json.loads(line)
        written[(d["request_id"], d["index"])] = d["t_ns"]
        trace_ids.setdefault(d["request_id"], set()).add(d.get("trace_id"))
    start_ns = meta["mono_anchor_ns"]
    for r in rows:
        u = unc_by_node[r["worker"]]
        assert start_ns - u <= r["send_ns"] <= r["end_ns"] <= end_ns + u
        assert len(r["token_ns"]) == 20
        assert r["send_ns"] <= written[(r["request_id"], 1)] + u
        for i, t in enumerate(r["token_ns"][1:], start=1):
            assert t >= written[(r["request_id"], i)] - u, (r["request_id"], i, written[(r["request_id"], i)] - t)
        assert trace_ids[r["request_id"]] == {trace_id_of(r["request_id"])}
