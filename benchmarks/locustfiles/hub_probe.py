"""The calibration user with a hub-block probe: what held gevent's loop, for how long (benchmarks/client_accuracy.py --hub-probe).

Every greenlet switch is traced (``greenlet.settrace``): a run of one greenlet from its switch-in to
its switch-out is a *block* of the loop, timed in wall-clock ns (``perf_counter_ns``) and in the
process's thread CPU ns (``thread_time_ns``): wall >> CPU means the process was descheduled, CPU
near wall means the greenlet's own work held the loop. The hub's own runs leave out its idle time
(libev prepare -> check watchers, i.e. the poll). Each block longer than ``HARNESS_HUB_PROBE_MS``
(default 0.5 ms) is kept with its greenlet's function, where it was resumed and where it stopped
(5-7 frames), and the garbage collections inside it (``gc.callbacks``). At exit the blocks and
all collections go to ``HARNESS_HUB_PROBE_OUT`` (JSON); times are ms since the test's start.

The trace costs a few us per switch: the probe's own run is slower (tails and CPU) than a plain
one; compare block counts between runs that both have it.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time
from typing import Any

import greenlet
from gevent import get_hub
from locust import events

from harness.calibration.locustfile import CalibrationUser

__all__ = ["CalibrationUser"]

_THRESHOLD_NS = int(float(os.environ.get("HARNESS_HUB_PROBE_MS", "0.5")) * 1e6)
_OUT = os.environ.get("HARNESS_HUB_PROBE_OUT", "")
_wall, _cpu = time.perf_counter_ns, time.thread_time_ns
_hub = get_hub()
_st: dict[str, Any] = {"t0": None, "last": _wall(), "last_cpu": _cpu(), "idle": 0, "prep": 0, "resume": None,
                       "gc_n": 0, "gc_ns": 0, "seen_gc_n": 0, "seen_gc_ns": 0, "gc_start": 0}
_blocks: list[dict[str, Any]] = []
_gcs: list[tuple[int, float, float]] = []


def _kind(g: Any) -> str:
    if g is _hub:
        return "hub"
    run = g.__dict__.get("_run") if hasattr(g, "__dict__") else None  # gevent drops _run when a greenlet ends
    name = getattr(run, "__qualname__", None)
    return name or f"finished {type(g).__name__}"


def _stack(f: Any, n: int) -> list[tuple[Any, int]]:
    out = []
    while f is not None and len(out) < n:
        out.append((f.f_code, f.f_lineno))
        f = f.f_back
    return out


def _fmt(s: list[tuple[Any, int]] | None) -> str:
    return " < ".join(f"{os.path.basename(c.co_filename)}:{c.co_name}:{ln}" for c, ln in s) if s else "-"


def _trace(event: str, args: tuple) -> None:
    if event not in ("switch", "throw"):
        return
    origin, target = args
    now, cpu = _wall(), _cpu()
    wall_ns, cpu_ns = now - _st["last"], cpu - _st["last_cpu"]
    _st["last"], _st["last_cpu"] = now, cpu
    if origin is _hub:
        wall_ns -= _st["idle"]
        cpu_ns = -1  # the hub's CPU includes its poll wake-ups: not separable
    _st["idle"] = 0
    if wall_ns > _THRESHOLD_NS and _st["t0"] is not None:
        _blocks.append({"at_ms": round((now - _st["t0"]) / 1e6, 1), "wall_us": round(wall_ns / 1e3),
                        "cpu_us": round(cpu_ns / 1e3), "greenlet": _kind(origin), "resumed": _fmt(_st["resume"]),
                        "stopped": _fmt(_stack(getattr(origin, "gr_frame", None), 7)),
                        "gcs": _st["gc_n"] - _st["seen_gc_n"], "gc_us": round((_st["gc_ns"] - _st["seen_gc_ns"]) / 1e3)})
    _st["seen_gc_n"], _st["seen_gc_ns"] = _st["gc_n"], _st["gc_ns"]
    # the trace runs on the target's stack: its caller is where the target resumes
    _st["resume"] = None if target is _hub else _stack(sys._getframe(0).f_back, 5)


def _on_prepare() -> None:
    _st["prep"] = _wall()


def _on_check() -> None:
    if _st["prep"]:
        _st["idle"] += _wall() - _st["prep"]
        _st["prep"] = 0


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _st["gc_start"] = _wall()
        return
    ns = _wall() - _st["gc_start"]
    _st["gc_n"] += 1
    _st["gc_ns"] += ns
    if _st["t0"] is not None:
        _gcs.append((info["generation"], round(ns / 1e3), round((_wall() - _st["t0"]) / 1e6, 1)))


@events.test_start.add_listener
def _start(**_: Any) -> None:
    loop = _hub.loop
    _st["watchers"] = (loop.prepare(), loop.check())
    _st["watchers"][0].start(_on_prepare)
    _st["watchers"][1].start(_on_check)
    gc.callbacks.append(_on_gc)
    _st["t0"] = _st["last"] = _wall()
    greenlet.settrace(_trace)


@atexit.register
def _write() -> None:
    if _OUT and _st["t0"] is not None:
        doc = {"elapsed_ms": round((_wall() - _st["t0"]) / 1e6, 1), "threshold_ms": _THRESHOLD_NS / 1e6,
               "gc_threshold": gc.get_threshold(), "blocks": _blocks,
               "gcs": [{"generation": g, "us": us, "at_ms": at} for g, us, at in _gcs]}
        with open(_OUT, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
