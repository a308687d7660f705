"""Stalled targets: a peer that sends headers and two token events and then nothing. The per-token
read timeout cuts each stream and records it as ``timeout`` (not left hanging); a Locust run against
it with a long read timeout still ends on time (``--stop-timeout`` honoured), its in-flight streams
recorded as cancelled."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from rel_util import LOCUST, SCENARIOS
from stall_server import StallServer


@pytest.fixture
def stall():
    s = StallServer(events=2)
    yield s
    s.close()


def _locust(tmp_path, host: str, *extra: str) -> tuple[subprocess.Popen, object]:
    log = open(tmp_path / "locust.log", "wb")
    proc = subprocess.Popen([LOCUST, "-f", str(SCENARIOS / "chat_stream.py"), "--host", host, "--headless",
                             "--only-summary", "--run-dir", str(tmp_path / "run"), *extra],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    return proc, log


def _records(tmp_path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "run" / "records.jsonl").read_text().splitlines() if x.strip()]


def test_read_timeout_records_timeout_in_a_locust_run(stall, tmp_path) -> None:
    t0 = time.monotonic()
    proc, log = _locust(tmp_path, stall.url, "-u", "4", "-r", "4", "-t", "4s", "--stop-timeout", "3",
                        "--request-timeout", "1")
    code = proc.wait(40)
    elapsed = time.monotonic() - t0
    log.close()
    recs = _records(tmp_path)
    assert code in (0, 1), (tmp_path / "locust.log").read_text()[-2000:]
    timeouts = [r for r in recs if r["outcome"] == "timeout"]
    # 4 users x ~4 s / ~1 s per stalled request: several rounds each, every one cut by the read timeout
    assert len(timeouts) >= 8, [r["outcome"] for r in recs]
    assert {r["outcome"] for r in recs} <= {"timeout", "cancelled"}, {r["outcome"] for r in recs}
    for r in timeouts:
        assert len(r["token_ns"]) == 2
        gap_s = (r["end_ns"] - r["token_ns"][-1]) / 1e9
        assert 0.9 <= gap_s < 3.0, gap_s  # cut by the 1 s read timeout, not by the end of the run
    assert elapsed < 4 + 3 + 8, elapsed  # run time + stop timeout + process start/finalize slack


def test_run_ends_on_time_with_stalled_streams(stall, tmp_path) -> None:
    """Read timeout 60 s: nothing is cut by the client; the run ends at -t + --stop-timeout anyway."""
    t0 = time.monotonic()
    proc, log = _locust(tmp_path, stall.url, "-u", "5", "-r", "5", "-t", "2s", "--stop-timeout", "2",
                        "--request-timeout", "60")
    code = proc.wait(40)
    elapsed = time.monotonic() - t0
    log.close()
    assert code in (0, 1), (tmp_path / "locust.log").read_text()[-2000:]
    assert elapsed < 2 + 2 + 8, elapsed
    recs = _records(tmp_path)
    assert len(recs) == 5 and {r["outcome"] for r in recs} == {"cancelled"}, recs
    assert all(len(r["token_ns"]) == 2 for r in recs)
