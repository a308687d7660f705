"""calibration.json: the machine, the software, each level's error figures and the calibrated limit.

The limit is the largest level (by offered tokens/s) whose errors stay within the budget:
``ttft_error_ms.p99 <= budget_ms`` and ``itl_abs_error_ms.p99 <= budget_ms``, with every client
token joined to its server line (coverage >= :data:`MIN_COVERAGE`). It is stated per Locust
worker process as streams and achieved token events/s; ``null`` when no level passed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = 1
MIN_COVERAGE = 0.999
PACKAGES = ("stream-harness", "locust", "gevent", "greenlet", "uvicorn", "uvloop", "httptools", "fastapi",
            "starlette", "pydantic", "psutil")


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_pressure() -> float | None:
    """Linux PSI ``some avg10`` of /proc/pressure/cpu: % of the last 10 s in which a runnable task
    waited for a CPU (0 on a quiet machine; high values mean other load delays every wake-up)."""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some"):
                return float(dict(kv.split("=") for kv in line.split()[1:])["avg10"])
    except (OSError, ValueError, KeyError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Host, OS, CPU model and count, load average and CPU pressure now (other load distorts timings)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "loadavg_1_5_15": load, "cpu_pressure_some_avg10": cpu_pressure()}


def software_info() -> dict[str, Any]:
    """Python version and the versions of the packages on the timing path."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "implementation": platform.python_implementation(),
            "packages": versions}


def within_budget(level: dict, budget_ms: float) -> bool:
    """The level's p99 TTFT and |ITL| errors are <= budget_ms and its join is complete."""
    ttft = level.get("ttft_error_ms", {}).get("p99")
    itl = level.get("itl_abs_error_ms", {}).get("p99")
    return (ttft is not None and itl is not None and ttft <= budget_ms and itl <= budget_ms
            and level.get("join_coverage", 0.0) >= MIN_COVERAGE)


def find_limit(levels: list[dict], budget_ms: float) -> dict | None:
    """The largest level within budget (by offered tokens/s), as the per-worker limit; None if none."""
    ok = [lv for lv in levels if lv.get("within_budget")]
    if not ok:
        return None
    best = max(ok, key=lambda lv: (lv["offered_tokens_per_s"], lv["streams"]))
    return {"level": best["level"], "streams": best["streams"], "tokens_per_s": best["achieved_tokens_per_s"],
            "offered_tokens_per_s": best["offered_tokens_per_s"],
            "ttft_error_p99_ms": best["ttft_error_ms"]["p99"], "itl_abs_error_p99_ms": best["itl_abs_error_ms"]["p99"]}


def build(levels: list[dict], budget_ms: float, settings: dict, started: _dt.datetime, elapsed_s: float,
          machine_before: dict) -> dict:
    """The calibration.json document."""
    for lv in levels:
        lv["within_budget"] = within_budget(lv, budget_ms)
    after = machine_info()
    machine = {**machine_before, "loadavg_after_1_5_15": after.get("loadavg_1_5_15"),
               "cpu_pressure_after_some_avg10": after.get("cpu_pressure_some_avg10")}
    return {"schema": SCHEMA, "created": started.isoformat(timespec="seconds"), "elapsed_s": round(elapsed_s, 1),
            "budget_ms": budget_ms, "machine": machine, "software": software_info(), "settings": settings,
            "levels": levels, "limit": find_limit(levels, budget_ms)}


def write(doc: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def table(doc: dict) -> str:
    """A plain-text table of the levels and the limit."""
    head = (f"{'level':>12} {'tok/s':>8} {'TTFT err p50':>12} {'p99':>8} {'max':>8} {'|ITL err| p50':>13} "
            f"{'p99':>8} {'max':>8} {'joined':>8} {'cli CPU':>7} {'us/ev':>6}  ok")
    lines = [f"harness calibrate: error = client arrival - server write, ms (budget p99 <= {doc['budget_ms']:g} ms)",
             head]
    for lv in doc["levels"]:
        t, i = lv["ttft_error_ms"], lv["itl_abs_error_ms"]
        f = lambda d, k: f"{d[k]:8.3f}" if k in d else f"{'-':>8}"  # noqa: E731
        cpu = lv.get("client_cpu_percent")
        us = lv.get("client_us_per_event")
        lines.append(f"{lv['level']:>12} {lv['achieved_tokens_per_s']:8.0f} {f(t, 'p50'):>12} {f(t, 'p99')} "
                     f"{f(t, 'max')} {f(i, 'p50'):>13} {f(i, 'p99')} {f(i, 'max')} {lv['join_coverage']:8.4f} "
                     f"{(f'{cpu:6.1f}%' if cpu is not None else '-'):>7} {(f'{us:6.1f}' if us else '-'):>6}  "
                     f"{'yes' if lv['within_budget'] else 'NO'}")
    lim = doc["limit"]
    if lim:
        lines.append(f"limit per worker: {lim['streams']} streams, {lim['tokens_per_s']:.0f} token events/s "
                     f"(level {lim['level']})")
    else:
        lines.append("limit per worker: none - no level kept its p99 errors within the budget")
    load = doc["machine"].get("loadavg_1_5_15")
    m = doc["machine"]
    lines.append(f"machine: {m['cpu_model']}, {m['cpu_count']} CPUs, load average {load} before / "
                 f"{m.get('loadavg_after_1_5_15')} after, CPU pressure (PSI some avg10) "
                 f"{m.get('cpu_pressure_some_avg10')}% / {m.get('cpu_pressure_after_some_avg10')}%")
    return "\n".join(lines)
