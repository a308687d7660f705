"""docs/extending.md's five recipes hold: a toy protocol, arrival process, run metric, plot and gate check,
registered through the public extension points only, show up everywhere they should."""

from __future__ import annotations

import importlib
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_runs import closed_loop, write_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def toy():
    sys.modules.pop("toy_extensions", None)
    mod = importlib.import_module("toy_extensions")
    try:
        yield mod
    finally:
        mod.unregister()
        sys.modules.pop("toy_extensions", None)


def test_toy_protocol_streams_from_a_real_server(toy, serve) -> None:
    from harness.client import make_client

    s = serve(["--model", "simulated", "--sim-ttft-ms", "5", "--sim-itl-ms", "2", "--sim-output-tokens", "6"])
    with make_client("toy_tgi_compat", s.url, max_new_tokens=6) as c:
        rec = c.stream("hello")
    assert rec.ok and rec.protocol == "toy_tgi_compat" and rec.target.endswith("/") and len(rec.token_ns) == 6


OPTIONS = """
import locust, argparse, toy_extensions
from harness.locust.options import OptionError, resolve
ns = argparse.Namespace
o = resolve(ns(protocol="toy_tgi_compat", arrival="toy_pairs", fail_on="toy_ok_share<0.5"))
print(o.protocol, o.arrival, ",".join(o.fail_on))
for bad in (ns(protocol="nope"), ns(arrival="nope"), ns(fail_on="toy_ok_sharex<1")):
    try:
        resolve(bad)
    except OptionError as exc:
        print("refused:", exc)
"""


def test_locust_options_take_the_toy_protocol_arrival_and_metric() -> None:
    """Locust's options (in their own process: Locust patches the interpreter on import)."""
    import os

    p = subprocess.run([sys.executable, "-c", OPTIONS], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and lines[0] == "toy_tgi_compat toy_pairs toy_ok_share<0.5", p.stdout + p.stderr
    assert [line.split(":")[1].strip().split()[0] for line in lines[1:]] == ["--protocol", "--arrival", "--fail-on"]


def test_toy_arrival_process(toy) -> None:
    from harness.workload import arrival_times

    assert list(itertools.islice(arrival_times("toy_pairs", 4.0), 4)) == [0.5, 0.5, 1.0, 1.0]


def test_toy_metric_plot_and_check_reach_summary_report_gate(toy, tmp_path: Path) -> None:
    from harness.analysis.report import build_report
    from harness.analysis.rules import evaluate_rules, parse_rule
    from harness.analysis.summary import higher_is_better, summarize, summary_keys, to_markdown
    from harness.gate import load_config
    from harness.gate.config import parse_tolerance
    recs = closed_loop(40, users=2, overloaded_every=4)
    s = summarize(recs)
    assert s["toy_ok_share"] == pytest.approx(30 / 40)
    assert "| ok share (fraction) | 0.750 |" in to_markdown(s)
    assert "toy_ok_share" in summary_keys() and higher_is_better("toy_ok_share")
    assert evaluate_rules([parse_rule("toy_ok_share >= 0.7")], s)[0].passed
    assert parse_tolerance("toy_ok_share", "5%").higher_is_better
    run = write_run(tmp_path / "run", recs)
    rep = build_report(run)
    html = rep.html.read_text()
    assert "ok share (toy)" in html and "E2E histogram (toy)" in html and (run / "plots" / "toy_e2e_hist.png").exists()
    rules = tmp_path / "gate.toml"
    rules.write_text('rules = ["toy_ok_share >= 0.7"]\nchecks = ["toy_no_timeouts"]\n')
    assert load_config(rules).checks == ["toy_no_timeouts"]


def test_plugins_reach_the_cli(tmp_path: Path) -> None:
    """$HARNESS_PLUGINS makes `harness gate` (another process) know the toy metric and check."""
    run = write_run(tmp_path / "run", closed_loop(40, users=2, overloaded_every=4))
    rules = tmp_path / "gate.toml"
    rules.write_text('rules = ["toy_ok_share >= 0.7"]\nchecks = ["toy_no_timeouts"]\n')
    env = {"HARNESS_PLUGINS": "toy_extensions", "PYTHONPATH": str(Path(__file__).parent)}
    import os

    p = subprocess.run([sys.executable, "-m", "harness", "gate", str(run), "--rules", str(rules)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "toy_no_timeouts" in p.stdout and "2 passed, 0 failed" in p.stdout
    bad = subprocess.run([sys.executable, "-m", "harness", "gate", str(run), "--rules", str(rules)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "toy_no_timeouts" in bad.stderr, bad.stderr  # without the plugin: unknown
