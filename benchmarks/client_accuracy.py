"""Client accuracy: the `harness calibrate` measurement at 256 streams and 10k tokens/s, one Locust process.

Error = client arrival stamp - the simulated server's write stamp of the same token (TTFT error:
first token; ITL error: client gap - server gap, absolute), harness.calibration.join. Targets
(DESIGN.md): p50 <= 0.2 ms and p99 <= 1 ms. The baseline, in the same run, is the same
measurement at a light load (16 streams, 625 tokens/s): the ratio measured/baseline shows how much
of the error is load, and the baseline itself shows the machine's floor (scheduling, loopback).
Each level's line gives the load average and CPU pressure (PSI some avg10) at the end of its CPU
window, and the run starts by printing them: on a shared machine the tails measure the machine.

    .venv/bin/python benchmarks/client_accuracy.py [--duration 20] [--nice -10] [--out reports/bench]

``--hub-probe`` adds a third run of the measured level with benchmarks/locustfiles/hub_probe.py
(every greenlet switch traced) and prints, per 10 s of its steady window, the runs of one greenlet
that held gevent's loop for more than 0.5 ms: all of them, those with >= 0.4 ms of CPU (the
greenlet's own work, not the process being descheduled), those with a garbage collection inside,
and the commonest places of the CPU-heavy ones.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import benchlib

from harness.calibration.levels import Level, run_level
from harness.calibration.result import machine_info

TARGET_P50_MS, TARGET_P99_MS = 0.2, 1.0
HUB_PROBE = Path(__file__).with_name("locustfiles") / "hub_probe.py"
CPU_BLOCK_US = 400  #: a block with at least this much CPU was the greenlet's own work


def hub_blocks(probe: dict, warmup_s: float, duration_s: float) -> dict:
    """Summary of hub_probe.py's output over its steady window (``warmup_s`` to 1 s before the stop):
    blocks per 10 s (the hub's own left out), by greenlet, and the commonest CPU-heavy places."""
    lo, hi = warmup_s * 1000, min(probe["elapsed_ms"], duration_s * 1000) - 1000
    per = 10_000 / max(hi - lo, 1.0)
    blocks = [b for b in probe["blocks"] if lo < b["at_ms"] < hi and b["greenlet"] != "hub"]
    heavy = [b for b in blocks if b["cpu_us"] >= CPU_BLOCK_US]
    places = Counter(f"{b['greenlet']}: {b['resumed'].split(' < ')[0]} -> {b['stopped'].split(' < ')[0]}"
                     for b in heavy)
    gcs = [g for g in probe["gcs"] if lo < g["at_ms"] < hi]
    return {"window_s": round((hi - lo) / 1000, 1), "blocks_per_10s": round(len(blocks) * per, 1),
            "cpu_blocks_per_10s": round(len(heavy) * per, 1),
            "cpu_blocks_with_gc_per_10s": round(sum(1 for b in heavy if b["gcs"]) * per, 1),
            "cpu_blocks_by_greenlet_per_10s": {k: round(n * per, 1) for k, n in
                                               Counter(b["greenlet"] for b in heavy).most_common()},
            "max_cpu_us": max((b["cpu_us"] for b in heavy), default=0),
            "top_places": places.most_common(3),
            "gc_per_10s": {str(g): round(n * per, 1) for g, n in sorted(Counter(x["generation"] for x in gcs).items())},
            "gc_max_us": max((g["us"] for g in gcs), default=0)}


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
    ap.add_argument("--hub-probe", action="store_true",
                    help="a third run of the measured level with the hub-block probe (see the module docstring)")
    a = ap.parse_args()
    print(f"  at start: load average {machine_info()['loadavg_1_5_15']}, CPU pressure (PSI some avg10) "
          f"{machine_info()['cpu_pressure_some_avg10']}%")
    base_level = Level(a.baseline_streams, a.tokens_per_s * a.baseline_streams / a.streams)
    level = Level(a.streams, a.tokens_per_s)
    with tempfile.TemporaryDirectory(prefix="client-accuracy-") as tmp:
        base = run_level(base_level, Path(tmp) / "baseline", a.duration, a.warmup, nice=a.nice, pin=a.pin)
        fig = run_level(level, Path(tmp) / "measured", a.duration, a.warmup, nice=a.nice, pin=a.pin)
        probe = None
        if a.hub_probe:
            out = Path(tmp) / "hub_probe.json"
            probed = run_level(level, Path(tmp) / "probed", a.duration, a.warmup, nice=a.nice, pin=a.pin,
                               locustfile=HUB_PROBE, env={"HARNESS_HUB_PROBE_OUT": str(out)})
            if not out.exists():
                raise SystemExit(f"client_accuracy: the hub probe wrote nothing; see {Path(tmp) / 'probed'}")
            probe = {**hub_blocks(json.loads(out.read_text()), a.warmup, a.duration),
                     "ttft_error_ms": probed["ttft_error_ms"], "itl_abs_error_ms": probed["itl_abs_error_ms"],
                     "loadavg_1m": probed.get("loadavg_1m"), "cpu_pressure_some_avg10": probed.get("cpu_pressure_some_avg10")}
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
    if probe is not None:
        print(f"  hub probe ({level.label}, traced run: TTFT err p99 {probe['ttft_error_ms']['p99']:.3f}, |ITL| p99 "
              f"{probe['itl_abs_error_ms']['p99']:.3f} ms; load {probe['loadavg_1m']}, PSI "
              f"{probe['cpu_pressure_some_avg10']}%), per 10 s of {probe['window_s']} s steady: greenlet runs > 0.5 ms "
              f"{probe['blocks_per_10s']}, with >= {CPU_BLOCK_US / 1000:g} ms CPU {probe['cpu_blocks_per_10s']} "
              f"({probe['cpu_blocks_with_gc_per_10s']} with a GC; max {probe['max_cpu_us']} us) "
              f"{probe['cpu_blocks_by_greenlet_per_10s']}; collections {probe['gc_per_10s']} (max {probe['gc_max_us']} us)")
        for place, n in probe["top_places"]:
            print(f"    {n:4d}  {place}")
    doc = {"benchmark": "client_accuracy", **benchlib.stamp(), "nice": a.nice, "pin": a.pin, "duration_s": a.duration,
           "hub_probe": probe,
           "baseline": base, "measured": fig, "checks": checks, "ratios_vs_baseline": ratios,
           "pass": all(c["pass"] for c in checks)}
    print(f"wrote {benchlib.write('client_accuracy', doc, a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
