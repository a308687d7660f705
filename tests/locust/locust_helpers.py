"""Helpers for the Locust integration tests: real `locust --headless` subprocesses on loopback."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
LOCUST = str(Path(sys.executable).with_name("locust"))

#: simulated server with a scripted schedule: TTFT 40 ms, ITL 15 ms, no jitter, no batch slowdown
SIM = ["--model", "simulated", "--sim-ttft-ms", "40", "--sim-ttft-per-input-token-ms", "0", "--sim-itl-ms", "15",
       "--sim-jitter-ms", "0", "--sim-batch-slowdown", "0"]


def free_port() -> int:
    """A free loopback TCP port (for the Locust master's RPC socket)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocustRun:
    proc: subprocess.Popen
    run_dir: Path
    out_prefix: Path
    log_path: Path

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"locust did not finish in {timeout}s:\n{self.log()[-3000:]}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict]:
        lines = (self.run_dir / "records.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def run_meta(self) -> dict:
        return json.loads((self.run_dir / "run.json").read_text())

    def stats_json(self) -> list[dict]:
        return json.loads(self.out_prefix.with_suffix(".json").read_text())

    def entry(self, method: str) -> dict:
        return next(e for e in self.stats_json() if e["method"] == method)


def start_locust(tmp: Path, name: str, args: list[str], locustfile: Path | str = SCENARIOS,
                 env: dict[str, str] | None = None) -> LocustRun:
    """Start `locust -f LOCUSTFILE ARGS` with --run-dir and --json-file under ``tmp/name``."""
    base = tmp / name
    base.mkdir(parents=True, exist_ok=True)
    run_dir, out_prefix, log_path = base / "run", base / "stats", base / "locust.log"
    cmd = [LOCUST, "-f", str(locustfile), "--run-dir", str(run_dir), "--json-file", str(out_prefix), *args]
    with open(log_path, "wb") as log:
        # SIGINT must raise KeyboardInterrupt in Locust even when the tests run in a background job
        # (which starts with SIGINT ignored, and a child keeps an ignored signal ignored)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=base,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return LocustRun(proc, run_dir, out_prefix, log_path)


def headless(host: str, users: int, run_time: str, *extra: str) -> list[str]:
    return ["--host", host, "--headless", "-u", str(users), "-r", str(max(users, 1) * 4), "-t", run_time,
            "--stop-timeout", "10", "--only-summary", *extra]


def server_metrics(url: str) -> dict[str, float]:
    """The server's /metrics as {name{labels}: value}."""
    from harness.client.prometheus_scrape import parse_prometheus

    return parse_prometheus(httpx.get(url + "/metrics", timeout=5).text)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
