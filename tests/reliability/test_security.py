"""Security: loopback bind by default, --api-key enforced on generation routes and accepted by the
harness clients, the key never written to records, logs or reports, and bad CLI input / rules files /
prompt files answered with one clear line and a non-zero exit (no traceback)."""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from rel_util import HARNESS, LOCUST, ROOT, SCENARIOS
from serverproc import free_port

KEY = "sk-Reliab1lity-S3cret-7f3a9c"


def listening_addresses(port: int) -> set[str]:
    """Local addresses in LISTEN state on ``port`` (from /proc/net/tcp and tcp6), as hex strings."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":
                out.add(addr)
    return out


def test_binds_loopback_unless_told_otherwise(tmp_path) -> None:
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([*HARNESS, "serve", "--model", "simulated", "--port", str(port)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not listening_addresses(port):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_api_key_enforced_accepted_and_never_written(serve, tmp_path) -> None:
    s = serve(["--model", "simulated", "--sim-ttft-ms", "5", "--sim-itl-ms", "5", "--sim-output-tokens", "0",
               "--api-key", KEY, "--log-level", "debug"])
    for route, body in (("/generate", {"inputs": "a"}), ("/generate_stream", {"inputs": "a"}), ("/", {"inputs": "a"}),
                        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}]}),
                        ("/v1/completions", {"prompt": "a"})):
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
            r = httpx.post(s.url + route, json=body, headers=headers, timeout=10)
            assert (r.status_code, r.content) == (401, b""), (route, headers)
    # the harness clients send it: harness run (flag and environment) and Locust
    run = subprocess.run([*HARNESS, "run", "--host", s.url, "--prompt", "hello", "--max-new-tokens", "4",
                          "--api-key", KEY, "--json"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    run_env = subprocess.run([*HARNESS, "run", "--host", s.url, "--prompt", "hello", "--max-new-tokens", "4"],
                             capture_output=True, text=True, timeout=60, cwd=ROOT,
                             env={**os.environ, "HARNESS_API_KEY": KEY})
    assert run_env.returncode == 0, run_env.stderr
    no_key = subprocess.run([*HARNESS, "run", "--host", s.url, "--prompt", "hello", "--max-new-tokens", "4"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={k: v for k, v in os.environ.items() if k != "HARNESS_API_KEY"})
    assert no_key.returncode == 1 and "401" in no_key.stdout, no_key.stdout
    run_dir = tmp_path / "run"
    with open(tmp_path / "locust.log", "wb") as log:
        loc = subprocess.run([LOCUST, "-f", str(SCENARIOS / "chat_stream.py"), "--host", s.url, "--headless",
                              "-u", "2", "-r", "2", "-t", "3s", "--stop-timeout", "10", "--run-dir", str(run_dir), "--api-key", KEY,
                              "--output-tokens", "fixed:4", "--scrape-metrics", "--loglevel", "DEBUG",
                              "--csv", str(tmp_path / "stats"), "--html", str(tmp_path / "locust.html")],
                             stdout=log, stderr=subprocess.STDOUT, timeout=90, cwd=tmp_path)
    assert loc.returncode == 0, (tmp_path / "locust.log").read_text()[-3000:]
    recs = (run_dir / "records.jsonl").read_text().splitlines()
    assert recs and all('"outcome": "ok"' in r or '"outcome":"ok"' in r for r in recs), recs[:2]
    rep = subprocess.run([*HARNESS, "report", str(run_dir)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert rep.returncode == 0, rep.stderr
    gate_rules = tmp_path / "gate.toml"
    gate_rules.write_text('rules = ["error_rate <= 0.5"]\n')
    gate = subprocess.run([*HARNESS, "gate", str(run_dir), "--rules", str(gate_rules), "--junit",
                           str(tmp_path / "junit.xml")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert s.stop() == 0
    # nothing written anywhere holds the key or an Authorization header
    outputs = [run.stdout, run.stderr, run_env.stdout, no_key.stdout, rep.stdout, gate.stdout, s.log()]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files) and any(p.name == "run.json" for p in files)
    for p in files:
        data = p.read_bytes()
        assert KEY.encode() not in data and KEY.lower().encode() not in data, p
        assert b"bearer " not in data.lower() or p.suffix == ".py", p
    for text in outputs:
        assert KEY not in text and "bearer " not in text.lower()


def _one_line_error(cmd: list[str], cwd: Path) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert p.returncode != 0, (cmd, p.stdout[-500:])
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, (cmd, p.stderr[-2000:])
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert lines, (cmd, p.stdout[-500:])
    return lines[-1]


def test_bad_input_one_clear_line(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "run" / "records.jsonl").write_text(
        '{"run_id": "r", "request_id": "1", "outcome": "ok", "send_ns": 1, "end_ns": 2}\n')
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("rules = [\n")
    bad_rule = tmp_path / "badrule.toml"
    bad_rule.write_text('rules = ["ttft_p95_ms =< 500"]\n')
    unknown_metric = tmp_path / "unknown.toml"
    unknown_metric.write_text('rules = ["nonsense_ms <= 5"]\n')
    bad_prompts = tmp_path / "prompts.jsonl"
    bad_prompts.write_text('{"prompt": "ok"}\n{"prompt": \n')
    binary_prompts = tmp_path / "binary.jsonl"
    binary_prompts.write_bytes(b"\xff\xfe\x00garbage\n")
    h = HARNESS
    cases = [
        [*h, "serve", "--model", "simulated", "--max-batch-size", "-3"],
        [*h, "serve", "--model", "simulated", "--payload-limit", "huge"],
        [*h, "run", "--prompt", "x", "--host", "ftp://127.0.0.1:1"],
        [*h, "run", "--prompt", "x", "--max-new-tokens", "0"],
        [*h, "run", "--prompt", "x", "--timeout", "-1"],
        [*h, "run", "--prompt", "x", "--protocol", "grpc"],
        [*h, "report", str(tmp_path / "missing")],
        [*h, "report", str(tmp_path / "empty_run")],
        [*h, "report", str(tmp_path / "run"), "--slo", "ttft_p95=abc"],
        [*h, "gate", str(tmp_path / "run"), "--rules", str(bad_toml)],
        [*h, "gate", str(tmp_path / "run"), "--rules", str(bad_rule)],
        [*h, "gate", str(tmp_path / "run"), "--rules", str(unknown_metric)],
        [*h, "gate", str(tmp_path / "run"), "--rules", str(tmp_path / "nope.toml")],
        [*h, "sweep", "--caps", "4,x", "--users", "1", "--model", "simulated", "--out", str(tmp_path / "sw")],
        [*h, "sweep", "--caps", "4", "--users", "1", "--duration", "-5", "--model", "simulated",
         "--out", str(tmp_path / "sw2")],
        [LOCUST, "-f", str(SCENARIOS / "chat_stream.py"), "--headless", "--host", "http://127.0.0.1:9",
         "--prompt-file", str(bad_prompts)],
        [LOCUST, "-f", str(SCENARIOS / "chat_stream.py"), "--headless", "--host", "http://127.0.0.1:9",
         "--prompt-file", str(binary_prompts)],
        [LOCUST, "-f", str(SCENARIOS / "chat_stream.py"), "--headless", "--host", "http://127.0.0.1:9",
         "--prompt-file", str(tmp_path / "missing.jsonl")],
        [LOCUST, "-f", str(SCENARIOS / "chat_stream.py"), "--headless", "--host", "http://127.0.0.1:9",
         "--fail-on", "ttft_p95_ms >>> 3"],
    ]
    def check(cmd: list[str]) -> str | None:
        try:
            last = _one_line_error(cmd, tmp_path)
            assert len(last) < 400, last
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(cmd[2:] if cmd[0] != LOCUST else cmd[3:])}: {exc}"[:1500]
        return None

    with ThreadPoolExecutor(4) as pool:  # each command is mostly interpreter start-up
        failures = [f for f in pool.map(check, cases) if f]
    assert not failures, "\n\n".join(failures)


def test_serve_missing_model_is_one_line(tmp_path) -> None:
    last = _one_line_error([*HARNESS, "serve", "--model", "/nonexistent/model/dir"], tmp_path)
    assert "/nonexistent/model/dir" in last


def test_serve_model_that_fails_to_load_is_not_a_traceback(tmp_path) -> None:
    """A directory that passes the pre-flight check but cannot be loaded fails inside startup."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": "not a number"')
    p = subprocess.run([*HARNESS, "serve", "--model", str(broken), "--port", str(free_port())],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    assert "broken-model" in out, out[-2000:]
