"""A/B: does ``gc.freeze()`` at the test's start cut the client's timing tails?

Runs the calibration level (benchmarks/client_accuracy.py's measurement: client stamp - server write
stamp per token, harness.calibration.join) alternately without (A) and with (B,
benchmarks/locustfiles/gc_freeze.py) ``gc.freeze()`` at test start, ``--rounds`` times each, in the
same time window, and prints TTFT error and |ITL| error p50/p99/max per run with the load average.

    .venv/bin/python benchmarks/gc_freeze_ab.py [--streams 256] [--duration 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import benchlib

from harness.calibration.levels import LOCUSTFILE, Level, run_level

FREEZE = Path(__file__).with_name("locustfiles") / "gc_freeze.py"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=256)
    ap.add_argument("--tokens-per-s", type=float, default=10_000)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON dir (default reports/bench)")
    a = ap.parse_args()
    if a.rounds < 1 or a.duration < a.warmup + 2:
        ap.error("--rounds >= 1 and --duration >= --warmup + 2")
    level = Level(a.streams, a.tokens_per_s)
    st = benchlib.stamp()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gc-freeze-") as tmp:
        for k in range(a.rounds):
            for side, lf in (("A", LOCUSTFILE), ("B gc.freeze", FREEZE)):
                f = run_level(level, Path(tmp) / f"{k}{side[0]}", a.duration, a.warmup, locustfile=lf)
                f.pop("run_dir", None)
                t, i = f["ttft_error_ms"], f["itl_abs_error_ms"]
                row = {"round": k, "side": side, "load_avg_1m": round(os.getloadavg()[0], 2), "figures": f}
                rows.append(row)
                print(f"  round {k} {side:<12} TTFT err p50 {t['p50']:.3f} p99 {t['p99']:.3f} max {t['max']:.1f} | "
                      f"|ITL err| p50 {i['p50']:.3f} p99 {i['p99']:.3f} max {i['max']:.1f} ms | "
                      f"{f['achieved_tokens_per_s']:.0f} tok/s | load {row['load_avg_1m']}")
    doc = {"benchmark": "gc_freeze_ab", **st, "level": level.label, "duration_s": a.duration, "rows": rows}
    print(f"wrote {benchlib.write('gc_freeze_ab', doc, a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
