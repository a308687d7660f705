"""A sweep's plan: validated arguments -> caps x loads, the output dir and the scenario; the settings
fingerprint that guards a resumed ``--out`` against points made with other settings.

The fingerprint (:data:`FINGERPRINT`, stored in ``OUT/sweep-settings.json``) holds every setting that
shapes a point's numbers: the server (command template, model, server args, restart per point, or the
external host), caps and loads, duration and warm-up, scenario (path and content hash), workload
(input/output tokens), SLO (it decides goodput), Locust args and the harness version. Settings that
only judge points (``--max-error-rate``, ``--min-requests``, ``--min-window``) or only change what is
written (``--no-point-reports``) are not in it: every verdict is recomputed on resume.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import time
from pathlib import Path

from harness import __version__
from harness.analysis.summary import parse_slo
from harness.analysis.sweep_report import SweepPlan
from harness.scenarios import scenario_path

__all__ = ["FINGERPRINT", "SETTINGS_FILE", "SettingsMismatch", "SweepPlan", "check_settings", "discard_points",
           "fingerprint", "make_plan", "parse_list", "write_settings"]

#: the file in ``--out`` holding the sweep's fingerprint and command line
SETTINGS_FILE = "sweep-settings.json"
#: what ``--restart`` removes from ``--out`` (everything a sweep writes there), as glob patterns
SWEEP_OUTPUTS = ("cap-*", "external", "sweep.json", "sweep.html", "sweep_*.png", SETTINGS_FILE)

#: the fingerprint: (name shown in a diff, args attribute); the axes come from the plan
FINGERPRINT: tuple[tuple[str, str], ...] = (
    ("host", "host"), ("server-cmd", "server_cmd"), ("model", "model"), ("server-args", "server_args"),
    ("restart-each-point", "restart_each_point"), ("duration", "duration"), ("warmup", "warmup"),
    ("scenario", "scenario"), ("input-tokens", "input_tokens"), ("output-tokens", "output_tokens"),
    ("slo", "slo"), ("locust-args", "locust_args"),
)


class SettingsMismatch(ValueError):
    """``--out`` holds a sweep made with other settings (the message is the one-line diff)."""


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
    if getattr(args, "min_requests", 0) < 0 or getattr(args, "min_window", 0.0) < 0:
        raise ValueError("--min-requests and --min-window must be >= 0")
    # absolute, relative to where the user stands: each point's processes run in the point's directory
    out = Path(args.out or Path("reports") / "sweeps" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    return SweepPlan(caps or [None], axis, [float(x) for x in loads], out)


def _value(v: object) -> object:
    """A JSON value that compares equal for equal settings (floats as :g text, None as '')."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    return v


def fingerprint(args: argparse.Namespace, plan: SweepPlan) -> dict[str, object]:
    """The settings that shape a point (module docstring), name -> value; ``make_plan`` ran first."""
    fp: dict[str, object] = {name: _value(getattr(args, attr, None)) for name, attr in FINGERPRINT}
    fp["caps"] = ",".join("external" if c is None else str(c) for c in plan.caps)
    fp[plan.axis] = ",".join(f"{x:g}" for x in plan.loads)
    try:
        fp["scenario-sha256"] = hashlib.sha256(Path(args.scenario).read_bytes()).hexdigest()[:16]
    except OSError:
        fp["scenario-sha256"] = ""
    fp["harness-version"] = __version__
    return fp


def _show(v: object) -> str:
    if isinstance(v, str):
        return shlex.quote(v)
    return json.dumps(v)


def settings_diff(old: dict, new: dict) -> str:
    """``duration 30 -> 10, locust-args '' -> '--output-tokens fixed:512'`` (empty when equal)."""
    parts = []
    for k in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(k, "(none)"), new.get(k, "(none)")
        if a != b:
            parts.append(f"{k} {_show(a)} -> {_show(b)}")
    return ", ".join(parts)


def _has_points(out: Path) -> bool:
    return any(out.glob("cap-*/*/point.json")) or any(out.glob("external/*/point.json"))


def check_settings(plan: SweepPlan, fp: dict[str, object]) -> None:
    """Raise :class:`SettingsMismatch` when ``plan.out`` holds a sweep made with other settings (or
    points without recorded settings); identical settings (or a new dir) pass."""
    path = plan.out / SETTINGS_FILE
    ways_out = "use a new --out or --restart (discards its points)"
    if path.exists():
        try:
            old = json.loads(path.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            raise SettingsMismatch(f"--out {plan.out} holds an unreadable {SETTINGS_FILE}; {ways_out}") from None
        diff = settings_diff(old, fp)
        if diff:
            raise SettingsMismatch(f"--out {plan.out} holds a sweep with other settings: {diff}; {ways_out}")
    elif _has_points(plan.out):
        raise SettingsMismatch(f"--out {plan.out} holds sweep points without recorded settings; {ways_out}")


def discard_points(out: Path) -> list[Path]:
    """``--restart``: remove what a sweep wrote into ``out`` (:data:`SWEEP_OUTPUTS`); returns what went."""
    gone = []
    for pattern in SWEEP_OUTPUTS:
        for p in sorted(out.glob(pattern)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def write_settings(plan: SweepPlan, fp: dict[str, object], argv: list[str]) -> None:
    """Record the fingerprint and the command line in ``plan.out``."""
    plan.out.mkdir(parents=True, exist_ok=True)
    (plan.out / SETTINGS_FILE).write_text(json.dumps({"fingerprint": fp, "argv": argv}, indent=2) + "\n")
