"""First contact with the CLI (issue 13): help texts that explain and show defaults, the port checked
before the model loads, `harness run` saying why an answer is empty, the example gate rules on a single
run, and a gate table that states the interval and rule it judged. Real subprocesses on loopback."""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
from pathlib import Path

from synthetic_runs import closed_loop, write_run

from harness.gate.bootstrap import regression_detail
from harness.gate.config import Regression

ROOT = Path(__file__).resolve().parents[1]


def harness(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def option_blocks(help_text: str) -> dict[str, str]:
    """``--option`` -> its help text (whitespace collapsed), from an argparse help page."""
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        m = re.match(r"^  (-\w, )?(--[\w-]+)", line)
        if m:
            current = m.group(2)
            blocks[current] = line
        elif current and line.startswith("   "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def test_harness_help_describes_the_tool(tmp_path: Path) -> None:
    out = harness("--help", cwd=tmp_path)
    assert out.returncode == 0
    assert "parse, call, exit" not in out.stdout
    assert "token-streaming LLM servers" in out.stdout and "first steps" in out.stdout


def test_serve_help_shows_every_default(tmp_path: Path) -> None:
    from harness.server.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = harness("serve", "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    blocks = option_blocks(out.stdout)
    with_default = [a for a in parser._actions if a.option_strings and a.default not in (None, False)
                    and a.default != argparse.SUPPRESS]
    assert with_default
    for action in with_default:
        text = blocks[action.option_strings[-1] if action.option_strings[-1] in blocks else action.option_strings[0]]
        assert "default" in text, text
    mcr = parser._option_string_actions["--max-concurrent-requests"].default
    assert f"(default: {mcr})" in blocks["--max-concurrent-requests"]


def test_demo_help_is_whole(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "harness.demo", "--help"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    intro = " ".join(out.stdout.split("\n\n")[1].split())
    assert intro.endswith("."), intro  # the first paragraph, not cut mid-sentence
    blocks = option_blocks(out.stdout)
    assert all(len(text.split()) > 1 for name, text in blocks.items() if name != "--help"), blocks


def test_serve_on_a_busy_port_fails_before_loading_the_model(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = harness("serve", "--model", "smollm2", "--port", str(port), cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0] and str(port) in lines[0], out.stderr
    assert out.stdout == ""


def test_run_says_when_the_model_ended_at_once(serve, tmp_path: Path) -> None:
    server = serve(["--model", "simulated", "--sim-output-tokens", "1", "--sim-ttft-ms", "5"])
    tgi = harness("run", "--protocol", "tgi", "--host", server.url, "--prompt", "Why is the sky blue?",
                  cwd=tmp_path)
    assert tgi.returncode == 0, tgi.stdout + tgi.stderr
    assert "ended at once (EOS" in tgi.stdout and "--protocol openai" in tgi.stdout, tgi.stdout
    chat = harness("run", "--protocol", "openai", "--host", server.url, "--prompt", "Why is the sky blue?",
                   cwd=tmp_path)
    assert chat.returncode == 0, chat.stdout + chat.stderr
    assert "ended at once (EOS" in chat.stdout and "--protocol openai" not in chat.stdout, chat.stdout
    normal = serve(["--model", "simulated", "--sim-output-tokens", "8", "--sim-ttft-ms", "5"])
    ok = harness("run", "--protocol", "tgi", "--host", normal.url, "--prompt", "Hi", cwd=tmp_path)
    assert ok.returncode == 0 and "ended at once" not in ok.stdout, ok.stdout


def test_example_gate_rules_on_a_single_run(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", closed_loop(200, users=4, noise=0.2, seed=1))
    out = harness("gate", str(run), "--rules", str(ROOT / "examples" / "gate.toml"), cwd=tmp_path)
    assert out.returncode in (0, 1), out.stdout + out.stderr  # judged, not refused as bad input
    assert "no --baseline" in out.stdout and "skipped" in out.stdout
    assert "regression" not in out.stdout.split("note:")[0]  # no regression row in the table


def test_regression_detail_states_interval_and_rule() -> None:
    reg = Regression("ttft_p95_ms", 0.10, True)
    base, tol = 100.0, 10.0
    straddles = regression_detail(11.5, base, (3.1, 19.8), reg, tol, 0.95, True, False, 1000)
    assert "+11.5 % of baseline" in straddles and "95 % CI +3.1 % .. +19.8 %" in straddles
    assert "vs tolerance 10 %" in straddles and "PASS because part of the CI is within the tolerance" in straddles
    beyond = regression_detail(15.0, base, (12.0, 18.0), reg, tol, 0.95, False, False, 1000)
    assert "FAIL because the whole interval is beyond the tolerance" in beyond
    within = regression_detail(1.0, base, (-2.0, 4.0), reg, tol, 0.95, True, True, 1000)
    assert "PASS because the whole interval is within the tolerance" in within
