"""Shared bits of the benchmarks: machine/software stamp, JSON output, figure lines with ratios."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.calibration.result import machine_info, software_info  # noqa: E402

DEFAULT_OUT = ROOT / "reports" / "bench"


def scheduling_floor(n: int = 1000) -> dict:
    """The machine's wake-up floor now: overshoot of ``time.sleep(1 ms)`` (p50, p99, max; ms).

    No client can time tokens more accurately than the OS wakes it; on a shared, loaded machine
    this is what the accuracy figures are up against.
    """
    v = []
    for _ in range(n):
        t = time.perf_counter_ns()
        time.sleep(0.001)
        v.append((time.perf_counter_ns() - t) / 1e6 - 1.0)
    v.sort()
    return {"sleep_1ms_overshoot_p50_ms": round(v[n // 2], 3), "sleep_1ms_overshoot_p99_ms": round(v[int(0.99 * n)], 3),
            "sleep_1ms_overshoot_max_ms": round(v[-1], 3)}


def counts(text: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]`` (positive, sorted, unique); argparse type."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def stamp() -> dict:
    """When, on what and with which versions a benchmark ran (load average and wake-up floor included)."""
    floor = scheduling_floor()
    print(f"  machine floor: sleep(1 ms) overshoot p50 {floor['sleep_1ms_overshoot_p50_ms']:.3f} p99 "
          f"{floor['sleep_1ms_overshoot_p99_ms']:.3f} ms; load average {machine_info()['loadavg_1_5_15']}; "
          f"CPU pressure (PSI some avg10) {machine_info()['cpu_pressure_some_avg10']}%")
    return {"created": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine_info(),
            "software": software_info(), "floor": floor}


def write(name: str, doc: dict, out: str | Path | None) -> Path:
    """Write ``doc`` as ``OUT/<name>.json`` (OUT default reports/bench) and return the path."""
    d = Path(out) if out else DEFAULT_OUT
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def check(name: str, value: float, target: float, op: str, unit: str) -> dict:
    """One target check: ``value op target`` (op '<=' or '>='); prints a line; returns a JSON row."""
    ok = value <= target if op == "<=" else value >= target
    ratio = value / target if target else float("nan")
    print(f"  {name:<40} {value:>10.3f} {unit:<10} target {op} {target:g} {unit:<8} ratio {ratio:6.2f}  "
          f"{'PASS' if ok else 'FAIL'}")
    return {"name": name, "value": value, "target": target, "op": op, "unit": unit, "ratio": ratio, "pass": ok}
