"""Shared bits of the benchmarks: machine/software stamp, JSON output, figure lines with ratios."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.calibration.result import machine_info, software_info  # noqa: E402

DEFAULT_OUT = ROOT / "reports" / "bench"


def stamp() -> dict:
    """When, on what and with which versions a benchmark ran (load average included)."""
    return {"created": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine_info(),
            "software": software_info()}


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
