"""benchmarks/gpu_check.sh: the CPU dry run (``--device cpu --quick``) end to end, and bad input.

The dry run is the GPU check's own code path with the tiny model on the CPU, reusing the venv that
runs these tests (``--no-install --venv``): real engine tests, a real benchmark with a real server,
a real Locust run and ``harness report``, so the script cannot rot while no GPU is at hand.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["nvidia-smi", "install", "torch", "engine tests", "throughput cpu", "locust", "throughput cpu (baseline)"]
OUT_FILES = {"gpu_check.json", "gpu_check.md", "gpu_check.log", "locust_summary.md", "locust_report.html"}


def positive(v: object) -> bool:
    return isinstance(v, int | float) and math.isfinite(v) and v > 0


def test_cpu_dry_run_writes_real_figures(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "GPU_CHECK_PYTHON": sys.executable}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--quick", "--no-install", "--venv", sys.prefix,
                           "--out", str(out), "--work", str(work)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # what comes back from a device run: a few plain files, no folders
    assert {p.name for p in out.iterdir()} == OUT_FILES
    doc = json.loads((out / "gpu_check.json").read_text())
    table = (out / "gpu_check.md").read_text()
    assert proc.stdout.rstrip().endswith(table.rstrip())  # the table is printed last

    assert [s["name"] for s in doc["steps"]] == STEPS
    assert all(s["status"] == "ok" for s in doc["steps"]), doc["steps"]
    assert doc["ok"] and doc["device"] == "cpu"

    tests = next(s for s in doc["steps"] if s["name"] == "engine tests")["detail"]
    assert tests["tests"] and set(tests["tests"].values()) == {"passed"}
    assert tests["areas"]["parity fp32 batched vs alone"].startswith("pass")
    assert tests["areas"]["cancellation"].startswith("pass")

    for key in ("bench_device", "bench_cpu"):
        bench = doc[key]
        assert bench["model"] == "tiny" and bench["device"] == "cpu"
        for n in bench["streams"]:
            srv = bench[f"server_{n}"]
            assert positive(srv["decode_tok_s"]) and positive(bench[f"raw_b{n}_tok_s"])
            assert srv["tokens"] == n * bench["new_tokens"]
            assert positive(bench["ratios_server_raw"][str(n)])
        assert positive(bench["ratio_ttft_raw_prefill"])
    dev = doc["bench_device"]
    for n in dev["streams"]:  # the table shows the JSON's figures
        assert f"| {n} | {dev[f'server_{n}']['decode_tok_s']:.1f} | {dev[f'raw_b{n}_tok_s']:.1f} |" in table
    assert f"**{dev['ratio_ttft_raw_prefill']:.2f}x**" in table

    loc = doc["locust_summary"]
    assert loc["ok"] > 0 and loc["attempted"] >= loc["ok"] and positive(loc["output_tokens_per_s"])
    locust = next(s for s in doc["steps"] if s["name"] == "locust")["detail"]
    assert positive(locust["rate"]) and locust["locust_exit"] == 0 and locust["report_exit"] == 0
    assert f"{loc['ok']} ok of {loc['attempted']}" in table
    assert "open_loop" in (out / "locust_summary.md").read_text()


def test_bad_options_fail_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_CHECK_PYTHON": sys.executable}
    for args, needle in ((["--device", "tpu"], "--device"), (["--budget-s", "5"], "--budget-s")):
        proc = subprocess.run(["bash", str(SCRIPT), *args, "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and needle in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()
