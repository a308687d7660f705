"""Polite failure: closed-loop users back off after failed or refused requests (real locust processes
against a port with nothing listening, a scripted raw peer answering 400 or 429 + Retry-After, and a
sweep over the simulated server); the first lines of the summary and console name the cause."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from locust_helpers import LOCUST, ROOT, SCENARIOS, free_port, headless, read_csv, start_locust

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "client"))
from client_rawserver import RawServer, json_response  # noqa: E402


def _default_backoff() -> tuple[float, float]:
    """The documented default (BASE, CAP), read in a subprocess: importing harness.locust imports Locust,
    which monkey-patches this process with gevent."""
    code = ("from harness.locust.options import DEFAULT_FAILURE_BACKOFF, parse_backoff; "
            "print(*parse_backoff(DEFAULT_FAILURE_BACKOFF))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    base, cap = out.stdout.split()[-2:]
    return float(base), float(cap)


BASE, CAP = _default_backoff()
#: seconds a run may last beyond -t (stop, last flush) in the attempt bounds
SLACK_S = 2.0
#: how much earlier than asked a gevent timer may fire on a busy loop (its clock is cached per iteration)
EARLY_S = 0.05


def delay_s(k: int, base: float = BASE, cap: float = CAP) -> float:
    """The backoff after the k-th failure in a row (the documented formula)."""
    return min(cap, base * 2 ** (k - 1))


def max_attempts_per_user(seconds: float, base: float = BASE, cap: float = CAP) -> int:
    """Most attempts one user can make in ``seconds`` when every attempt fails instantly: attempt
    n + 1 starts at least delay(1) + ... + delay(n) after the first."""
    n, waited = 1, 0.0
    while waited + delay_s(n, base, cap) <= seconds:
        waited += delay_s(n, base, cap)
        n += 1
    return n


def by_user(rows: list[dict]) -> dict[str, list[dict]]:
    users: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["send_ns"] is not None:
            users[r["user"]].append(r)
    return {u: sorted(rs, key=lambda r: r["send_ns"]) for u, rs in users.items()}


def assert_backoff_gaps(rows: list[dict], retry_after_s: float | None = None) -> int:
    """After each failure, the user's next send is at least the backoff after the failure's end;
    returns how many gaps were checked."""
    checked = 0
    for recs in by_user(rows).values():
        k = 0
        for a, b in zip(recs, recs[1:], strict=False):
            if a["outcome"] == "ok":
                k = 0
                continue
            if a["outcome"] == "cancelled":
                continue
            k += 1
            want = max(BASE, retry_after_s) if retry_after_s is not None else delay_s(k)
            gap = (b["send_ns"] - a["end_ns"]) / 1e9
            assert gap >= want - EARLY_S, (a["user"], k, gap, want)
            checked += 1
    return checked


def first_line(run) -> str:
    return (run.run_dir / "summary.md").read_text().splitlines()[0]


def csv_args(tmp_path: Path, name: str) -> list[str]:
    return ["--csv", str(tmp_path / f"{name}-csv")]


def locust_errors(tmp_path: Path, name: str) -> dict[str, int]:
    """Locust's error table (its failures CSV): error text -> occurrences; streams the end of the
    run cut off (cancelled) left out."""
    rows = read_csv(tmp_path / f"{name}-csv_failures.csv")
    return {r["Error"]: int(r["Occurrences"]) for r in rows if r["Error"] != "StreamFailure('cancelled')"}


def console_first_line(run) -> str:
    """The first line of the harness's end-of-run block in Locust's console output (the log line
    just before the one that starts ``stream-harness run <id> (``)."""
    lines = run.log().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("stream-harness run "))
    return lines[i - 1]


def test_stopped_target_gets_few_attempts_and_the_first_line_names_connect_error(tmp_path):
    port = free_port()  # nothing listens there
    users, seconds = 4, 10
    run = start_locust(tmp_path, "stopped", [*headless(f"http://127.0.0.1:{port}", users, f"{seconds}s"),
                                             *csv_args(tmp_path, "stopped")], SCENARIOS / "chat_stream.py")
    assert run.wait(seconds + 60) == 1, run.log()[-3000:]  # connect errors fail the run
    rows = run.records()
    assert {r["outcome"] for r in rows} <= {"connect_error", "cancelled"}
    bound = users * max_attempts_per_user(seconds + SLACK_S)
    assert users <= len(rows) <= bound, (len(rows), bound)
    assert assert_backoff_gaps(rows) > 0
    head = first_line(run)
    assert "of attempts failed with connect_error (connection refused)" in head, head
    assert "the figures describe the failures" in head
    # console: the block's first line is the headline; Locust's error table shows the cause
    console = console_first_line(run)
    assert "WARNING/harness.locust: stream-harness: " in console and "connect_error (connection refused)" in console
    assert set(locust_errors(tmp_path, "stopped")) == {"StreamFailure('connect_error: connection refused')"}
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["failures"]["dominates"] and summary["failures"]["inconclusive"]
    assert summary["failed_share"] == 1.0


def test_target_answering_400_gets_few_attempts_and_its_text_is_named(tmp_path):
    body = {"error": {"code": 400, "message": "Invalid X-Request-Id header", "type": "invalid_request_error"}}
    server = RawServer(lambda req: [(0, json_response(400, body))])
    try:
        users, seconds = 4, 6
        run = start_locust(tmp_path, "bad400", [*headless(server.url, users, f"{seconds}s"), "--model-name", "m",
                                                *csv_args(tmp_path, "bad400")], SCENARIOS / "openai_chat.py")
        assert run.wait(seconds + 60) == 1, run.log()[-3000:]
    finally:
        server.close()
    rows = run.records()
    classes = {r["outcome"] for r in rows} - {"cancelled"}
    assert len(classes) == 1 and all(r["http_status"] == 400 for r in rows if r["outcome"] in classes)
    assert users <= len(rows) <= users * max_attempts_per_user(seconds + SLACK_S)
    assert len(server.requests) == len(rows)  # the peer saw exactly the recorded attempts
    assert assert_backoff_gaps(rows) > 0
    head = first_line(run)
    (cls,) = classes
    assert f"failed with {cls} 400 (server: 'invalid_request_error: Invalid X-Request-Id header')" in head, head
    assert set(locust_errors(tmp_path, "bad400")) == {
        f"StreamFailure('{cls} 400: invalid_request_error: Invalid X-Request-Id header')"}


def test_failure_backoff_0_restores_the_flood(tmp_path):
    port = free_port()
    users, seconds = 4, 2
    run = start_locust(tmp_path, "flood", [*headless(f"http://127.0.0.1:{port}", users, f"{seconds}s"),
                                           "--failure-backoff", "0"], SCENARIOS / "chat_stream.py")
    assert run.wait(seconds + 60) == 1, run.log()[-3000:]
    rows = run.records()
    # without backoff every user retries at once: far more than the default backoff allows
    assert len(rows) > 4 * users * max_attempts_per_user(seconds + SLACK_S), len(rows)
    assert run.run_meta()["options"]["failure_backoff"] == [0.0, 0.0]


def test_overloaded_answers_honour_retry_after(tmp_path):
    retry_after = 1.5  # longer than the first exponential steps: the gaps show which one is used
    body = {"error": "Model is overloaded", "error_type": "overloaded"}
    server = RawServer(lambda req: [(0, json_response(429, body, f"Retry-After: {retry_after:g}\r\n"))])
    try:
        users, seconds = 3, 4
        run = start_locust(tmp_path, "ra", [*headless(server.url, users, f"{seconds}s"), *csv_args(tmp_path, "ra")],
                           SCENARIOS / "chat_stream.py")
        assert run.wait(seconds + 60) == 0, run.log()[-3000:]  # overloads alone do not fail a run
    finally:
        server.close()
    rows = [r for r in run.records() if r["outcome"] != "cancelled"]
    assert rows and {r["outcome"] for r in rows} == {"overloaded"}
    assert all(r["retry_after_s"] == retry_after for r in rows)
    per_user = 1 + int((seconds + SLACK_S) // retry_after)
    assert len(rows) <= users * per_user, (len(rows), users * per_user)
    assert assert_backoff_gaps(rows, retry_after_s=retry_after) >= users
    head = first_line(run)
    assert "failed with overloaded 429" in head and "refused load above its capacity" in head, head
    assert set(locust_errors(tmp_path, "ra")) == {"StreamFailure('overloaded 429')"}  # the CSV may lag 1 s


def test_sweep_point_above_the_cap_reports_overload_without_a_flood(tmp_path):
    out = tmp_path / "sweep"
    users, seconds = 4, 4.0
    cmd = [sys.executable, "-m", "harness", "sweep", "--caps", "2", "--users", str(users), "--duration", str(seconds),
           "--warmup", "0", "--model", "simulated", "--server-args", "--sim-ttft-ms 20 --sim-itl-ms 5",
           "--input-tokens", "fixed:8", "--output-tokens", "fixed:4", "--no-point-reports", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((out / "sweep.json").read_text())
    (point,) = data["points"]
    rows = [json.loads(x) for x in (Path(point["run_dir"]) / "records.jsonl").read_text().splitlines() if x.strip()]
    ok = sum(r["outcome"] == "ok" for r in rows)
    over = sum(r["outcome"] == "overloaded" for r in rows)
    assert ok > 0 and over > 0 and {r["outcome"] for r in rows} <= {"ok", "overloaded", "cancelled"}
    # each user's run of refusals (ended by an ok or the end) is at most max_attempts_per_user long
    per_user_ok = {u: sum(x["outcome"] == "ok" for x in rs) for u, rs in by_user(rows).items()}
    runs_bound = sum(n + 1 for n in per_user_ok.values()) * max_attempts_per_user(seconds + SLACK_S)
    assert over <= runs_bound
    assert assert_backoff_gaps(rows) > 0
    # the point is a capacity signal, not a failure flood and not "inconclusive"
    f = point["failures"]
    assert f["inconclusive"] is False and point["inconclusive"] is False
    assert "inconclusive" not in r.stdout
    assert data["capacity"][0]["inconclusive"] is False


def test_bad_backoff_and_header_options_are_one_line_exit_2(tmp_path):
    for args, name in ((["--failure-backoff", "1,0.5"], "--failure-backoff"),
                       (["--failure-backoff", "soon"], "--failure-backoff"),
                       (["--request-id-header", "X Bad"], "--request-id-header")):
        out = subprocess.run([LOCUST, "-f", str(SCENARIOS / "chat_stream.py"), "--headless",
                              "--host", "http://127.0.0.1:9", *args], capture_output=True, text=True, timeout=60,
                             cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert name in out.stderr and "Traceback" not in out.stderr
