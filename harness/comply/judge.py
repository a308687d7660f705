"""One run's verdict against a ruleset: VALID or INVALID, with every reason.

Per request (MLPerf's server scenario; latency counts from the *scheduled* send, ``intended_ns``):

- TTFT = ``token_ns[0] - intended_ns``; latency = ``end_ns - intended_ns`` (ms);
- TPOT = ``(latency - TTFT) / (output_tokens - 1)`` = ``(end_ns - token_ns[0]) / (output_tokens - 1)``
  (MLPerf's definition: unlike :func:`harness.metrics.tpot_ms` it runs to the end of the response);
  requests with fewer than two output tokens have no TPOT.

The judged queries are those scheduled in ``[t0, t_end]``: ``t0`` is the first scheduled send and
``t_end`` the later of ``t0 + min_duration_s`` and the scheduled send of the ``min_queries``-th query
(LoadGen keeps issuing until both minimums are met). A judged query that failed, was dropped or did not
finish is over both limits (its latency is infinite) and is itself a reason. Percentiles follow LoadGen:
``sorted(v)[floor(n * p / 100)]``. A run is VALID when every check passes: both percentiles within their
limits, the minimum duration (the last judged scheduled send at least ``min_duration_s`` after ``t0``),
the minimum query count, no failed query, and the early-stopping test
(:mod:`harness.comply.early_stopping`) for TTFT and for TPOT.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness import metrics as m
from harness.comply.early_stopping import early_stopping_passes
from harness.comply.rulesets import MLPERF_MIN_DURATION_S, MLPERF_MIN_QUERIES, Ruleset, packaged
from harness.records import RequestRecord

__all__ = ["Verdict", "judge", "loadgen_percentile", "marks", "mlperf_tpot_ms", "mlperf_ttft_ms", "shortened"]

INF = math.inf


def mlperf_ttft_ms(r: RequestRecord) -> float | None:
    """TTFT from the scheduled send, ms: ``(token_ns[0] - intended_ns) / 1e6`` (= :func:`harness.metrics.ttft_intended_ms`)."""
    return m.ttft_intended_ms(r)


def mlperf_tpot_ms(r: RequestRecord) -> float | None:
    """MLPerf TPOT, ms: ``(end_ns - token_ns[0]) / (output_tokens - 1) / 1e6``; None below two tokens."""
    n = m.output_tokens(r)
    if not r.token_ns or r.end_ns is None or n < 2:
        return None
    return (r.end_ns - r.token_ns[0]) / (n - 1) / m.NS_PER_MS


def scheduled_ns(r: RequestRecord) -> int | None:
    """The scheduled send: ``intended_ns``, else ``send_ns`` (records of streams cancelled at the end of a
    run may lack ``intended_ns``; their send is at or just after the schedule)."""
    return r.intended_ns if r.intended_ns is not None else r.send_ns


def loadgen_percentile(values: Sequence[float], p: float) -> float:
    """LoadGen's percentile: ``sorted(values)[floor(len * p / 100)]`` (no interpolation); NaN when empty."""
    if not values:
        return math.nan
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100.0))]


@dataclass
class Verdict:
    """The result of one run: ``valid`` and the ``reasons`` it is not; ``marks`` say why a VALID run is
    still not MLPerf-valid (shortened minimums); ``facts`` hold every figure behind the checks."""

    valid: bool
    reasons: list[str] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "VALID" if self.valid else "INVALID"

    def as_dict(self) -> dict:
        return {"verdict": self.label, "valid": self.valid, "reasons": self.reasons, "marks": self.marks,
                **self.facts}


def shortened(rules: Ruleset) -> bool:
    """True when the ruleset's minimums are below MLPerf's (600 s, 100 queries)."""
    return rules.min_duration_s < MLPERF_MIN_DURATION_S or rules.min_queries < MLPERF_MIN_QUERIES


def marks(rules: Ruleset) -> list[str]:
    """Why a run under ``rules`` cannot be MLPerf-valid even when VALID: shortened minimums, custom limits."""
    out = []
    if shortened(rules):
        out.append(f"not MLPerf-valid: shortened (min duration {rules.min_duration_s:g} s, min queries "
                   f"{rules.min_queries}; MLPerf: {MLPERF_MIN_DURATION_S:g} s, {MLPERF_MIN_QUERIES})")
    if rules.source not in {str(p) for p in packaged().values()}:
        out.append("not MLPerf-valid: custom ruleset (the limits are the user's, not MLPerf's)")
    return out


def judge(records: Sequence[RequestRecord], rules: Ruleset) -> Verdict:
    """The verdict of ``records`` (one open-loop run) against ``rules`` (see the module doc); a VALID
    result carries :func:`marks` when the minimums were shortened or the ruleset is custom."""
    sched = sorted((r for r in records if scheduled_ns(r) is not None), key=scheduled_ns)  # type: ignore[arg-type]
    if not sched:
        return Verdict(False, ["no scheduled requests in the run"], facts={"queries": 0})
    t0 = scheduled_ns(sched[0])
    t_end = t0 + int(rules.min_duration_s * m.NS_PER_S)
    if len(sched) >= rules.min_queries:
        t_end = max(t_end, scheduled_ns(sched[rules.min_queries - 1]))
    judged = [r for r in sched if scheduled_ns(r) <= t_end]
    n = len(judged)
    covered_s = (scheduled_ns(judged[-1]) - t0) / m.NS_PER_S
    ttft: list[float] = []
    tpot: list[float] = []
    failed: Counter[str] = Counter()
    for r in judged:
        if not r.ok:
            failed[r.outcome] += 1
            ttft.append(INF)
            tpot.append(INF)
            continue
        a, b = mlperf_ttft_ms(r), mlperf_tpot_ms(r)
        ttft.append(INF if a is None else a)
        if b is not None:
            tpot.append(b)
    p = rules.percentile
    facts: dict = {"queries": n, "duration_s": covered_s, "ruleset": rules.as_dict(), "shortened": shortened(rules)}
    reasons: list[str] = []
    if failed:
        reasons.append(f"{sum(failed.values())} of {n} queries did not complete: "
                       + ", ".join(f"{k} {v}" for k, v in sorted(failed.items())))
    if covered_s < rules.min_duration_s:
        reasons.append(f"min duration not met: queries scheduled over {covered_s:.1f} s < {rules.min_duration_s:g} s")
    if n < rules.min_queries:
        reasons.append(f"min query count not met: {n} < {rules.min_queries}")
    for name, values, limit in (("TTFT", ttft, rules.ttft_ms), ("TPOT", tpot, rules.tpot_ms)):
        pv = loadgen_percentile(values, p)
        over = sum(1 for v in values if v > limit)
        passed, needed = early_stopping_passes(n, over, p / 100.0, rules.confidence)
        key = name.lower()
        facts[key] = {"p": pv, "limit_ms": limit, "over_limit": over, "measured": len(values),
                      "early_stopping_needed": needed, "early_stopping_passed": passed,
                      "p50": loadgen_percentile(values, 50.0)}
        if not values:
            reasons.append(f"{name}: no request had a measurable {name}")
        elif pv > limit:
            reasons.append(f"{name} p{p:g} {pv:.1f} ms > limit {limit:g} ms")
        if not passed:
            reasons.append(f"early stopping ({name}): {over} of {n} queries over {limit:g} ms; "
                           f"needs at least {needed} queries ({needed - n} more, all within the limit)")
    return Verdict(not reasons, reasons, marks(rules), facts)
