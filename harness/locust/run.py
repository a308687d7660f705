"""The per-process run context: identity, run dir, record sink or outbox, live stats.

One :class:`RunContext` per Locust process, bound in the ``init`` event (:func:`bind`) and reset at
every ``test_start``. Its role follows Locust's runner:
- ``local`` (single process): records go straight to ``RUN_DIR/records.jsonl``;
- ``worker``: records are queued in an outbox and shipped to the master (harness.locust.shipping);
- ``master``: writes the shipped records; runs no users.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

import gevent

from harness.client import new_request_id
from harness.locust import prometheus_exporter, request_events
from harness.locust.client_bound import ClientBoundMonitor
from harness.locust.live import LiveStats
from harness.locust.options import HarnessOptions
from harness.records import RecordSink, RequestRecord

logger = logging.getLogger("harness.locust")

DEFAULT_RUNS_ROOT = Path("reports") / "runs"

#: pending records beyond which the drain greenlet stops waiting for an idle loop
MAX_PENDING = 1000
#: longest stretch of record processing per idle pass, ns (a token arriving meanwhile waits at most this)
DRAIN_SLICE_NS = 150_000
#: the record sink's flush interval, s: a flush writes the lines of this long at once (1 s of them
#: at 256 streams held the event loop for up to about 1 ms)
SINK_FLUSH_S = 0.25


def scenario_name(user_classes: list[type]) -> str:
    """The run's scenario label: the users' ``scenario`` attributes joined by '+' ("mixed" beyond three)."""
    names = sorted({getattr(c, "scenario", "") or c.__name__ for c in user_classes})
    if not names:
        return "run"
    return "+".join(names) if len(names) <= 3 else "mixed"


def default_run_dir(scenario: str, root: Path = DEFAULT_RUNS_ROOT) -> Path:
    """``reports/runs/<YYYYmmdd-HHMMSS>-<scenario>``, made unique with a counter suffix."""
    base = root / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{scenario}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


class RunContext:
    """State of one test run in one process (see module docstring)."""

    def __init__(self, environment: Any, role: str, opts: HarnessOptions) -> None:
        self.env = environment
        self.role = role
        self.opts = opts
        self.node = "local"
        self.run_id = ""
        self.run_dir: Path | None = None
        self.scenario = scenario_name(list(environment.user_classes or []))
        self.sink: RecordSink | None = None
        self.outbox: list[str] = []
        self.live = self._stats()  #: all of this run (local, master)
        self.delta = self._stats()  #: worker: since the last report
        self.monitor = ClientBoundMonitor()
        self.client_bound_reasons: list[str] = []
        self.meta: dict[str, Any] = {}
        self.active = False
        self.finalized = False
        self.tests = 0
        self.inflight = 0  #: requests stamped and not yet submitted (the exporter's in-flight gauge)

        self.schedule: Any = None  #: open loop: this process's shared arrival schedule
        #: forced stop (--stop-timeout 0): when it began (monotonic ns); a request still in flight then is cancelled
        self.cut_ns: int | None = None
        self._pending: deque[tuple[RequestRecord, str | None]] = deque()
        self._drainer: Any = None

    # ----------------------------------------------------------------- lifecycle

    def start(self, run_id: str | None = None) -> None:
        """Begin a test: new run id (and, on local/master, a run dir with an open sink)."""
        self.drain()  # records of the previous test go where that test's went
        self.tests += 1
        # the web UI's class picker changes the user classes between tests
        self.scenario = scenario_name(list(self.env.user_classes or []))
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.outbox = []
        self.live = self._stats()
        self.delta = self._stats()
        self.monitor = ClientBoundMonitor(self.node)
        self.client_bound_reasons = []
        self.meta = {}
        self.finalized = False
        self.schedule = None
        self.cut_ns = None

        if self.role != "worker":
            self.run_dir = self._choose_run_dir()
            self.sink = RecordSink(self.run_dir, flush_interval_s=SINK_FLUSH_S)
        self.active = True

    @staticmethod
    def _stats() -> LiveStats:
        stats = LiveStats()
        stats.step_folds = True  # folded by the drain greenlet, a step per idle pass
        return stats

    def _choose_run_dir(self) -> Path:
        if self.opts.run_dir:
            base = Path(self.opts.run_dir)
            return base if self.tests == 1 else base.with_name(f"{base.name}-{self.tests}")
        return default_run_dir(self.scenario)

    def close_sink(self) -> None:
        """Account every pending record, then close the sink."""
        self.drain()
        if self.sink is not None:
            self.sink.close()
            self.sink = None

    # ----------------------------------------------------------------- records

    def next_request_id(self) -> str:
        """A UUID (the form every server accepts in ``X-Request-Id``; see :func:`new_request_id`)."""
        return new_request_id()

    def stamp(self, rec: RequestRecord, scenario: str, user: str) -> RequestRecord:
        """Fill the identity fields of a new record."""
        rec.run_id, rec.scenario, rec.worker, rec.user = self.run_id, scenario, self.node, user
        rec.request_id = self.next_request_id()
        self.inflight += 1
        return rec

    def submit(self, rec: RequestRecord, event_name: str | None = None) -> None:
        """Queue one finished record for :meth:`process`, off the token-reading greenlet.

        The per-request bookkeeping (about 0.1-0.2 ms: histograms of every gap, the record line,
        Locust request events) would delay other streams' token reads if done here, so the caller
        only appends to a queue; one drain greenlet per process processes it when gevent's loop is
        idle (or at once beyond :data:`MAX_PENDING` queued). :meth:`drain` empties the queue
        synchronously: the 1 s flusher, every worker report, the end of a run. After the run
        (not active) records are processed at once.
        """
        self.inflight -= 1
        if not self.active:
            self.drain()
            self.process(rec, event_name)
            return
        self._pending.append((rec, event_name))
        if self._drainer is None:
            self._drainer = gevent.spawn(self._drain_when_idle)

    def _drain_when_idle(self) -> None:
        # Each idle pass processes records for up to DRAIN_SLICE_NS (two or three of them), not one: an
        # idle wait is a loop iteration of its own, per record it cost about as much as the record.
        # The live statistics' fold of each FOLD_RECORDS records (about 0.9 ms here when done whole) is
        # done one step per idle pass.
        pending = self._pending
        try:
            while True:
                stats = self.delta if self.role == "worker" else self.live
                if not pending and not stats.folding:
                    break
                if len(pending) < MAX_PENDING:
                    gevent.idle()
                if stats.folding:
                    try:
                        stats.fold_step()
                    except Exception:  # the batch is lost to the live view; the records are not
                        logger.exception("stream-harness: folding live statistics failed")
                else:
                    self._drain_slice()
        finally:
            self._drainer = None

    def _drain_slice(self) -> None:
        """Process queued records for up to DRAIN_SLICE_NS."""
        pending, clock = self._pending, time.monotonic_ns
        until = clock() + DRAIN_SLICE_NS
        while pending:
            self._process_guarded(*pending.popleft())
            if clock() >= until:
                return

    def drain_in_slices(self) -> None:
        """:meth:`drain`, yielding to the event loop between slices of :meth:`_drain_slice` (the 1 s
        flusher: queued records still reach the file within the second, without one long block)."""
        while self._pending:
            self._drain_slice()
            if self._pending:
                gevent.sleep(0)

    def drain(self) -> None:
        """Process every queued record now (the sink/outbox and live stats are then complete)."""
        while self._pending:
            self._process_guarded(*self._pending.popleft())

    def _process_guarded(self, rec: RequestRecord, event_name: str | None) -> None:
        try:
            self.process(rec, event_name)
        except Exception:  # one bad record must not stop the accounting of the others
            logger.exception("stream-harness: accounting record %s failed", rec.request_id)

    def process(self, rec: RequestRecord, event_name: str | None = None) -> None:
        """Account one finished record: Locust request events (when ``event_name`` is given; their
        response times come from the record, so deferral does not change them), live stats, lag
        monitor, and the sink (local) or outbox (worker)."""
        if event_name is not None:
            request_events.fire(self.env, event_name, rec)
        if rec.intended_ns is not None and rec.send_ns is not None and rec.intended_ns != rec.send_ns:
            self.monitor.note_lag((rec.send_ns - rec.intended_ns) / 1e6)
        if self.role == "worker":
            self.delta.add(rec)
            self.outbox.append(rec.to_json())
            return
        self.live.add(rec)
        prometheus_exporter.observe(rec)
        if self.sink is not None:
            self.sink.write(rec)
        else:  # a request finishing after the run was closed: keep it rather than lose it
            logger.warning("record %s arrived after the run was finalized; appended", rec.request_id)
            if self.run_dir is not None:
                with RecordSink(self.run_dir) as late:
                    late.write(rec)

    def take_outbox(self) -> list[str]:
        out, self.outbox = self.outbox, []
        return out

    def note_client_bound(self, reasons: list[str]) -> None:
        for r in reasons:
            if r not in self.client_bound_reasons:
                self.client_bound_reasons.append(r)

    def check_client_bound(self) -> list[str]:
        """Run the local monitor with this process's CPU reading; returns new reasons."""
        runner = self.env.runner
        cpu = getattr(runner, "current_cpu_usage", None) if runner is not None else None
        fresh = self.monitor.check(cpu)
        self.note_client_bound(fresh)
        return fresh


_CTX: RunContext | None = None


def bind(ctx: RunContext) -> None:
    global _CTX
    _CTX = ctx


def current() -> RunContext:
    """The process's run context; raises when harness.locust's listeners were never initialised."""
    if _CTX is None:
        raise RuntimeError("harness.locust is not initialised: run scenarios with the locust command")
    return _CTX
