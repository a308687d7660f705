"""Dying target and dying load generator.

- The server is SIGKILLed mid-run and restarted on the same port while a real ``locust --headless``
  run goes on: the run continues, every attempt during the outage is recorded with its error class,
  and ``harness report`` on the run dir shows the outage (outcomes and the per-second series).
- The load generator SIGKILLed: the records on disk cover every request the server had finished more
  than ~1 s before the kill (the record sink flushes every second), and a report still builds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from rel_util import HARNESS, LOCUST, ROOT, SCENARIOS, soak_disconnect
from serverproc import ServerProcess, free_port

SIM = ["--model", "simulated", "--sim-ttft-ms", "20", "--sim-itl-ms", "10", "--sim-output-tokens", "0"]
FAILED_DURING_OUTAGE = {"connect_error", "incomplete", "timeout"}


def serve_on(port: int, log_path: Path) -> subprocess.Popen:
    """`harness serve` on a given loopback port (a restart reuses the port); waits for /health 200."""
    s = ServerProcess.serve(SIM, log_path.parent, 60, port=port, log_name=log_path.name)
    assert s.proc is not None
    return s.proc


def start_locust(tmp: Path, host: str, *extra: str) -> subprocess.Popen:
    log = open(tmp / "locust.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([LOCUST, "-f", str(SCENARIOS / "chat_stream.py"), "--host", host, "--headless",
                             "--only-summary", "--run-dir", str(tmp / "run"), "--input-tokens", "fixed:8",
                             "--output-tokens", "fixed:8", *extra],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp)


def read_records(run_dir: Path) -> list[dict]:
    out = []
    for line in (run_dir / "records.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line cut by SIGKILL
    return out


def report(run_dir: Path) -> dict:
    p = subprocess.run([*HARNESS, "report", str(run_dir), "--whole-run"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert (run_dir / "report.html").exists()
    return json.loads((run_dir / "summary.json").read_text())


def test_server_killed_and_restarted_mid_run(tmp_path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    server = serve_on(port, log)
    loc = start_locust(tmp_path, f"http://127.0.0.1:{port}", "-u", "4", "-r", "4", "-t", "9s",
                       "--stop-timeout", "3", "--request-timeout", "3")
    try:
        time.sleep(3.0)
        killed_ns = time.monotonic_ns()
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        time.sleep(1.5)
        server = serve_on(port, log)
        back_ns = time.monotonic_ns()
        code = loc.wait(60)
    finally:
        if loc.poll() is None:
            loc.kill()
        server.terminate()
        server.wait(20)
    assert code in (0, 1), (tmp_path / "locust.log").read_text()[-3000:]  # 1: Locust saw failures
    recs = read_records(tmp_path / "run")
    before = [r for r in recs if r["send_ns"] and r["end_ns"] < killed_ns]
    during = [r for r in recs if r["send_ns"] and killed_ns <= r["end_ns"] and r["send_ns"] < back_ns
              and r["outcome"] != "cancelled"]
    after = [r for r in recs if r["send_ns"] and r["send_ns"] > back_ns]
    assert before and all(r["outcome"] == "ok" for r in before), {r["outcome"] for r in before}
    # every attempt of the outage is recorded, with its error class: cut streams and refused connects
    assert during and {r["outcome"] for r in during} <= FAILED_DURING_OUTAGE | {"ok"}, {r["outcome"] for r in during}
    failed = [r for r in during if r["outcome"] != "ok"]
    assert all(r["error_text"] for r in failed)
    classes = {r["outcome"] for r in failed}
    assert "connect_error" in classes and "incomplete" in classes, classes
    assert sum(r["outcome"] == "incomplete" for r in failed) <= 4  # at most one stream per user was cut
    # the run went on after the restart
    assert sum(r["outcome"] == "ok" for r in after) >= 8, {r["outcome"] for r in after}
    summary = report(tmp_path / "run")
    outcomes = summary["outcomes"]
    assert outcomes.get("connect_error", 0) == sum(r["outcome"] == "connect_error" for r in recs), outcomes
    assert outcomes.get("incomplete", 0) >= 1, outcomes
    # the per-second series shows the outage: seconds with failures and nothing completed, between ok seconds
    from harness.analysis.frame import load_frame
    from harness.analysis.timeseries import per_second

    ts = per_second(load_frame(tmp_path / "run"))
    k0 = int((killed_ns - ts.t0_ns) // 1_000_000_000)
    k1 = int((back_ns - ts.t0_ns) // 1_000_000_000)
    assert ts.completed[: k0].sum() > 0 and ts.completed[k1 + 1:].sum() > 0
    assert ts.failed[k0: k1 + 1].sum() > 0 and ts.completed[k0 + 1: k1].sum() == 0, (ts.completed, ts.failed)


def test_load_generator_sigkilled_loses_at_most_a_second(serve, tmp_path) -> None:
    s = serve([*SIM, "--max-concurrent-requests", "64"])
    loc = start_locust(tmp_path, s.url, "-u", "6", "-r", "6", "-t", "60s")
    history: list[tuple[int, float]] = []  # (monotonic ns, server's tgi_request_success)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            history.append((time.monotonic_ns(), soak_disconnect.scrape(s.url).get("tgi_request_success", 0)))
            if history[-1][1] > 0 and history[-1][0] - next(t for t, v in history if v > 0) > 3.5e9:
                break
            time.sleep(0.05)
        killed_ns = time.monotonic_ns()
        loc.send_signal(signal.SIGKILL)
        loc.wait(10)
    finally:
        if loc.poll() is None:
            loc.kill()
    recs = read_records(tmp_path / "run")
    ok_on_disk = sum(r["outcome"] == "ok" for r in recs)
    # finished at the server more than 1.25 s before the kill (1 s flush interval + scheduling slack)
    known = max(v for t, v in history if t <= killed_ns - 1_250_000_000)
    assert known > 20, history[-5:]
    assert ok_on_disk >= known, (ok_on_disk, known)
    assert (tmp_path / "run" / "run.json").exists()
    summary = report(tmp_path / "run")
    assert summary["outcomes"].get("ok", 0) == ok_on_disk
