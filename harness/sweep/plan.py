"""A sweep's plan: validated arguments -> caps x loads, the output dir and the scenario."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.analysis.summary import parse_slo
from harness.analysis.sweep_report import SweepPlan
from harness.scenarios import scenario_path

__all__ = ["SweepPlan", "make_plan", "parse_list"]


def parse_list(text: str | None, kind: type, name: str) -> list:
    """``"4,8,16"`` -> ``[4, 8, 16]``; ValueError naming the option on anything else."""
    if not text:
        return []
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = kind(part)
        except ValueError:
            raise ValueError(f"{name}: {part!r} is not a {'whole number' if kind is int else 'number'}") from None
        if v <= 0:
            raise ValueError(f"{name}: {part!r} must be positive")
        out.append(v)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: repeated values in {text!r}")
    return sorted(out)


def make_plan(args: argparse.Namespace) -> SweepPlan:
    """Validate the arguments into a plan; ValueError with one line on bad input."""
    caps = parse_list(args.caps, int, "--caps")
    if args.host and caps:
        raise ValueError("--caps restarts the bundled server; with an external --host only the load axis is swept")
    if not args.host and not caps:
        raise ValueError("give --caps (bundled server or --server-cmd) or an external --host")
    if args.host and not args.host.startswith(("http://", "https://")):
        raise ValueError(f"--host {args.host!r}: expected a URL such as http://127.0.0.1:3000")
    if args.rates:
        axis, loads = "rate", parse_list(args.rates, float, "--rates")
    else:
        axis, loads = "users", parse_list(args.users or "1,2,4,8", int, "--users")
    if args.duration <= 0 or args.warmup < 0:
        raise ValueError("--duration must be > 0 and --warmup >= 0")
    if args.scenario is None:  # the packaged scenarios: no checkout needed
        args.scenario = str(scenario_path("open_loop" if axis == "rate" else "chat_stream"))
    if not Path(args.scenario).exists():
        raise ValueError(f"--scenario {args.scenario}: no such file")
    args.scenario = str(Path(args.scenario).resolve())  # Locust runs in the point's directory
    parse_slo(args.slo)
    # absolute, relative to where the user stands: each point's processes run in the point's directory
    out = Path(args.out or Path("reports") / "sweeps" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    return SweepPlan(caps or [None], axis, [float(x) for x in loads], out)
