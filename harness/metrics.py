"""The metric dictionary: one meaning per name, its formula and unit in the docstring.

Per-request metrics are functions of one :class:`~harness.records.RequestRecord`; run metrics are
functions of a sequence of records and a measurement window. Reports, gates, the Locust live view
and calibration all call these functions; nothing else defines a metric. :data:`METRICS` lists
them with their units for the reports' definitions appendix.

Conventions:
- A *token event* is an SSE event that carries generated text or a token. Keep-alive comments,
  role-only chunks and empty deltas are not token events (the clients never record them).
- Latency metrics are defined on ``ok`` requests only: failed requests never enter latency
  percentiles; they are counted (:func:`outcome_counts`) and shown beside them.
- Summary keys are ``<metric>_<stat>_<unit>``, e.g. ``ttft_p95_ms``; run metrics have their unit
  in the name, e.g. ``output_tokens_per_s``, ``overload_rate``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from harness.records import Outcome, RequestRecord

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

#: percentiles reported everywhere, and their key suffixes
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)
PERCENTILE_KEYS: dict[float, str] = {50.0: "p50", 90.0: "p90", 95.0: "p95", 99.0: "p99", 99.9: "p99_9"}


# --------------------------------------------------------------------------- per request


def ttft_ms(r: RequestRecord) -> float | None:
    """Time to first token, ms: ``(token_ns[0] - send_ns) / 1e6``.

    ``send_ns`` is the first attempt's send, so retries after a 429 are part of the user-perceived
    TTFT. None when the request produced no token event.
    """
    if not r.token_ns or r.send_ns is None:
        return None
    return (r.token_ns[0] - r.send_ns) / NS_PER_MS


def ttft_intended_ms(r: RequestRecord) -> float | None:
    """TTFT from the intended start (open loop), ms: ``(token_ns[0] - intended_ns) / 1e6``.

    Includes schedule lag, so a saturated client cannot hide queueing (coordinated omission).
    Equals :func:`ttft_ms` in closed loop, where intended_ns == send_ns.
    """
    start = r.intended_ns if r.intended_ns is not None else r.send_ns
    if not r.token_ns or start is None:
        return None
    return (r.token_ns[0] - start) / NS_PER_MS


def ttfb_ms(r: RequestRecord) -> float | None:
    """Time to first byte (stream setup), ms: ``(headers_ns - attempt_send_ns) / 1e6`` of the final attempt."""
    start = r.attempt_send_ns if r.attempt_send_ns is not None else r.send_ns
    if r.headers_ns is None or start is None:
        return None
    return (r.headers_ns - start) / NS_PER_MS


def itl_ms(r: RequestRecord) -> list[float]:
    """Inter-token latencies, ms: every gap ``token_ns[i] - token_ns[i-1]`` for i >= 1.

    As a run metric ITL is the distribution over *all gaps of all requests* (vLLM's meaning),
    not a mean per request; a request with n token events contributes n-1 gaps.
    """
    t = r.token_ns
    return [(t[i] - t[i - 1]) / NS_PER_MS for i in range(1, len(t))]


def itl_per_token_ms(r: RequestRecord) -> list[float]:
    """Per-token inter-token latency, ms: ``gap_i / tokens_per_event[i]`` for i >= 1.

    For servers that bundle several tokens into one event; equals :func:`itl_ms` when every event
    carries one token.
    """
    t, n = r.token_ns, r.tokens_per_event
    out = []
    for i in range(1, len(t)):
        k = n[i] if i < len(n) and n[i] > 0 else 1
        out.append((t[i] - t[i - 1]) / NS_PER_MS / k)
    return out


def output_tokens(r: RequestRecord) -> int:
    """Output tokens of a request: server-reported when known, else counted from events."""
    if r.output_tokens_server is not None:
        return r.output_tokens_server
    return r.output_tokens_events


def tpot_ms(r: RequestRecord) -> float | None:
    """Time per output token, ms: ``(token_ns[-1] - token_ns[0]) / (output_tokens - 1) / 1e6``.

    Per request; excludes TTFT. None with fewer than two output tokens.
    """
    n = output_tokens(r)
    if len(r.token_ns) < 1 or n < 2:
        return None
    return (r.token_ns[-1] - r.token_ns[0]) / (n - 1) / NS_PER_MS


def e2e_ms(r: RequestRecord) -> float | None:
    """End-to-end latency, ms: ``(end_ns - send_ns) / 1e6`` (first attempt's send)."""
    if r.end_ns is None or r.send_ns is None:
        return None
    return (r.end_ns - r.send_ns) / NS_PER_MS


def e2e_intended_ms(r: RequestRecord) -> float | None:
    """End-to-end latency from the intended start, ms: ``(end_ns - intended_ns) / 1e6``."""
    start = r.intended_ns if r.intended_ns is not None else r.send_ns
    if r.end_ns is None or start is None:
        return None
    return (r.end_ns - start) / NS_PER_MS


def schedule_lag_ms(r: RequestRecord) -> float | None:
    """Schedule lag, ms: ``(send_ns - intended_ns) / 1e6``; 0 in closed loop.

    Growing lag means the load generator could not keep its schedule (client saturated).
    """
    if r.send_ns is None or r.intended_ns is None:
        return None
    return (r.send_ns - r.intended_ns) / NS_PER_MS


# ----------------------------------------------------------- reasoning, tool calls, prefix cache (per request)


def ttft_answer_ms(r: RequestRecord) -> float | None:
    """Time to first answer token, ms: ``(first_answer_ns - send_ns) / 1e6``, the first content (answer)
    event, after any reasoning; what a user of a reasoning model waits for.

    Without separate channels (TGI, or a stream with neither reasoning nor tool-call events) every
    token is answer and it equals :func:`ttft_ms`. None when no answer token arrived (only reasoning or
    tool calls).
    """
    if r.send_ns is None:
        return None
    first = r.first_answer_ns
    if first is None:
        if not r.token_ns or r.reasoning_events or r.first_tool_call_ns is not None:
            return None
        first = r.token_ns[0]
    return (first - r.send_ns) / NS_PER_MS


def ttft_reasoning_ms(r: RequestRecord) -> float | None:
    """Time to first reasoning token, ms: ``(first_reasoning_ns - send_ns) / 1e6``; None without reasoning."""
    if r.first_reasoning_ns is None or r.send_ns is None:
        return None
    return (r.first_reasoning_ns - r.send_ns) / NS_PER_MS


def reasoning_tokens(r: RequestRecord) -> int | None:
    """Reasoning tokens of a reasoning request, tokens: the tokens of its reasoning deltas (client count).
    None for a request without reasoning events (the run share :func:`reasoning_token_share` counts all)."""
    return r.reasoning_tokens if r.reasoning_events else None


def answer_tokens(r: RequestRecord) -> int | None:
    """Answer tokens of a reasoning or tool-calling request, tokens:
    ``output_tokens_events - reasoning_tokens - tool_call_tokens`` (client counts). None for a request
    with neither (all its tokens are answer: ``output_tokens``)."""
    if not r.reasoning_events and r.first_tool_call_ns is None:
        return None
    return r.output_tokens_events - r.reasoning_tokens - r.tool_call_tokens


def reasoning_share(r: RequestRecord) -> float | None:
    """Reasoning share of a reasoning request, fraction: ``reasoning_tokens / output_tokens_events``; None
    for a request without reasoning events."""
    return r.reasoning_tokens / r.output_tokens_events if r.reasoning_events and r.output_tokens_events else None


def ttft_tool_call_ms(r: RequestRecord) -> float | None:
    """Time to first tool-call delta, ms: ``(first_tool_call_ns - send_ns) / 1e6``, the first event carrying
    a ``delta.tool_calls`` entry (usually the function name); None without tool calls."""
    if r.first_tool_call_ns is None or r.send_ns is None:
        return None
    return (r.first_tool_call_ns - r.send_ns) / NS_PER_MS


def tool_call_ms(r: RequestRecord) -> float | None:
    """Tool-call completion, ms: ``(tool_call_end_ns - send_ns) / 1e6``; ``tool_call_end_ns`` is the event with
    ``finish_reason: tool_calls`` (when the caller may run the tools), else the last tool-call delta.
    None without tool calls."""
    if r.tool_call_end_ns is None or r.send_ns is None:
        return None
    return (r.tool_call_end_ns - r.send_ns) / NS_PER_MS


def input_tokens(r: RequestRecord) -> int | None:
    """Input tokens of a request: server-reported when known, else the client's count."""
    return r.input_tokens_server if r.input_tokens_server is not None else r.input_tokens_client


def cached_tokens(r: RequestRecord) -> int | None:
    """Cached input tokens of a request, tokens: the server's ``usage.prompt_tokens_details.cached_tokens``
    (prompt tokens found in its prefix cache); None when the server did not report it."""
    return r.cached_input_tokens


def cached_share(r: RequestRecord) -> float | None:
    """Cached share of a request's input, fraction: ``cached_tokens / input_tokens`` (input: server count,
    else client); None when either is unknown or the input is empty."""
    n = input_tokens(r)
    if r.cached_input_tokens is None or not n:
        return None
    return r.cached_input_tokens / n


#: finish reasons meaning "the model emitted its end-of-sequence token" (``tool_calls``: its end of the
#: calls; OpenAI routes send it on an empty delta, as for ``stop``)
EOS_FINISH_REASONS = frozenset({"eos_token", "stop", "tool_calls"})


def token_mismatch(r: RequestRecord) -> bool | None:
    """True when the server-reported output token count differs from the client's count.

    Client count = retokenized count when the client retokenized, else the tokens carried by
    token events. A stream that ended on EOS (finish_reason ``eos_token`` or ``stop``) may count
    the EOS token on the server without a visible event (OpenAI routes send it as an empty delta,
    which is not a token event), so ``server == client + 1`` is no mismatch then. None when the
    server reported no count (nothing to compare).
    """
    if r.output_tokens_server is None:
        return None
    client = r.output_tokens_retokenized if r.output_tokens_retokenized is not None else r.output_tokens_events
    if r.finish_reason in EOS_FINISH_REASONS and r.output_tokens_server == client + 1:
        return False
    return client != r.output_tokens_server


# --------------------------------------------------------------------------- run level


def measurement_window_s(records: Sequence[RequestRecord]) -> float:
    """Measurement window, s: last ``end_ns`` minus first ``send_ns`` over all records (0 if empty)."""
    starts = [r.send_ns for r in records if r.send_ns is not None]
    ends = [r.end_ns for r in records if r.end_ns is not None]
    if not starts or not ends:
        return 0.0
    return max(0.0, (max(ends) - min(starts)) / NS_PER_S)


def output_tokens_per_s(records: Sequence[RequestRecord], window_s: float) -> float:
    """Output token throughput, tokens/s: ``sum(output_tokens of ok requests) / window_s``."""
    if window_s <= 0:
        return 0.0
    return sum(output_tokens(r) for r in records if r.ok) / window_s


def request_throughput(records: Sequence[RequestRecord], window_s: float) -> float:
    """Request throughput, requests/s: ``count(ok requests) / window_s``."""
    if window_s <= 0:
        return 0.0
    return sum(1 for r in records if r.ok) / window_s


@dataclass(frozen=True, slots=True)
class Slo:
    """Per-request service-level objectives, ms; None means "no bound"."""

    ttft_ms: float | None = None
    itl_ms: float | None = None  #: bound on the request's largest gap
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def met_by(self, r: RequestRecord) -> bool:
        """True when ``r`` is ok and meets every bound that is set."""
        if not r.ok:
            return False
        checks: list[tuple[float | None, float | None]] = [
            (self.ttft_ms, ttft_ms(r)),
            (self.itl_ms, max(itl_ms(r), default=0.0)),
            (self.tpot_ms, tpot_ms(r)),
            (self.e2e_ms, e2e_ms(r)),
        ]
        return all(bound is None or (value is not None and value <= bound) for bound, value in checks)


def goodput(records: Sequence[RequestRecord], window_s: float, slo: Slo) -> float:
    """Goodput, requests/s: ``count(ok requests meeting every SLO) / window_s``."""
    if window_s <= 0:
        return 0.0
    return sum(1 for r in records if slo.met_by(r)) / window_s


def attempted(records: Sequence[RequestRecord]) -> int:
    """Attempted requests: every record except open-loop drops (never sent)."""
    return sum(1 for r in records if r.outcome != Outcome.DROPPED)


def overload_rate(records: Sequence[RequestRecord]) -> float:
    """Overload rate, fraction: ``overloaded / attempted``.

    Overloaded = HTTP 429, or an SSE error event with error_type "overloaded" (TGI stream routes
    answer 200 and then the error event).
    """
    n = attempted(records)
    return sum(1 for r in records if r.outcome == Outcome.OVERLOADED) / n if n else 0.0


def outcome_counts(records: Iterable[RequestRecord]) -> dict[str, int]:
    """Requests per outcome class (every class present, zeros included)."""
    c = Counter(r.outcome for r in records)
    return {o.value: c.get(o.value, 0) for o in Outcome}


def error_rate_by_class(records: Sequence[RequestRecord]) -> dict[str, float]:
    """Error rate per failure class, fraction: ``count(outcome == class) / attempted``.

    Covers every class except ok and dropped (drops are not attempts; see :func:`drop_count`).
    """
    n = attempted(records)
    counts = outcome_counts(records)
    return {k: (v / n if n else 0.0) for k, v in counts.items() if k not in (Outcome.OK, Outcome.DROPPED)}


def drop_count(records: Iterable[RequestRecord]) -> int:
    """Drops: open-loop arrivals the generator could not send because the client was saturated."""
    return sum(1 for r in records if r.outcome == Outcome.DROPPED)


def token_mismatch_rate(records: Sequence[RequestRecord]) -> float:
    """Token mismatch rate, fraction: ok requests with :func:`token_mismatch` / ok requests that can be compared."""
    flags = [m for r in records if r.ok and (m := token_mismatch(r)) is not None]
    return sum(flags) / len(flags) if flags else 0.0


def request_count(records: Sequence[RequestRecord]) -> int:
    """Requests, count: every record of the window (drops included)."""
    return len(records)


def ok_count(records: Sequence[RequestRecord]) -> int:
    """Ok requests, count: records whose outcome is ``ok``."""
    return sum(1 for r in records if r.ok)


#: outcomes the failure rule does not judge: never sent (dropped) or stopped by the harness (cancelled)
NOT_JUDGED = frozenset({Outcome.DROPPED.value, Outcome.CANCELLED.value})


def failed_share(records: Sequence[RequestRecord]) -> float:
    """Failed share, fraction: ``(judged - ok) / judged``, judged = records except dropped and cancelled
    (the failure rule of :mod:`harness.analysis.failures`); 0 when nothing was judged."""
    judged = [r for r in records if r.outcome not in NOT_JUDGED]
    return (len(judged) - sum(1 for r in judged if r.ok)) / len(judged) if judged else 0.0


def done_missing_count(records: Sequence[RequestRecord]) -> int:
    """Streams without [DONE], count: ok OpenAI streams that ended after their finish_reason without ``[DONE]``."""
    return sum(1 for r in records if r.ok and getattr(r, "done_missing", False))


def reasoning_token_share(records: Sequence[RequestRecord]) -> float:
    """Reasoning token share, fraction: ``sum(reasoning_tokens) / sum(output_tokens_events)`` over ok
    requests (client counts); 0 without tokens."""
    ok = [r for r in records if r.ok]
    total = sum(r.output_tokens_events for r in ok)
    return sum(r.reasoning_tokens for r in ok) / total if total else 0.0


def _with_cache_report(records: Sequence[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if r.ok and r.cached_input_tokens is not None]


def cached_token_share(records: Sequence[RequestRecord]) -> float:
    """Cached input share, fraction: ``sum(cached_tokens) / sum(input_tokens)`` over ok requests whose server
    reported ``cached_tokens``; 0 when none did."""
    rep = _with_cache_report(records)
    total = sum(input_tokens(r) or 0 for r in rep)
    return sum(r.cached_input_tokens or 0 for r in rep) / total if total else 0.0


def prefix_cache_hit_rate(records: Sequence[RequestRecord]) -> float:
    """Prefix-cache hit rate, fraction: ok requests with ``cached_tokens > 0`` / ok requests whose server
    reported ``cached_tokens``; 0 when none did."""
    rep = _with_cache_report(records)
    return sum(1 for r in rep if r.cached_input_tokens) / len(rep) if rep else 0.0


def tool_call_requests(records: Sequence[RequestRecord]) -> int:
    """Requests with tool calls, count: ok requests with at least one ``delta.tool_calls`` event."""
    return sum(1 for r in records if r.ok and r.first_tool_call_ns is not None)


# --------------------------------------------------------------------------- percentiles


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Exact percentile by linear interpolation between closest ranks (numpy's default).

    ``rank = p/100 * (n - 1)``; result = ``v[floor] + (v[ceil] - v[floor]) * frac(rank)``.
    ``sorted_values`` must be sorted ascending and non-empty.
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of an empty sequence")
    rank = p / 100.0 * (n - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


def distribution(values: Iterable[float]) -> dict[str, float | int]:
    """count, mean, min, max and every percentile of :data:`PERCENTILES` (exact) of ``values``."""
    v = sorted(values)
    if not v:
        return {"count": 0}
    out: dict[str, float | int] = {"count": len(v), "mean": sum(v) / len(v), "min": v[0], "max": v[-1]}
    for p in PERCENTILES:
        out[PERCENTILE_KEYS[p]] = percentile(v, p)
    return out


# --------------------------------------------------------------------------- live histograms


class HdrAccumulator:
    """A latency histogram in microseconds (1 us .. 1 h, 3 significant digits) that merges across processes.

    Used for the live and distributed views (Locust workers ship :meth:`encode` deltas, the master
    :meth:`merge_encoded` them). Reports use exact percentiles from records instead.
    """

    LOWEST_US = 1
    HIGHEST_US = 3_600_000_000
    SIG_DIGITS = 3

    def __init__(self) -> None:
        from hdrh.histogram import HdrHistogram

        self._cls = HdrHistogram
        self.h = HdrHistogram(self.LOWEST_US, self.HIGHEST_US, self.SIG_DIGITS)

    def record_ms(self, value_ms: float) -> None:
        """Record one value given in ms (clamped into the histogram's range)."""
        us = int(value_ms * 1000.0 + 0.5)
        self.h.record_value(min(max(us, self.LOWEST_US), self.HIGHEST_US))

    @property
    def count(self) -> int:
        return self.h.get_total_count()

    def percentile_ms(self, p: float) -> float:
        """Value at percentile ``p`` (0-100), ms, to 3 significant digits; 0.0 when empty."""
        return self.h.get_value_at_percentile(p) / 1000.0 if self.count else 0.0

    def summary_ms(self) -> dict[str, float | int]:
        """count, mean, min, max and :data:`PERCENTILES`, ms."""
        if not self.count:
            return {"count": 0}
        out: dict[str, float | int] = {
            "count": self.count,
            "mean": self.h.get_mean_value() / 1000.0,
            "min": self.h.get_min_value() / 1000.0,
            "max": self.h.get_max_value() / 1000.0,
        }
        for p in PERCENTILES:
            out[PERCENTILE_KEYS[p]] = self.percentile_ms(p)
        return out

    def encode(self) -> str:
        """Compressed, base64 text form (msgpack/JSON safe)."""
        raw = self.h.encode()
        return raw.decode("ascii") if isinstance(raw, bytes) else str(raw)

    def merge_encoded(self, encoded: str) -> None:
        """Add a histogram produced by :meth:`encode` (possibly in another process)."""
        if encoded:
            self.h.decode_and_add(encoded)

    def merge(self, other: HdrAccumulator) -> None:
        self.h.add(other.h)

    def reset(self) -> None:
        self.h.reset()


# --------------------------------------------------------------------------- the dictionary


#: ``summary(records, window_s, met)``: a run metric's summary value from the window's records, the
#: window in s and the records meeting the SLO (None when no SLO was given)
SummaryFn = Callable[[Sequence[RequestRecord], float, "Sequence[RequestRecord] | None"], "float | int | None"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One entry of the dictionary: name, unit, scope and the function that defines it.

    Run metrics (scope ``run``) also say how they are shown and judged, so the summary, summary.md,
    the report's headline cards, the gate's keys and directions and ``--fail-on`` all follow from this
    one declaration: ``label`` (summary.md and console), ``better`` (``"higher"`` | ``"lower"`` | None:
    the bad direction of a regression), ``card`` (caption of a headline card in report.html, None = no
    card), ``show`` (summary.md row: ``"always"`` | ``"nonzero"`` | ``"never"``) and ``summary``
    (:data:`SummaryFn`; default: ``fn(records)``).
    """

    name: str
    unit: str
    scope: str  #: "request" (one value per ok request), "gap" (many per request), "run"
    fn: Callable[..., object]
    label: str = ""
    better: str | None = None
    card: str | None = None
    show: str = "always"
    summary: SummaryFn | None = None

    @property
    def definition(self) -> str:
        """The function's docstring: the formula and unit, shown in reports' appendix."""
        return " ".join((self.fn.__doc__ or "").split())

    @property
    def higher_is_better(self) -> bool:
        return self.better == "higher"

    def summary_value(self, records: Sequence[RequestRecord], window_s: float,
                      met: Sequence[RequestRecord] | None) -> float | int | None:
        """This run metric over the window's records (see :data:`SummaryFn`)."""
        if self.summary is not None:
            return self.summary(records, window_s, met)
        return self.fn(records)  # type: ignore[return-value]


METRICS: dict[str, MetricDef] = {}


def register_metric(d: MetricDef) -> MetricDef:
    """Add ``d`` to :data:`METRICS` (the public extension point); ValueError on a taken name or bad field."""
    if d.name in METRICS:
        raise ValueError(f"metric {d.name!r} is already defined")
    if d.scope not in ("request", "gap", "run") or d.better not in (None, "higher", "lower") \
            or d.show not in ("always", "nonzero", "never"):
        raise ValueError(f"metric {d.name!r}: bad scope, better or show")
    METRICS[d.name] = d
    return d


def run_metrics() -> list[MetricDef]:
    """The run-scope entries of :data:`METRICS`, in declaration order."""
    return [d for d in METRICS.values() if d.scope == "run"]


for _d in (
    MetricDef("ttft", "ms", "request", ttft_ms),
    MetricDef("ttft_intended", "ms", "request", ttft_intended_ms),
    MetricDef("ttfb", "ms", "request", ttfb_ms),
    MetricDef("itl", "ms", "gap", itl_ms),
    MetricDef("itl_per_token", "ms", "gap", itl_per_token_ms),
    MetricDef("tpot", "ms", "request", tpot_ms),
    MetricDef("e2e", "ms", "request", e2e_ms),
    MetricDef("e2e_intended", "ms", "request", e2e_intended_ms),
    MetricDef("schedule_lag", "ms", "request", schedule_lag_ms),
    MetricDef("ttft_answer", "ms", "request", ttft_answer_ms, show="nonzero"),
    MetricDef("ttft_reasoning", "ms", "request", ttft_reasoning_ms, show="nonzero"),
    MetricDef("reasoning_tokens", "tokens", "request", reasoning_tokens, show="nonzero"),
    MetricDef("answer_tokens", "tokens", "request", answer_tokens, show="nonzero"),
    MetricDef("reasoning_share", "fraction", "request", reasoning_share, show="nonzero"),
    MetricDef("ttft_tool_call", "ms", "request", ttft_tool_call_ms, show="nonzero"),
    MetricDef("tool_call", "ms", "request", tool_call_ms, show="nonzero"),
    MetricDef("cached_tokens", "tokens", "request", cached_tokens, show="nonzero"),
    MetricDef("cached_share", "fraction", "request", cached_share, show="nonzero"),
    MetricDef("request_throughput", "requests/s", "run", request_throughput, better="higher", card="requests/s (ok)",
              summary=lambda recs, w, met: request_throughput(recs, w)),
    MetricDef("output_tokens_per_s", "tokens/s", "run", output_tokens_per_s, better="higher",
              card="output tokens/s", summary=lambda recs, w, met: output_tokens_per_s(recs, w)),
    # met requests are ok and met every bound, so goodput over them with an empty Slo counts them
    MetricDef("goodput", "requests/s", "run", goodput, better="higher", card="goodput (req/s within SLO)",
              summary=lambda recs, w, met: None if met is None else goodput(met, w, Slo())),
    MetricDef("overload_rate", "fraction", "run", overload_rate, better="lower", card="overload rate"),
    MetricDef("error_rate", "fraction", "run", error_rate_by_class, better="lower", card="error rate",
              summary=lambda recs, w, met: sum(error_rate_by_class(recs).values())),
    MetricDef("drops", "requests", "run", drop_count, better="lower", card="drops"),
    MetricDef("token_mismatch_rate", "fraction", "run", token_mismatch_rate, better="lower"),
    MetricDef("failed_share", "fraction", "run", failed_share, better="lower"),
    MetricDef("measurement_window_s", "s", "run", measurement_window_s),
    MetricDef("requests", "requests", "run", request_count, show="never"),
    MetricDef("attempted", "requests", "run", attempted, show="never"),
    MetricDef("ok", "requests", "run", ok_count, better="higher", show="never"),
    MetricDef("done_missing", "requests", "run", done_missing_count, label="streams without [DONE]", show="nonzero"),
    MetricDef("reasoning_token_share", "fraction", "run", reasoning_token_share, label="reasoning token share",
              show="nonzero"),
    MetricDef("cached_token_share", "fraction", "run", cached_token_share, label="cached input share",
              better="higher", show="nonzero"),
    MetricDef("prefix_cache_hit_rate", "fraction", "run", prefix_cache_hit_rate, label="prefix-cache hit rate",
              better="higher", show="nonzero"),
    MetricDef("tool_call_requests", "requests", "run", tool_call_requests, label="requests with tool calls",
              show="nonzero"),
):
    register_metric(_d)
