"""Client accuracy: the `harness calibrate` measurement at 256 streams and 10k tokens/s, one Locust process.

Error = client arrival stamp - the simulated server's write stamp of the same token (TTFT error:
first token; ITL error: client gap - server gap, absolute), harness.calibration.join. Targets
(DESIGN.md): p50 <= 0.2 ms and p99 <= 1 ms. The baseline, in the same run, is the same
measurement at a light load (16 streams, 625 tokens/s): the ratio measured/baseline shows how much
of the error is load, and the baseline itself shows the machine's floor (scheduling, loopback).
Each level's line gives the load average and CPU pressure (PSI some avg10) at the end of its CPU
window, and the run starts by printing them: on a shared machine the tails measure the machine.

    .venv/bin/python benchmarks/client_accuracy.py [--duration 20] [--nice -10] [--out reports/bench]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import benchlib

from harness.calibration.levels import Level, run_level
from harness.calibration.result import machine_info

TARGET_P50_MS, TARGET_P99_MS = 0.2, 1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=256)
    ap.add_argument("--tokens-per-s", type=float, default=10_000)
    ap.add_argument("--baseline-streams", type=int, default=16)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per level (default 20)")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--nice", type=int, default=None,
                    help="server and Locust in sessions of their own at niceness N (process + autogroup)")
    ap.add_argument("--pin", action="store_true", help="server on CPU 0, Locust on CPU 1")
    ap.add_argument("--out", default=None, help="JSON dir (default reports/bench)")
    a = ap.parse_args()
    print(f"  at start: load average {machine_info()['loadavg_1_5_15']}, CPU pressure (PSI some avg10) "
          f"{machine_info()['cpu_pressure_some_avg10']}%")
    base_level = Level(a.baseline_streams, a.tokens_per_s * a.baseline_streams / a.streams)
    level = Level(a.streams, a.tokens_per_s)
    with tempfile.TemporaryDirectory(prefix="client-accuracy-") as tmp:
        base = run_level(base_level, Path(tmp) / "baseline", a.duration, a.warmup, nice=a.nice, pin=a.pin)
        fig = run_level(level, Path(tmp) / "measured", a.duration, a.warmup, nice=a.nice, pin=a.pin)
    for f in (base, fig):
        f.pop("run_dir", None)
    print(f"client accuracy: {level.label} vs baseline {base_level.label} (one Locust process, error in ms)")
    for name, f in (("baseline", base), ("measured", fig)):
        t, i = f["ttft_error_ms"], f["itl_abs_error_ms"]
        print(f"  {name:<9} {f['achieved_tokens_per_s']:7.0f} tok/s  TTFT err p50 {t['p50']:.3f} p99 {t['p99']:.3f} "
              f"max {t['max']:.3f} | |ITL err| p50 {i['p50']:.3f} p99 {i['p99']:.3f} max {i['max']:.3f} | "
              f"client CPU {f.get('client_cpu_percent', float('nan')):.1f}% server CPU "
              f"{f.get('server_cpu_percent', float('nan')):.1f}% ({f.get('client_us_per_event', float('nan')):.1f} "
              f"us/event) | joined {f['join_coverage']:.4f} | load {f.get('loadavg_1m')}, PSI "
              f"{f.get('cpu_pressure_some_avg10')}%")
    checks = [benchlib.check(f"{k} error {p}", fig[key][p], target, "<=", "ms")
              for k, key in (("TTFT", "ttft_error_ms"), ("|ITL|", "itl_abs_error_ms"))
              for p, target in (("p50", TARGET_P50_MS), ("p99", TARGET_P99_MS))]
    ratios = {f"{key}_{p}_vs_baseline": (fig[key][p] / base[key][p] if base[key][p] else None)
              for key in ("ttft_error_ms", "itl_abs_error_ms") for p in ("p50", "p99")}
    print("  ratio vs baseline: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items() if v is not None))
    doc = {"benchmark": "client_accuracy", **benchlib.stamp(), "nice": a.nice, "pin": a.pin, "duration_s": a.duration,
           "baseline": base, "measured": fig, "checks": checks, "ratios_vs_baseline": ratios,
           "pass": all(c["pass"] for c in checks)}
    print(f"wrote {benchlib.write('client_accuracy', doc, a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
