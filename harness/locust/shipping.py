"""Distributed runs: workers ship record batches and histogram deltas; the master merges them.

Worker side:
- every Locust report (``report_to_master``, every 3 s) adds ``data["harness"]``: the outbox of
  JSON record lines, the :class:`~harness.locust.live.LiveStats` delta and client-bound reasons;
- at ``test_stop`` (after its users stopped, in-flight streams finished or were cancelled) a final
  custom message :data:`MSG_FINAL` carries everything left.
Master side: both are merged into the run's sink and live stats (:func:`merge`). At the end of a
headless run Locust's master stops listening 0.5 s after telling workers to quit, which a worker
still finishing streams can miss, so :func:`drain` reads the RPC socket itself until every expected
worker's final batch (and its last stats report) arrived, or a timeout passed. Nothing is sampled:
every record line arrives once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent

from harness.locust import clock_sync, prometheus_exporter
from harness.locust.run import RunContext

logger = logging.getLogger("harness.locust")

MSG_FINAL = "harness_final"
KEY = "harness"


def worker_payload(ctx: RunContext, final: bool) -> dict[str, Any]:
    """The worker's batch since the last one (outbox and histogram delta are taken, i.e. cleared)."""
    ctx.drain()
    ctx.check_client_bound()
    return {"run_id": ctx.run_id, "node": ctx.node, "records": ctx.take_outbox(), "live": ctx.delta.take_delta(),
            "client_bound": list(ctx.client_bound_reasons), "final": final,
            "inflight": ctx.inflight, "clock": clock_sync.worker_payload()}


def send_final(ctx: RunContext) -> None:
    """Worker: ship everything left as the final batch (once per test)."""
    runner = ctx.env.runner
    payload = worker_payload(ctx, final=True)
    runner.send_message(MSG_FINAL, payload)
    logger.debug("final batch sent: %d records", len(payload["records"]))


class Collector:
    """Master: which workers are expected to send a final batch, and which did."""

    def __init__(self) -> None:
        self.expected: set[str] = set()
        self.finals: set[str] = set()
        self.stats_after_final: set[str] = set()
        self.gone: set[str] = set()

    @property
    def pending(self) -> set[str]:
        return self.expected - self.finals - self.gone

    def complete(self) -> bool:
        return not self.pending


def merge(ctx: RunContext, collector: Collector, client_id: str, payload: dict[str, Any]) -> None:
    """Master: write a worker's record lines and fold its histogram delta into the run."""
    collector.expected.add(client_id)
    if payload.get("run_id") and payload["run_id"] != ctx.run_id:
        logger.warning("batch of run %s from %s arrived during run %s; kept", payload["run_id"], client_id, ctx.run_id)
    lines = payload.get("records") or []
    lines = clock_sync.map_lines(ctx, client_id, payload, lines)  # worker's clock -> the master's
    prometheus_exporter.observe_batch(client_id, payload, lines)
    if lines:
        if ctx.sink is not None:
            ctx.sink.write_lines(lines)
        elif ctx.run_dir is not None:
            logger.warning("%d records from %s arrived after the run was finalized; appended", len(lines), client_id)
            from harness.records import RecordSink

            with RecordSink(ctx.run_dir) as late:
                late.write_lines(lines)
    ctx.live.merge_delta(payload.get("live") or {})
    ctx.note_client_bound(payload.get("client_bound") or [])
    if payload.get("final"):
        collector.finals.add(client_id)


def drain(environment: Any, ctx: RunContext, collector: Collector, timeout_s: float, grace_s: float = 2.0) -> bool:
    """Master, after Locust stopped listening: read worker messages until every final batch arrived.

    Also feeds late ``stats`` messages to ``worker_report`` so Locust's own statistics are complete.
    Returns True when nothing is missing.
    """
    runner = environment.runner
    deadline = time.monotonic() + timeout_s
    grace_end: float | None = None
    while True:
        now = time.monotonic()
        if collector.complete():
            if collector.finals <= collector.stats_after_final:
                break
            grace_end = grace_end or now + grace_s
            if now >= grace_end:
                break
        if now >= deadline:
            break
        remaining = min(deadline, grace_end or deadline) - now
        got = None
        with gevent.Timeout(max(remaining, 0.01), False):
            got = runner.server.recv_from_client()
        if got is None:
            continue
        _, msg = got
        if msg.type == MSG_FINAL:
            merge(ctx, collector, msg.node_id, msg.data or {})
        elif msg.type == "stats":
            environment.events.worker_report.fire(client_id=msg.node_id, data=msg.data)
        elif msg.type == "quit" and msg.node_id not in collector.finals:
            collector.gone.add(msg.node_id)
            logger.error("worker %s quit without its final batch: its last records are missing", msg.node_id)
    if collector.pending:
        logger.error("no final batch from %d worker(s) after %.0f s: their last records are missing",
                     len(collector.pending), timeout_s)
    return not collector.pending and not collector.gone
