"""Ctrl-C in a headless Locust run (a real `locust` process sent SIGINT mid-run against the simulated
server): the run says it was interrupted (run.json ``complete: false, interrupted: true``), exits
non-zero, and finalizes after its last record (run.json's record count is the file's, no record is
appended after finalization); `harness report` and `harness gate` show the state, and the gate fails
the run unless ``--allow-incomplete``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from locust_helpers import SCENARIOS, free_port, headless, start_locust

#: seconds to wait for the first flushed records before interrupting (bounded, not a timing assert)
FIRST_RECORDS_WAIT_S = 60.0


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0


def _harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=180)


def test_sigterm_mid_run_is_interrupted_and_final(sim, tmp_path: Path) -> None:
    """SIGTERM (a CI job's timeout) ends the same way as Ctrl-C."""
    server = sim(64, "--sim-output-tokens", "0")
    run = start_locust(tmp_path, "term", [*headless(server.url, 2, "120s"), "--output-tokens", "fixed:200"],
                       locustfile=SCENARIOS / "chat_stream.py")
    _wait_for_records(run)
    run.proc.send_signal(signal.SIGTERM)
    rc = run.wait(60)
    meta = run.run_meta()
    assert rc != 0 and meta["exit_code"] == rc, run.log()[-3000:]
    assert meta["complete"] is False and meta["interrupted"] is True, meta
    assert meta["records"] == _lines(run.run_dir / "records.jsonl")
    assert "arrived after the run was finalized" not in run.log()


def _wait_for_records(run) -> None:
    records = run.run_dir / "records.jsonl"
    deadline = time.monotonic() + FIRST_RECORDS_WAIT_S
    while _lines(records) == 0 and run.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.proc.poll() is None, run.log()[-3000:]
    assert _lines(records) > 0, f"no record flushed in {FIRST_RECORDS_WAIT_S} s:\n{run.log()[-3000:]}"


def test_sigint_mid_run_is_interrupted_and_final(sim, tmp_path: Path) -> None:
    server = sim(64, "--sim-output-tokens", "0")  # every stream lasts its max_new_tokens: ~3 s each
    run = start_locust(tmp_path, "int", [*headless(server.url, 4, "120s"), "--output-tokens", "fixed:200",
                                                  "--fail-on", "ttft_p95_ms>100000"],
                       locustfile=SCENARIOS / "chat_stream.py")
    records = run.run_dir / "records.jsonl"
    _wait_for_records(run)
    run.proc.send_signal(signal.SIGINT)  # streams of the 4 users are in flight now
    rc = run.wait(60)
    log = run.log()
    assert rc != 0, log[-3000:]
    meta = run.run_meta()
    assert meta["complete"] is False and meta["interrupted"] is True, meta
    assert meta["exit_code"] == rc
    assert "arrived after the run was finalized" not in log, log[-3000:]
    assert meta["records"] == _lines(records), "records written after run.json was finalized"
    assert "interrupted" in log
    shown = re.search(r"--fail-on ttft_p95_ms ?> ?100000: not triggered \(value (\S+)\)", log)
    assert shown, log[-3000:]
    digits = re.sub(r"e[+-]\d+$", "", shown.group(1)).replace(".", "").replace("-", "").lstrip("0")
    assert len(digits) <= 4, shown.group(0)  # 4 significant digits, not 25.04632749999999

    rep = _harness("report", str(run.run_dir), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert "interrupted" in rep.stdout
    report_dir = run.run_dir
    assert "INCOMPLETE: the run was interrupted" in (report_dir / "report.html").read_text()
    assert (report_dir / "summary.md").read_text().lstrip("*# ").startswith("INCOMPLETE")
    rules = tmp_path / "gate.toml"
    rules.write_text('rules = ["error_rate <= 1"]\n')
    gate = _harness("gate", str(run.run_dir), "--rules", str(rules), cwd=tmp_path)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "interrupted" in gate.stdout
    allowed = _harness("gate", str(run.run_dir), "--rules", str(rules), "--allow-incomplete", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert json.loads((run.run_dir / "run.json").read_text())["interrupted"] is True


def test_sigint_during_a_step_shape(sim, tmp_path: Path) -> None:
    """Locust catches Ctrl-C during a load shape and stops the test as if the shape had ended; the run
    still says it was interrupted (its last step never closed)."""
    server = sim(64, "--sim-output-tokens", "0")
    run = start_locust(tmp_path, "shape", ["--host", server.url, "--headless", "--stop-timeout", "10",
                                           "--only-summary", "--steps", "2,4", "--step-time", "60",
                                           "--output-tokens", "fixed:100"], SCENARIOS / "overload_burst.py")
    _wait_for_records(run)
    run.proc.send_signal(signal.SIGINT)
    rc = run.wait(60)
    meta = run.run_meta()
    assert rc != 0 and meta["exit_code"] == rc, run.log()[-3000:]
    assert meta["complete"] is False and meta["interrupted"] is True, meta
    assert meta["records"] == _lines(run.run_dir / "records.jsonl")


def test_sigint_to_the_master_of_a_distributed_run(sim, tmp_path: Path) -> None:
    """Master + 1 worker, SIGINT to the master only: the worker is told to quit, its final batch is in
    before the master finalizes, and the run says it was interrupted."""
    server = sim(64, "--sim-output-tokens", "0")
    port = free_port()
    master = start_locust(tmp_path, "master", [*headless(server.url, 2, "120s"), "--output-tokens", "fixed:200",
                                               "--master", "--master-bind-host", "127.0.0.1",
                                               "--master-bind-port", str(port), "--expect-workers", "1"],
                          SCENARIOS / "chat_stream.py")
    worker = start_locust(tmp_path, "worker", ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                                               "--output-tokens", "fixed:200"], SCENARIOS / "chat_stream.py")
    try:
        _wait_for_records(master)
        master.proc.send_signal(signal.SIGINT)
        rc = master.wait(90)
        assert worker.wait(60) == 0, worker.log()[-3000:]  # told to quit by the master, not left running
    finally:
        for run in (master, worker):
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
    meta = master.run_meta()
    assert rc != 0 and meta["exit_code"] == rc, master.log()[-3000:]
    assert meta["complete"] is False and meta["interrupted"] is True, meta
    assert meta["records"] == _lines(master.run_dir / "records.jsonl")
    assert "arrived after the run was finalized" not in master.log()
