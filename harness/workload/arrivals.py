"""Arrival processes for open-loop load: absolute send offsets (seconds from the start).

- ``constant``: every ``1/rate`` s: offsets ``1/rate, 2/rate, ...``;
- ``poisson``: exponential gaps with mean ``1/rate`` (memoryless arrivals);
- ``gamma``: gamma gaps with mean ``1/rate`` and coefficient of variation ``cv`` (burstiness):
  shape ``k = 1/cv^2``, scale ``1/(rate*k)``; ``cv=1`` is Poisson, ``cv>1`` burstier, ``cv<1``
  smoother;
- ``trace``: replay of a file: one timestamp per line (seconds, a number), or jsonl objects with
  ``"timestamp"`` (seconds, or an ISO-8601 date); offsets are relative to the first timestamp,
  which must be non-decreasing. The trace is replayed as recorded (``rate`` is ignored);
  :func:`load_trace` with ``rate`` > 0 rescales it to that mean rate.

Offsets are absolute (not gaps), so a dispatcher that falls behind does not shift the schedule
(no coordinated omission). Seeded: the same seed gives the same schedule.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

#: ``fn(rate, rng, cv)`` -> endless iterator of absolute offsets (s), mean rate ``rate`` per s
ArrivalFn = Callable[[float, random.Random, float], Iterator[float]]


def _constant(rate: float, rng: random.Random, cv: float) -> Iterator[float]:
    i = 0
    while True:
        i += 1
        yield i / rate


def _poisson(rate: float, rng: random.Random, cv: float) -> Iterator[float]:
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        yield t


def _gamma(rate: float, rng: random.Random, cv: float) -> Iterator[float]:
    k = 1.0 / (cv * cv)
    scale = 1.0 / (rate * k)
    t = 0.0
    while True:
        t += rng.gammavariate(k, scale)
        yield t


#: the arrival processes, by name (``trace`` replays a file: :func:`load_trace`); the one list that
#: ``--arrival`` and :func:`arrival_times` use. Add one with :func:`register_arrival`.
ARRIVALS: dict[str, ArrivalFn | None] = {"poisson": _poisson, "constant": _constant, "gamma": _gamma, "trace": None}


def register_arrival(name: str, fn: ArrivalFn) -> ArrivalFn:
    """Add an arrival process (the public extension point): ``fn(rate, rng, cv)`` yields absolute
    offsets in seconds, seeded by ``rng``; ValueError when ``name`` is taken."""
    if name in ARRIVALS:
        raise ValueError(f"arrival process {name!r} already exists")
    ARRIVALS[name] = fn
    return fn


def arrival_times(kind: str, rate: float, seed: int = 0, cv: float = 1.0,
                  trace_path: str | Path | None = None) -> Iterator[float]:
    """Absolute arrival offsets in seconds (an endless iterator except for ``trace``).

    Raises ValueError for an unknown kind, a rate <= 0 (except trace), cv <= 0, or a bad trace.
    """
    if kind == "trace":
        if trace_path is None:
            raise ValueError("arrival 'trace' needs a trace file")
        return iter(load_trace(trace_path))
    fn = ARRIVALS.get(kind)
    if fn is None:
        raise ValueError(f"unknown arrival process {kind!r}; expected one of {', '.join(ARRIVALS)}")
    if not rate > 0:
        raise ValueError(f"arrival rate must be > 0, got {rate!r}")
    if not cv > 0:
        raise ValueError(f"gamma cv must be > 0, got {cv!r}")
    return fn(rate, random.Random(seed), cv)


def _timestamp(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{where}: timestamp must be a number or an ISO-8601 date")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise ValueError(f"{where}: timestamp must be a number or an ISO-8601 date, got {value!r}")


def load_trace(path: str | Path, rate: float = 0.0) -> list[float]:
    """Offsets (s) from a trace file; ``rate`` > 0 rescales to that mean arrival rate."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read: {exc.strerror or exc}") from None
    stamps: list[float] = []
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        where = f"{p}: line {i}"
        if s.startswith("{"):
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: invalid JSON: {exc.msg}") from None
            if "timestamp" not in obj:
                raise ValueError(f"{where}: missing 'timestamp'")
            ts = _timestamp(obj["timestamp"], where)
        else:
            ts = _timestamp(s, where)
        if stamps and ts < stamps[-1]:
            raise ValueError(f"{where}: timestamps must be non-decreasing ({ts} < {stamps[-1]})")
        stamps.append(ts)
    if not stamps:
        raise ValueError(f"{p}: no timestamps")
    t0 = stamps[0]
    offsets = [t - t0 for t in stamps]
    if rate > 0 and len(offsets) > 1 and offsets[-1] > 0:
        factor = (len(offsets) - 1) / offsets[-1] / rate
        offsets = [o * factor for o in offsets]
    return offsets
