"""Sweep integrity and inconclusive verdicts, with real sweeps of the simulated server.

- a resume with one changed setting refuses (exit 2, one-line diff, the two ways out) and reruns
  nothing; identical settings resume (points done are skipped); ``--restart`` discards and reruns;
- a piped sweep prints one result line per finished point;
- a point with too few ok requests is ``inconclusive`` in sweep.json, the capacity table, the points
  table, the plots and the recommendation; ``--extend-inconclusive`` reruns it once for twice as long;
- SIGINT to the sweep prints the exact resume command and exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.analysis import sweep_report
from harness.analysis.capacity import DEFAULT_MIN_REQUESTS, PointVerdict
from harness.sweep import add_arguments, make_plan
from harness.sweep.command import resume_command
from harness.sweep.plan import SettingsMismatch, check_settings, fingerprint, settings_diff, write_settings

ROOT = Path(__file__).resolve().parents[2]
HARNESS = [sys.executable, "-m", "harness"]
FAST = ["--model", "simulated", "--server-args", "--sim-ttft-ms 20 --sim-itl-ms 5", "--input-tokens", "fixed:8",
        "--output-tokens", "fixed:8", "--slo", "ttft_p95=500", "--no-point-reports"]


def _sweep(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*HARNESS, "sweep", *argv], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def _point_lines(stdout: str, cap: int) -> list[str]:
    return [x for x in stdout.splitlines() if x.startswith(f"cap {cap}, users ")]


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_fingerprint_diff_and_resume_command(tmp_path):
    base = ["--caps", "2", "--users", "2,1", "--out", str(tmp_path), *FAST]
    a = _args(*base)
    plan = make_plan(a)
    fp = fingerprint(a, plan)
    assert fp["users"] == "1,2" and fp["caps"] == "2" and fp["model"] == "simulated"
    write_settings(plan, fp, base)
    check_settings(plan, fingerprint(a, plan))  # identical: passes
    b = _args(*base, "--duration", "10", "--locust-args", "--output-tokens fixed:512")
    diff = settings_diff(fp, fingerprint(b, make_plan(b)))
    assert diff == f"duration {a.duration:g} -> 10, locust-args '' -> '--output-tokens fixed:512'"
    with pytest.raises(SettingsMismatch, match="use a new --out or --restart"):
        check_settings(plan, fingerprint(b, make_plan(b)))
    # judging settings are not in the fingerprint: verdicts are recomputed on resume
    c = _args(*base, "--min-requests", "5", "--max-error-rate", "0.5", "--extend-inconclusive")
    check_settings(plan, fingerprint(c, make_plan(c)))
    # the resume command: same arguments, no --restart, the absolute --out
    cmd = shlex.split(resume_command(tmp_path, ["sweep", "--restart", "--caps", "2", "--out", "rel", "--users", "1"]))
    assert cmd == [*HARNESS, "sweep", "--caps", "2", "--users", "1", "--out", str(tmp_path)]


def test_changed_setting_refuses_identical_resumes_restart_reruns(tmp_path):
    out = tmp_path / "sw"
    argv = ["--caps", "2", "--users", "1,2", "--duration", "2", "--warmup", "0.5", "--min-window", "1",
            "--min-requests", "5", *FAST, "--out", str(out)]
    first = _sweep(*argv)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = _point_lines(first.stdout, 2)
    # piped: one line per finished point, with its figures and verdict
    assert len(lines) == 2 and all("TTFT p95" in x and "ITL p99" in x and "goodput" in x and "errors" in x
                                   for x in lines), first.stdout
    assert all(any(f": {v.value}" in x for v in PointVerdict) and "(n " in x for x in lines), lines
    assert all("; ttft_p95_ms " in x for x in lines), lines  # the judged statistic's estimate [interval]
    for p in json.loads((out / "sweep.json").read_text())["points"]:
        ci = p["evidence"]["ci"]["ttft_p95_ms"]
        assert ci["low"] <= ci["estimate"] <= ci["high"] and ci["bound_ms"] == 500 and ci["clusters"] == p["evidence"]["n"]
    rec = out / "cap-2" / "users-1" / "records.jsonl"
    stamp = rec.stat().st_mtime_ns

    changed = _sweep(*argv, "--duration", "1.5")  # the last --duration wins
    assert changed.returncode == 2
    err = changed.stderr.strip().splitlines()
    assert len(err) == 1 and "holds a sweep with other settings: duration 2 -> 1.5" in err[0], changed.stderr
    assert "new --out" in err[0] and "--restart" in err[0]
    assert rec.stat().st_mtime_ns == stamp

    again = _sweep(*argv)
    assert again.returncode == 0, again.stderr
    assert sum("done earlier" in x for x in again.stdout.splitlines()) == 2, again.stdout
    assert rec.stat().st_mtime_ns == stamp

    restarted = _sweep(*argv, "--duration", "1.5", "--restart")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "done earlier" not in restarted.stdout and len(_point_lines(restarted.stdout, 2)) == 2
    assert rec.stat().st_mtime_ns != stamp  # the point ran again
    assert json.loads((out / "sweep-settings.json").read_text())["fingerprint"]["duration"] == "1.5"


def test_point_with_too_few_requests_is_inconclusive(tmp_path, monkeypatch):
    out = tmp_path / "sw"
    # ~1.3 s per request, one user, 4 s: a handful of requests, far below the default minimum of 20
    argv = ["--caps", "2", "--users", "1", "--duration", "4", "--warmup", "0", "--model", "simulated",
            "--server-args", "--sim-ttft-ms 100 --sim-itl-ms 40", "--input-tokens", "fixed:8",
            "--output-tokens", "fixed:30", "--slo", "ttft_p95=500", "--no-point-reports", "--out", str(out)]
    r = _sweep(*argv)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((out / "sweep.json").read_text())
    (p,) = data["points"]
    assert p["verdict"] == "inconclusive" and p["inconclusive_why"] == "few requests", p["slo_failures"]
    assert p["evidence"]["n"] < DEFAULT_MIN_REQUESTS and p["evidence"]["window_s"] > 0
    assert not p["meets_slo"] and p["inconclusive"]
    (cap,) = data["capacity"]
    assert cap["max_load"] is None and cap["inconclusive"] and cap["limiting"].startswith("inconclusive at 1 user")
    reason = data["recommended"]["reason"]
    assert data["recommended"]["cap"] is None and reason.startswith("inconclusive") and "sustains nothing" not in reason
    assert "no cap met" not in reason
    # the terminal: the point's line and the summary say inconclusive
    (line,) = _point_lines(r.stdout, 2)
    assert ": inconclusive: few requests (n " in line
    assert any(x.startswith("inconclusive: cap 2, users 1:") for x in r.stdout.splitlines())
    assert "recommended cap: none - inconclusive" in r.stdout
    # sweep.html: capacity table, points table and the banner
    html = (out / "sweep.html").read_text()
    assert "<span class='bad'>inconclusive</span>" in html and "<b>inconclusive</b>" in html
    assert "points inconclusive: too little evidence" in html
    # the plots mark it: redraw them from sweep.json and read the figures' texts
    figs = []
    monkeypatch.setattr(sweep_report.plt, "close", figs.append)
    plan = make_plan(_args("--caps", "2", "--users", "1", "--out", str(tmp_path / "replot")))
    plan.out.mkdir()
    sweep_report.write_sweep_outputs(plan, data["points"], "ttft_p95=500", data["max_error_rate"])
    texts = [t.get_text() for f in figs for ax in f.axes for t in ax.texts]
    assert len(figs) == 2 and sum("inconclusive" in t for t in texts) == 6, texts  # 3 panels x 2 plots
    legends = [t.get_text() for f in figs for ax in f.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert "inconclusive (hollow)" in legends

    # --extend-inconclusive on resume: the point runs once more for twice the duration
    ext = _sweep(*argv, "--extend-inconclusive")
    assert ext.returncode == 0, ext.stdout + ext.stderr
    assert "running it once more for 8 s" in ext.stdout
    point = json.loads((out / "cap-2" / "users-1" / "point.json").read_text())
    assert point["extended"] is True and point["duration_s"] == 8
    assert "-t 8s" in (out / "cap-2" / "users-1" / "locust.cmd").read_text()
    again = _sweep(*argv, "--extend-inconclusive")  # extended once only
    assert again.returncode == 0 and "once more" not in again.stdout


def test_ctrl_c_prints_the_resume_command(tmp_path):
    out = tmp_path / "sw"
    argv = ["sweep", "--caps", "2", "--users", "1,2", "--duration", "30", "--warmup", "0", *FAST, "--out", str(out)]
    # SIGINT must raise KeyboardInterrupt in the child even when this test runs in a background job
    proc = subprocess.Popen([*HARNESS, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        started = out / "cap-2" / "users-1" / "locust.cmd"
        deadline = time.monotonic() + 90
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started.exists(), "the first point never started"
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stdout + stderr
    (hint,) = [x for x in stderr.splitlines() if x.startswith("interrupted; resume with: ")]
    cmd = shlex.split(hint.removeprefix("interrupted; resume with: "))
    assert cmd == [*HARNESS, *argv[:-2], "--out", str(out)], cmd
    assert not (out / "cap-2" / "users-1" / "point.json").exists()  # the interrupted point reruns on resume


def test_terminal_prints_point_lines_above_the_bar(tmp_path):
    import pty
    import select

    out = tmp_path / "sw"
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "200"}
    proc = subprocess.Popen([*HARNESS, "sweep", "--caps", "2", "--users", "1", "--duration", "1.5", "--warmup", "0",
                             "--min-window", "1", *FAST, "--out", str(out)],
                            stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "━" in text  # the live bar was drawn on the terminal
    assert text.count("cap 2, users 1: TTFT p95") == 1, text[-2000:]
    assert re.search(r"cap 2, users 1: TTFT p95 [^\r\n]*: (pass|fail|inconclusive)[^\r\n]*\(n \d+, window ", text)
