"""Prometheus exporter of the load generator's own figures, on the master or a single Locust process.

``--prometheus-port P`` serves ``http://<--prometheus-host>:P/metrics`` (text exposition format,
gevent WSGI server) for the whole life of the process. Every finished request is accounted once:
in a single process when its record is processed (harness.locust.run), on the master when a
worker's batch is merged (harness.locust.shipping), so the figures cover all workers.

Metrics (labels ``scenario`` and ``endpoint``, the route of the request; durations in seconds;
names follow Prometheus conventions and, where one exists, OpenTelemetry's gen_ai semantic
conventions with dots as underscores and the unit as suffix):

==========================================================  =========  ==========================================
``gen_ai_client_operation_time_to_first_chunk_seconds``     histogram  TTFT from the intended start, ok requests
``gen_ai_client_operation_time_per_output_chunk_seconds``   histogram  ITL: every gap between token events, ok
``stream_harness_time_per_output_token_seconds``            histogram  TPOT per ok request
``gen_ai_client_operation_duration_seconds``                histogram  E2E from the intended start, ok requests
``gen_ai_client_token_usage``                               histogram  tokens per ok request, label
                                                                       ``gen_ai_token_type`` = input | output
``stream_harness_requests_total``                           counter    requests by ``outcome`` (ok, overloaded,
                                                                       ..., dropped = open-loop drops)
``stream_harness_schedule_lag_seconds``                     histogram  send - intended start (0 in closed loop)
``stream_harness_requests_in_flight``                       gauge      streams in flight (no scenario label)
``stream_harness_clock_offset_seconds``                     gauge      master: each ``worker``'s clock offset
``stream_harness_clock_uncertainty_seconds``                gauge      master: its uncertainty (+-)
==========================================================  =========  ==========================================

The values are those of the metric dictionary (harness.metrics), so PromQL quantiles agree with
the run's summary to within the width of the bucket holding them. Buckets (:data:`BUCKETS`) span
what LLM serving produces: TTFT 5 ms - 2 min, gaps 0.5 ms - 10 s, E2E 50 ms - 30 min.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from harness.locust import clock_sync
from harness.locust.option_group import option_group
from harness.metrics import e2e_intended_ms, output_tokens, schedule_lag_ms, tpot_ms, ttft_intended_ms
from harness.records import Outcome, RequestRecord

logger = logging.getLogger("harness.locust")

TTFT = "gen_ai_client_operation_time_to_first_chunk_seconds"
ITL = "gen_ai_client_operation_time_per_output_chunk_seconds"
TPOT = "stream_harness_time_per_output_token_seconds"
E2E = "gen_ai_client_operation_duration_seconds"
TOKENS = "gen_ai_client_token_usage"
LAG = "stream_harness_schedule_lag_seconds"
REQUESTS = "stream_harness_requests_total"
IN_FLIGHT = "stream_harness_requests_in_flight"
CLOCK_OFFSET = "stream_harness_clock_offset_seconds"
CLOCK_UNCERTAINTY = "stream_harness_clock_uncertainty_seconds"

_LATENCY = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
            1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
_GAP = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
        0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
#: upper bucket bounds (Prometheus ``le``) per histogram; +Inf is implied
BUCKETS: dict[str, tuple[float, ...]] = {
    TTFT: _LATENCY,
    ITL: _GAP,
    TPOT: _GAP,
    E2E: (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0,
          300.0, 600.0, 1800.0),
    TOKENS: (1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 1048576),
    LAG: (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
}
HELP: dict[str, str] = {
    TTFT: "Time to first token from the request's intended start (open loop: includes schedule lag), ok requests",
    ITL: "Inter-token latency: every gap between consecutive token events of ok requests",
    TPOT: "Time per output token after the first, per ok request",
    E2E: "End-to-end request latency from the intended start, ok requests",
    TOKENS: "Tokens per ok request by gen_ai_token_type (input: server-reported or client-counted prompt tokens)",
    LAG: "Schedule lag: send time minus intended start (open loop; 0 in closed loop)",
    REQUESTS: "Requests by outcome class (dropped: open-loop arrivals the saturated client never sent)",
    IN_FLIGHT: "Streams in flight in the load generator (all workers)",
    CLOCK_OFFSET: "Worker clock offset applied (master minus worker)",
    CLOCK_UNCERTAINTY: "Worker clock uncertainty (half the best round trip)",
}
#: every metric family the exporter exposes (the dashboard test checks queries against it)
METRIC_NAMES: tuple[str, ...] = (TTFT, ITL, TPOT, E2E, TOKENS, LAG, REQUESTS, IN_FLIGHT, CLOCK_OFFSET,
                                 CLOCK_UNCERTAINTY)

_exporter: Exporter | None = None


class _Hist:
    """Bucket counts (non-cumulative, the last one is +Inf) and sum of one labelled histogram."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.bounds, v)] += 1  # first bound >= v: Prometheus "le"
        self.sum += v


class Exporter:
    """Accumulates records into labelled histograms and counters; a prometheus_client collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hist: dict[tuple[str, tuple[str, ...]], _Hist] = {}
        self._requests: dict[tuple[str, str, str], int] = {}
        self._endpoints: dict[str, str] = {}
        self._inflight_workers: dict[str, int] = {}
        self.local_inflight: Any = None  #: callable giving this process's in-flight streams (local role)

    def _h(self, name: str, labels: tuple[str, ...]) -> _Hist:
        h = self._hist.get((name, labels))
        if h is None:
            h = self._hist[(name, labels)] = _Hist(BUCKETS[name])
        return h

    def _endpoint(self, target: str) -> str:
        ep = self._endpoints.get(target)
        if ep is None:
            ep = self._endpoints[target] = urlsplit(target).path or "/"
        return ep

    def observe(self, r: RequestRecord) -> None:
        """Account one finished record (values from harness.metrics, ms -> s)."""
        key = (r.scenario, self._endpoint(r.target))
        with self._lock:
            rk = (*key, r.outcome)
            self._requests[rk] = self._requests.get(rk, 0) + 1
            lag = schedule_lag_ms(r)
            if lag is not None:
                self._h(LAG, key).observe(max(lag, 0.0) / 1e3)
            if r.outcome != Outcome.OK:
                return
            for name, v in ((TTFT, ttft_intended_ms(r)), (TPOT, tpot_ms(r)), (E2E, e2e_intended_ms(r))):
                if v is not None:
                    self._h(name, key).observe(v / 1e3)
            self._h(TOKENS, (*key, "output")).observe(output_tokens(r))
            n_in = r.input_tokens_server if r.input_tokens_server is not None else r.input_tokens_client
            if n_in is not None:
                self._h(TOKENS, (*key, "input")).observe(n_in)
            t = r.token_ns
            if len(t) > 1:
                h = self._h(ITL, key)
                bounds, counts = h.bounds, h.counts
                total = 0
                for prev, cur in zip(t, t[1:], strict=False):
                    gap = (cur - prev) / 1e9
                    counts[bisect_left(bounds, gap)] += 1
                    total += cur - prev
                h.sum += total / 1e9

    def observe_batch(self, client_id: str, payload: dict[str, Any], lines: list[str]) -> None:
        """Master: account a worker batch's record lines; remember its in-flight streams."""
        for line in lines:
            try:
                self.observe(RequestRecord.from_dict(json.loads(line)))
            except (ValueError, TypeError):
                continue
        if "inflight" in payload:
            self._inflight_workers[client_id] = 0 if payload.get("final") else int(payload.get("inflight") or 0)

    def inflight(self) -> int:
        if self.local_inflight is not None:
            return int(self.local_inflight())
        return sum(self._inflight_workers.values())

    # ------------------------------------------------------------- prometheus_client collector

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        with self._lock:
            hists = {k: (list(h.counts), h.sum) for k, h in self._hist.items()}
            reqs = dict(self._requests)
        for name in (TTFT, ITL, TPOT, E2E, TOKENS, LAG):
            labels = ["scenario", "endpoint"] + (["gen_ai_token_type"] if name == TOKENS else [])
            fam = HistogramMetricFamily(name, HELP[name], labels=labels)
            for (n, lv), (counts, total) in sorted(hists.items()):
                if n != name:
                    continue
                cum, buckets = 0, []
                for bound, c in zip([*BUCKETS[name], float("inf")], counts, strict=True):
                    cum += c
                    buckets.append((_le(bound), cum))
                fam.add_metric(list(lv), buckets, total)
            yield fam
        fam = CounterMetricFamily(REQUESTS.removesuffix("_total"), HELP[REQUESTS],
                                  labels=["scenario", "endpoint", "outcome"])
        for lv, n in sorted(reqs.items()):
            fam.add_metric(list(lv), n)
        yield fam
        yield GaugeMetricFamily(IN_FLIGHT, HELP[IN_FLIGHT], value=self.inflight())
        clocks = clock_sync.master_clocks()
        off = GaugeMetricFamily(CLOCK_OFFSET, HELP[CLOCK_OFFSET], labels=["worker"])
        unc = GaugeMetricFamily(CLOCK_UNCERTAINTY, HELP[CLOCK_UNCERTAINTY], labels=["worker"])
        for w in (clocks.workers.values() if clocks is not None else ()):
            est = w.estimate
            if est is not None:
                off.add_metric([w.node], int(est["offset_ns"]) / 1e9)
                unc.add_metric([w.node], int(est["uncertainty_ns"]) / 1e9)
        yield off
        yield unc


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


# ----------------------------------------------------------------------------------- entry points

def add_arguments(parser: Any) -> None:
    """Register ``--prometheus-port``, ``--prometheus-host`` and ``--no-traceparent``."""
    add = option_group(parser, "stream-harness observability",
                       "the load generator's own figures for Prometheus (harness.locust.prometheus_exporter) "
                       "and W3C trace context (harness.client.tracecontext)")
    add("--no-traceparent", action="store_true", default=False,
        help="send no W3C traceparent header (by default every request carries one derived from its request id)")
    add("--prometheus-port", type=int, default=0,
        help="serve the harness's live figures at http://HOST:PORT/metrics on the master or single process "
             "(0 = off)")
    add("--prometheus-host", default="127.0.0.1",
        help="address the exporter binds (0.0.0.0: all interfaces, for a Prometheus on another host)")


def register(environment: Any, ctx: Any) -> None:
    """Start the exporter on the master or a single process when ``--prometheus-port`` is set.

    A port that cannot be bound ends the process with one line (exit 2).
    """
    global _exporter
    opts = environment.parsed_options
    port = int(getattr(opts, "prometheus_port", 0) or 0)
    if not port or ctx.role == "worker":
        return
    host = getattr(opts, "prometheus_host", "127.0.0.1") or "127.0.0.1"
    from gevent.pywsgi import WSGIServer
    from prometheus_client import CollectorRegistry, make_wsgi_app

    exporter = Exporter()
    if ctx.role == "local":
        exporter.local_inflight = lambda: ctx.inflight
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    server = WSGIServer((host, port), make_wsgi_app(registry), log=None, error_log=None)
    try:
        server.start()
    except OSError as exc:
        sys.stderr.write(f"stream-harness: error: --prometheus-port: cannot listen on {host}:{port}: {exc}\n")
        raise SystemExit(2) from None
    _exporter = exporter
    logger.info("stream-harness: Prometheus metrics at http://%s:%d/metrics", host, port)


def observe(rec: RequestRecord) -> None:
    """Local process: account one processed record (no-op without an exporter)."""
    if _exporter is not None:
        _exporter.observe(rec)


def observe_batch(client_id: str, payload: dict[str, Any], lines: list[str]) -> None:
    """Master: account a merged worker batch (no-op without an exporter)."""
    if _exporter is not None:
        _exporter.observe_batch(client_id, payload, lines)
