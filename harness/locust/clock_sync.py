"""Aligned clocks across hosts for distributed Locust runs: an NTP-style exchange over Locust's
message channel, and the master mapping every worker's monotonic times onto its own timeline.

Every ``*_ns`` time of a record is a reading of its process's CLOCK_MONOTONIC, whose zero is the
host's boot: workers on different hosts have unrelated zeros. Each worker therefore measures its
clock against the master's, at connect and every ``--clock-sync-interval`` seconds, with a round
of :data:`BURST` pings (:data:`MSG_PING`, answered at once by the master with :data:`MSG_PONG`):

- worker sends at ``t0`` (its clock); master receives at ``t1`` and answers at ``t2`` (master
  clock); worker receives at ``t3``;
- offset ``theta = ((t1 - t0) + (t2 - t3)) / 2`` (master minus worker), round trip
  ``delta = (t3 - t0) - (t2 - t1)``;
- whatever the one-way delays are, the true offset lies within ``theta +- delta / 2``: that half
  round trip is the sample's *uncertainty*.

The estimate is the sample with the smallest round trip among the last :data:`WINDOW_ROUNDS`
rounds (a sliding window, so a slowly drifting clock is followed). Workers ship their current
estimate with every record batch (harness.locust.shipping); the master adds its offset to every
time field of the batch's records before writing them, so the merged records, per-second
series, step and steady windows use the master's clock. ``run.json`` gets ``clock_sync``: per
worker the offset applied, its uncertainty (the largest of the estimates applied: the bound that
holds for every record of that worker), the best round trip, samples, and the observed drift.

``--clock-sync auto`` (default): a worker on the master's own clock (same kernel boot id, time
namespace and no injected skew, e.g. ``--processes``) gets offset 0 exactly; ``measure``:
always use the measured estimate; ``off``: no mapping (each worker's times stay on its own clock).

Open-loop runs: the master stamps one schedule start (its clock, :data:`SCHEDULE_LEAD_S` after
test start) into the options copied to workers; each worker maps it onto its own clock
(:func:`schedule_start_ns`), so every worker's share of the global arrival schedule uses the same
time zero.

Test only: ``HARNESS_TEST_CLOCK_SKEW_S`` shifts this process's monotonic clock by that many
seconds (:func:`apply_test_skew`, the one place it is read), to show that a skew is corrected.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.event import AsyncResult, Event

from harness.analysis.clocks import DEFAULT_WARN_MS, clock_warnings
from harness.locust.option_group import option_group
from harness.records import RECORD_COLUMNS

logger = logging.getLogger("harness.locust")

MSG_PING = "harness_clock_ping"  #: worker -> master: {"seq", "clock_id"}
MSG_PONG = "harness_clock_pong"  #: master -> worker: {"seq", "t1", "t2", "exact", "mode", "interval_s"}
SKEW_ENV = "HARNESS_TEST_CLOCK_SKEW_S"
MODES = ("auto", "measure", "off")
DEFAULT_INTERVAL_S = 10.0
BURST = 8  #: pings per round
BURST_GAP_S = 0.02  #: pause between the pings of a round
PONG_TIMEOUT_S = 1.0  #: a ping without answer after this long is dropped
WINDOW_ROUNDS = 6  #: the estimate is the best sample of the last this many rounds
HISTORY_MAX = 2000  #: per-round best samples kept per worker for the drift figure
SCHEDULE_LEAD_S = 0.2  #: open loop: the shared schedule starts this long after the master's test start
MAX_SCHEDULE_PAST_S = 1.0  #: a worker joining later than this after the shared start uses its own start
FIRST_SAMPLE_WAIT_S = 2.0  #: open loop: how long a worker waits for its first clock sample
#: every time field of a record: what the master shifts (lists: every element)
TIME_FIELDS: tuple[str, ...] = tuple(c for c in RECORD_COLUMNS if c.endswith("_ns"))

_skew_ns = 0
_clock_id: str | None = None
_worker: WorkerSync | None = None
_master: MasterClocks | None = None


def now_ns() -> int:
    """This process's monotonic clock, ns (looked up at call time, so an injected skew applies)."""
    return time.monotonic_ns()


# ----------------------------------------------------------------------------------- test skew

def apply_test_skew() -> int:
    """Test only: shift ``time.monotonic``/``time.monotonic_ns`` of this process by
    ``$HARNESS_TEST_CLOCK_SKEW_S`` seconds (may be negative); returns the skew in ns (0: none).

    Runs when this module is imported, which harness.locust does before it imports the client:
    the client binds ``time.monotonic_ns`` at import in places (its SSE reader's clock), so the
    patch must come first; RuntimeError when harness.client was imported already, ValueError on a
    non-number. The whole process then behaves like a host whose clock has another zero.
    """
    global _skew_ns, _clock_id
    raw = os.environ.get(SKEW_ENV, "").strip()
    if not raw or _skew_ns:
        return _skew_ns
    try:
        skew = float(raw)
    except ValueError:
        raise ValueError(f"{SKEW_ENV}: {raw!r} is not a number of seconds") from None
    skew_ns = int(round(skew * 1e9))
    if skew_ns:
        early = sorted(m for m in sys.modules if m == "harness.client" or m.startswith("harness.client."))
        if early:
            raise RuntimeError(f"{SKEW_ENV}: harness.client ({early[0]}) was imported before the skew could be "
                               "applied; import harness.locust first")
        mono_ns, mono = time.monotonic_ns, time.monotonic
        time.monotonic_ns = lambda: mono_ns() + skew_ns  # type: ignore[assignment]
        time.monotonic = lambda: mono() + skew_ns / 1e9  # type: ignore[assignment]
        _skew_ns, _clock_id = skew_ns, None
        logger.warning("stream-harness: test clock skew of %+.3f s applied to this process (%s)", skew, SKEW_ENV)
    return _skew_ns


def clock_id() -> str | None:
    """Identity of this process's CLOCK_MONOTONIC: kernel boot id, time namespace and injected
    skew. Two processes with the same id read the same clock; None when it cannot be told."""
    global _clock_id
    if _clock_id is None:
        try:
            boot = open("/proc/sys/kernel/random/boot_id").read().strip()  # noqa: SIM115 - tiny read
            timens = os.stat("/proc/self/ns/time").st_ino
        except OSError:
            return None
        _clock_id = f"{boot}/{timens}/{_skew_ns}"
    return _clock_id


# ----------------------------------------------------------------------------------- samples

@dataclass(frozen=True, slots=True)
class Sample:
    """One ping: worker send ``t0``, master receive ``t1``, master send ``t2``, worker receive ``t3`` (ns)."""

    t0: int
    t1: int
    t2: int
    t3: int

    @property
    def offset_ns(self) -> int:
        """``((t1 - t0) + (t2 - t3)) / 2``: master clock minus worker clock."""
        return ((self.t1 - self.t0) + (self.t2 - self.t3)) // 2

    @property
    def delay_ns(self) -> int:
        """Round trip without the master's processing: ``(t3 - t0) - (t2 - t1)``."""
        return max(0, (self.t3 - self.t0) - (self.t2 - self.t1))

    @property
    def uncertainty_ns(self) -> int:
        """Half the round trip (+1 ns for the integer halving): the true offset is within +- this."""
        return self.delay_ns // 2 + 1


class Estimator:
    """Samples in rounds; the estimate is the smallest-round-trip sample of the last ``window`` rounds."""

    def __init__(self, window: int = WINDOW_ROUNDS) -> None:
        self.rounds: deque[list[Sample]] = deque(maxlen=window)
        self.samples = 0
        self.n_rounds = 0

    def new_round(self) -> None:
        self.rounds.append([])
        self.n_rounds += 1

    def add(self, s: Sample) -> None:
        if not self.rounds:
            self.new_round()
        self.rounds[-1].append(s)
        self.samples += 1

    def round_best(self) -> Sample | None:
        """The best sample of the current round."""
        cur = self.rounds[-1] if self.rounds else []
        return min(cur, key=lambda s: s.delay_ns) if cur else None

    def best(self) -> Sample | None:
        """The smallest-round-trip sample of the window (None before the first answer)."""
        pool = [s for r in self.rounds for s in r]
        return min(pool, key=lambda s: s.delay_ns) if pool else None


# ----------------------------------------------------------------------------------- worker

class WorkerSync:
    """Worker side: pings the master in rounds, keeps the estimate, ships it with every batch."""

    def __init__(self, environment: Any) -> None:
        self.env = environment
        self.est = Estimator()
        self.seq = 0
        self.waiting: dict[int, AsyncResult] = {}
        self.exact = False  #: the master said: same clock and --clock-sync auto, offset exactly 0
        self.interval_s = DEFAULT_INTERVAL_S
        self.first = Event()  #: set once the first sample arrived
        self.history: list[list[int]] = []  #: per-round best [t3, offset, delay] not yet shipped
        self.schedule_estimate: dict[str, int | bool] | None = None  #: the estimate the schedule start used
        self.greenlet: Any = None

    def start(self) -> None:
        self.env.runner.register_message(MSG_PONG, self.on_pong)
        self.env.events.test_start.add_listener(self._on_test_start)
        self.greenlet = gevent.spawn(self._loop)

    def _on_test_start(self, **_: Any) -> None:
        self.schedule_estimate = None  # a new test maps its own schedule start

    def _loop(self) -> None:
        while True:
            self.round()
            gevent.sleep(self.interval_s)

    def round(self, n: int = BURST) -> None:
        """One round of ``n`` pings, each waiting for its answer (so none queues behind another)."""
        self.est.new_round()
        for _ in range(n):
            self._ping()
            gevent.sleep(BURST_GAP_S)
        best = self.est.round_best()
        if best is not None:
            self.history.append([best.t3, best.offset_ns, best.delay_ns])

    def _ping(self) -> None:
        self.seq += 1
        seq, res = self.seq, AsyncResult()
        self.waiting[seq] = res
        try:
            t0 = now_ns()
            self.env.runner.send_message(MSG_PING, {"seq": seq, "clock_id": clock_id()})
            data, t3 = res.get(timeout=PONG_TIMEOUT_S)
        except gevent.Timeout:
            logger.debug("clock ping %d: no answer within %.1f s", seq, PONG_TIMEOUT_S)
            return
        except Exception as exc:  # noqa: BLE001 - a lost connection: try again next round
            logger.debug("clock ping %d failed: %s", seq, exc)
            return
        finally:
            self.waiting.pop(seq, None)
        self.est.add(Sample(t0, int(data["t1"]), int(data["t2"]), t3))
        self.exact = bool(data.get("exact"))
        self.interval_s = float(data.get("interval_s") or self.interval_s)
        self.first.set()

    def on_pong(self, environment: Any, msg: Any, **_: Any) -> None:
        t3 = now_ns()  # first thing: the receive stamp
        data = msg.data or {}
        res = self.waiting.get(data.get("seq"))
        if res is not None:
            res.set((data, t3))

    def estimate(self) -> dict[str, int | bool] | None:
        """``{"offset_ns", "uncertainty_ns", "rtt_ns", "exact"}`` now, or None before any sample."""
        best = self.est.best()
        if self.exact:
            return {"offset_ns": 0, "uncertainty_ns": 0, "rtt_ns": best.delay_ns if best else 0, "exact": True}
        if best is None:
            return None
        return {"offset_ns": best.offset_ns, "uncertainty_ns": best.uncertainty_ns, "rtt_ns": best.delay_ns,
                "exact": False}

    def payload(self) -> dict[str, Any]:
        """What rides with a record batch: the estimate the master applies to it, and facts for run.json."""
        hist, self.history = self.history, []
        return {"estimate": self.estimate(), "clock_id": clock_id(), "hostname": socket.gethostname(),
                "pid": os.getpid(), "samples": self.est.samples, "rounds": self.est.n_rounds, "history": hist,
                "schedule": self.schedule_estimate}

    def to_local_ns(self, master_ns: int, wait_s: float = FIRST_SAMPLE_WAIT_S) -> int | None:
        """A master-clock time on this worker's clock (None without a sample after ``wait_s``)."""
        if not self.first.is_set():
            self.first.wait(wait_s)
        est = self.schedule_estimate = self.estimate()
        return None if est is None else master_ns - int(est["offset_ns"])


# ----------------------------------------------------------------------------------- master

@dataclass
class WorkerClock:
    """Master side: what is known about one worker's clock, and what was applied this test."""

    node: str
    client_id: str
    hostname: str = ""
    pid: int | None = None
    exact: bool = False
    estimate: dict[str, Any] | None = None  #: the latest estimate received
    samples: int = 0
    rounds: int = 0
    history: list[list[int]] = field(default_factory=list)
    # this test:
    records: int = 0  #: records mapped
    unaligned: int = 0  #: records that arrived before any estimate (left on the worker's clock)
    applied_min_ns: int | None = None
    applied_max_ns: int | None = None
    uncertainty_ns: int = 0  #: largest uncertainty of the estimates applied
    best_rtt_ns: int | None = None
    schedule: dict[str, Any] | None = None  #: open loop: the estimate its schedule start was mapped with

    def update(self, clock: dict[str, Any]) -> None:
        self.hostname = str(clock.get("hostname") or self.hostname)
        self.pid = clock.get("pid", self.pid)
        self.samples = int(clock.get("samples") or self.samples)
        self.rounds = int(clock.get("rounds") or self.rounds)
        self.history.extend(clock.get("history") or [])
        self.schedule = clock.get("schedule") or self.schedule
        del self.history[:-HISTORY_MAX]
        est = clock.get("estimate")
        if est is not None:
            self.estimate = est
            self.exact = bool(est.get("exact"))
            rtt = int(est.get("rtt_ns") or 0)
            if not self.exact and (self.best_rtt_ns is None or rtt < self.best_rtt_ns):
                self.best_rtt_ns = rtt

    def applied(self, est: dict[str, Any], n: int) -> None:
        off = int(est["offset_ns"])
        self.records += n
        self.applied_min_ns = off if self.applied_min_ns is None else min(self.applied_min_ns, off)
        self.applied_max_ns = off if self.applied_max_ns is None else max(self.applied_max_ns, off)
        self.uncertainty_ns = max(self.uncertainty_ns, int(est["uncertainty_ns"]))

    def reset_test(self) -> None:
        self.records = self.unaligned = self.uncertainty_ns = 0
        self.applied_min_ns = self.applied_max_ns = None
        self.schedule = None

    def drift_ppm(self) -> float | None:
        """Least-squares slope of the per-round offsets over the worker's clock, in ppm (parts per
        million: microseconds of offset change per second); None before 3 rounds over 30 s."""
        h = self.history
        if len(h) < 3 or h[-1][0] - h[0][0] < 30e9:
            return None
        n = len(h)
        mt = sum(x[0] for x in h) / n
        mo = sum(x[1] for x in h) / n
        var = sum((x[0] - mt) ** 2 for x in h)
        return sum((x[0] - mt) * (x[1] - mo) for x in h) / var * 1e6 if var else None

    def as_dict(self) -> dict[str, Any]:
        est = self.estimate or {}
        offset = self.applied_max_ns if self.applied_max_ns is not None else est.get("offset_ns")
        drift = self.drift_ppm()
        return {"client_id": self.client_id, "hostname": self.hostname, "pid": self.pid,
                "aligned": self.estimate is not None, "exact": self.exact,
                "offset_ns": offset, "offset_spread_ns": (self.applied_max_ns - self.applied_min_ns)
                if self.applied_min_ns is not None and self.applied_max_ns is not None else 0,
                "uncertainty_ns": self.uncertainty_ns if self.records else est.get("uncertainty_ns"),
                "best_rtt_ns": self.best_rtt_ns, "samples": self.samples, "rounds": self.rounds,
                "records": self.records, "unaligned_records": self.unaligned,
                "drift_ppm": round(drift, 3) if drift is not None else None,
                # open loop: its share of the schedule started at the shared zero +- this (+ the records' own)
                "schedule_uncertainty_ns": self.schedule.get("uncertainty_ns") if self.schedule else None}


class MasterClocks:
    """Master side: answers pings, applies each batch's estimate, summarises for run.json."""

    def __init__(self, environment: Any, mode: str, interval_s: float, warn_ms: float) -> None:
        self.env = environment
        self.mode, self.interval_s, self.warn_ms = mode, interval_s, warn_ms
        self.workers: dict[str, WorkerClock] = {}
        self.schedule_start_ns: int | None = None  #: open loop: the shared schedule zero (master clock)

    def start(self) -> None:
        self.env.runner.register_message(MSG_PING, self.on_ping)
        self.env.events.test_start.add_listener(self.on_test_start)

    def on_ping(self, environment: Any, msg: Any, **_: Any) -> None:
        t1 = now_ns()  # first thing: the receive stamp
        d = msg.data or {}
        mine = clock_id()
        exact = self.mode == "auto" and mine is not None and d.get("clock_id") == mine
        # "t2" last: stamped as late as possible before the answer is serialised and sent
        environment.runner.send_message(MSG_PONG, {"seq": d.get("seq"), "exact": exact, "mode": self.mode,
                                                   "interval_s": self.interval_s, "t1": t1, "t2": now_ns()},
                                        client_id=msg.node_id)

    def on_test_start(self, environment: Any, **_: Any) -> None:
        for w in self.workers.values():
            w.reset_test()
        # open loop: one schedule zero on the master's clock, copied to the workers with the options
        self.schedule_start_ns = now_ns() + int(SCHEDULE_LEAD_S * 1e9)
        environment.parsed_options.harness_schedule_start_ns = self.schedule_start_ns

    def map_lines(self, client_id: str, payload: dict[str, Any], lines: list[str]) -> list[str]:
        """The batch's record lines on the master's clock (unchanged when mode is off, the estimate
        is exactly 0, or the worker had no sample yet: those are counted as unaligned)."""
        clock = payload.get("clock")
        if clock is None:
            return lines
        w = self.workers.get(client_id)
        if w is None:
            w = self.workers[client_id] = WorkerClock(str(payload.get("node") or client_id), client_id)
        w.node = str(payload.get("node") or w.node)
        w.update(clock)
        if not lines or self.mode == "off":
            return lines
        est = clock.get("estimate")
        if est is None:
            w.unaligned += len(lines)
            return lines
        w.applied(est, len(lines))
        off = int(est["offset_ns"])
        return lines if off == 0 else [shift_line(line, off) for line in lines]

    def summary(self) -> dict[str, Any]:
        """``run.json``'s ``clock_sync``: mode, threshold, per worker facts, largest uncertainty, warnings."""
        workers = {w.node: w.as_dict() for w in sorted(self.workers.values(), key=lambda w: w.node)}
        us = [int(v["uncertainty_ns"]) for v in workers.values() if v["uncertainty_ns"] is not None]
        out: dict[str, Any] = {"mode": self.mode, "reference": "master CLOCK_MONOTONIC", "warn_ms": self.warn_ms,
                               "interval_s": self.interval_s, "workers": workers,
                               "max_uncertainty_ns": max(us) if us else None,
                               "schedule_start_ns": self.schedule_start_ns}
        out["warnings"] = clock_warnings(out)
        return out


def shift_line(line: str, offset_ns: int) -> str:
    """One record's JSON line with ``offset_ns`` added to every time field (same JSON form as
    ``RequestRecord.to_json``); a line that is not a JSON object is returned unchanged."""
    try:
        d = json.loads(line)
    except json.JSONDecodeError:
        return line
    if not isinstance(d, dict):
        return line
    for name in TIME_FIELDS:
        v = d.get(name)
        if isinstance(v, int):
            d[name] = v + offset_ns
        elif isinstance(v, list):
            d[name] = [x + offset_ns for x in v]
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


# ----------------------------------------------------------------------------------- entry points

def add_arguments(parser: Any) -> None:
    """Register ``--clock-sync``, ``--clock-sync-interval`` and ``--clock-warn-ms`` (master's values rule)."""
    add = option_group(parser, "stream-harness clocks", "aligned clocks of distributed runs (harness.locust.clock_sync)")
    add("--clock-sync", choices=MODES, default="auto",
        help="map workers' times onto the master's clock: auto (offset 0 for workers on the master's own "
             "clock, measured otherwise) | measure (always measured) | off")
    add("--clock-sync-interval", type=float, default=DEFAULT_INTERVAL_S,
        help="seconds between clock measurement rounds of each worker")
    add("--clock-warn-ms", type=float, default=DEFAULT_WARN_MS,
        help="warn in the run's report when a worker's clock uncertainty exceeds this, ms")


def register(environment: Any, role: str, run_meta: dict[str, Any] | None = None) -> None:
    """Install clock sync for this process's ``role`` (``local`` | ``master`` | ``worker``).

    On a worker starts the ping rounds; on the master answers pings and maps batches. A bad value
    ends the process with one line (exit 2).
    """
    global _worker, _master
    try:
        opts = environment.parsed_options
        mode = getattr(opts, "clock_sync", "auto") or "auto"
        interval = float(getattr(opts, "clock_sync_interval", DEFAULT_INTERVAL_S))
        warn_ms = float(getattr(opts, "clock_warn_ms", DEFAULT_WARN_MS))
        if mode not in MODES:
            raise ValueError(f"--clock-sync: {mode!r} is not one of {', '.join(MODES)}")
        if not interval > 0 or not warn_ms > 0:
            raise ValueError("--clock-sync-interval and --clock-warn-ms must be > 0")
    except ValueError as exc:
        sys.stderr.write(f"stream-harness: error: {exc}\n")
        raise SystemExit(2) from None
    if role == "worker":
        _worker = WorkerSync(environment)
        _worker.start()
    elif role == "master":
        _master = MasterClocks(environment, mode, interval, warn_ms)
        _master.start()


def worker_payload() -> dict[str, Any] | None:
    """Worker: the ``clock`` entry of a record batch (None in other roles)."""
    return _worker.payload() if _worker is not None else None


def map_lines(ctx: Any, client_id: str, payload: dict[str, Any], lines: list[str]) -> list[str]:
    """Master: a worker batch's record lines on the master's clock; keeps ``ctx.meta["clock_sync"]`` current."""
    if _master is None:
        return lines
    out = _master.map_lines(client_id, payload, lines)
    if payload.get("clock") is not None:
        ctx.meta["clock_sync"] = _master.summary()
    return out


def schedule_start_ns(environment: Any) -> int | None:
    """Worker: the master's shared open-loop schedule start on this worker's clock, or None (use
    the local start: no shared start, no clock sample, or more than MAX_SCHEDULE_PAST_S ago)."""
    start = getattr(environment.parsed_options, "harness_schedule_start_ns", None)
    if not start or _worker is None:
        return None
    local = _worker.to_local_ns(int(start))
    if local is None:
        logger.warning("stream-harness: no clock sample from the master yet: this worker's open-loop share "
                       "starts on its own clock")
        return None
    if local < now_ns() - int(MAX_SCHEDULE_PAST_S * 1e9):
        logger.warning("stream-harness: joined %.1f s after the shared schedule start: starting its share now",
                       (now_ns() - local) / 1e9)
        return None
    return local


def master_clocks() -> MasterClocks | None:
    """The master's clock state (for the Prometheus exporter's gauges), None elsewhere."""
    return _master


try:  # the test skew, before anything reads the clock (see apply_test_skew)
    apply_test_skew()
except (ValueError, RuntimeError) as _exc:
    sys.stderr.write(f"stream-harness: error: {_exc}\n")
    raise SystemExit(2) from None
