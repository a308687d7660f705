"""End of a run (local process or master): summary, step table, --fail-on verdicts, run.json, exit code.

Exit codes (set as Locust's ``process_exit_code``, so Locust's "any failure -> 1" rule does not
apply to overloads a scenario expects):
- 0: no failure other than overloaded, cancelled (end of run) or dropped requests;
- 1: other failures (timeouts, connect/HTTP/validation/generation errors, incomplete streams) or
  exceptions in user code;
- 3: a ``--fail-on`` rule holds (checked after the interruption);
- 130: the run was interrupted (Ctrl-C or SIGTERM before its end; run.json ``interrupted: true``,
  ``complete: false``), checked first: its numbers cover only part of the run.

``--fail-on`` rules are failure conditions (``ttft_p95_ms>500`` fails the run when the p95 TTFT is
above 500 ms), evaluated with harness.analysis.rules (the gate's rule language) over the run's summary (harness.analysis.summary); a
rule whose metric has no value in the run (e.g. no ok request) counts as triggered.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import locust

from harness.analysis.calibration_limit import check_run
from harness.analysis.clocks import console_lines as clock_lines
from harness.analysis.rules import evaluate_rules, parse_rule
from harness.analysis.summary import summarize, write_summary
from harness.locust.run import RunContext
from harness.metrics import Slo, attempted, outcome_counts, overload_rate
from harness.records import Outcome, iter_records, write_run_meta

logger = logging.getLogger("harness.locust")

EXIT_OK, EXIT_ERRORS, EXIT_FAIL_ON, EXIT_INTERRUPTED = 0, 1, 3, 130
TOLERATED = frozenset({Outcome.OK, Outcome.OVERLOADED, Outcome.CANCELLED, Outcome.DROPPED})


def step_table(records: list, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per step load window: attempted, overloaded and overload rate of requests sent in it.

    A request belongs to the step whose ``[start_ns, end_ns)`` holds its ``send_ns`` (monotonic,
    valid for workers on the master's host); attempted and overload_rate are the dictionary's
    (:func:`harness.metrics.attempted`, :func:`harness.metrics.overload_rate`) over those requests.
    """
    out = []
    for s in steps:
        lo, hi = s["start_ns"], s.get("end_ns") or time.monotonic_ns()
        sent = [r for r in records if r.send_ns is not None and lo <= r.send_ns < hi]
        counts = outcome_counts(sent)
        out.append({"users": s["users"], "duration_s": round((hi - lo) / 1e9, 3), "attempted": attempted(sent),
                    "overloaded": counts[Outcome.OVERLOADED.value], "overload_rate": round(overload_rate(sent), 4)})
    return out


def triggered(verdict: Any) -> bool:
    """A --fail-on rule fires when its condition holds, or when its metric has no value."""
    return bool(verdict.passed or verdict.value is None)


def exit_code(outcomes: dict[str, int], exceptions: int, verdicts: list, interrupted: bool = False) -> int:
    """The process exit code from the interruption, --fail-on verdicts, outcome counts and user-code
    exceptions (module doc)."""
    if interrupted:
        return EXIT_INTERRUPTED
    if any(triggered(v) for v in verdicts):
        return EXIT_FAIL_ON
    if exceptions or any(n for k, n in outcomes.items() if k not in TOLERATED):
        return EXIT_ERRORS
    return EXIT_OK


def finalize(ctx: RunContext, complete: bool = True, interrupted: bool = False) -> int:
    """Close the sink, summarise the records, write summary.json/md and run.json; returns the exit code.

    Call it after the last record (the users stopped): records that end later are appended to
    records.jsonl with a warning and are missing from run.json's ``records`` count.
    """
    ctx.finalized = True
    ctx.active = False
    ctx.close_sink()
    run_dir = ctx.run_dir
    assert run_dir is not None
    records = list(iter_records(run_dir)) if (run_dir / "records.jsonl").exists() else []
    o = ctx.opts
    slo = Slo(ttft_ms=o.slo_ttft_ms or None, itl_ms=o.slo_itl_ms or None) if (o.slo_ttft_ms or o.slo_itl_ms) else None
    summary = summarize(records, slo=slo)
    summary["run"] = {"complete": complete, "interrupted": interrupted}  # summary.md's state line
    if ctx.meta.get("clock_sync"):  # distributed: how well the workers' clocks were aligned
        summary["clock_sync"] = ctx.meta["clock_sync"]
    write_summary(summary, run_dir, title=f"Run summary: {ctx.scenario}")
    verdicts = evaluate_rules([parse_rule(r) for r in o.fail_on], summary) if o.fail_on else []
    outcomes = dict(summary.get("outcomes") or {})
    drops = outcomes.get(Outcome.DROPPED.value, 0)
    if drops:
        ctx.note_client_bound([f"{drops} open-loop arrivals dropped (client saturated, --max-inflight)"])
    ctx.note_client_bound(check_run(records))  # load per worker above the `harness calibrate` limit
    runner = ctx.env.runner
    exceptions = len(getattr(runner, "exceptions", {}) or {})
    code = exit_code(outcomes, exceptions, verdicts, interrupted)
    shape_steps = getattr(ctx.env.shape_class, "steps", None) or []
    steps = step_table(records, shape_steps) if shape_steps else []
    meta = {
        "run_id": ctx.run_id, "scenario": ctx.scenario, "host": ctx.env.host,
        "user_classes": sorted(c.__name__ for c in ctx.env.user_classes or []),
        "users": dict(getattr(runner, "final_user_classes_count", {}) or {}),
        "options": o.as_dict(), "locust_version": locust.__version__, "role": ctx.role,
        "records": len(records), "complete": complete, "interrupted": interrupted,
        "client_bound": bool(ctx.client_bound_reasons), "client_bound_reasons": ctx.client_bound_reasons,
        "steps": steps, "fail_on": [_verdict(v) for v in verdicts], "exit_code": code,
        "ended_wall_ns": time.time_ns(),
    }
    meta.update(ctx.meta)
    write_run_meta(run_dir, **meta)
    _log(ctx, summary, steps, verdicts, code, interrupted)
    return code


def _verdict(v: Any) -> dict[str, Any]:
    return {"rule": v.name, "triggered": triggered(v), "value": v.value, "detail": v.detail}


def _log(ctx: RunContext, summary: dict, steps: list, verdicts: list, code: int, interrupted: bool = False) -> None:
    """The end-of-run console block; when the run was interrupted or failures dominate, its first lines
    say so (and it is a warning)."""
    failures = summary.get("failures") or {}
    head = failures.get("headline")
    lines = [f"stream-harness: {head}"] if head else []
    if interrupted:
        lines.insert(0, "stream-harness: INTERRUPTED before the end of the run: the numbers below cover only "
                        "the part that ran (run.json: complete false, interrupted true)")
        head = head or lines[0]
    lines.append(f"stream-harness run {ctx.run_id} ({ctx.scenario}): {summary.get('outcomes', {}).get('ok', 0)} ok "
                 f"of {sum((summary.get('outcomes') or {}).values())} records -> {ctx.run_dir}")
    lines.append(f"  {'metric':<8} {'count':>7} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}  (ms)")
    for name in ("ttft", "itl", "tpot", "e2e"):
        g = lambda stat, n=name: summary.get(f"{n}_{stat}_ms")  # noqa: E731
        if summary.get(f"{name}_count"):
            lines.append(f"  {name.upper():<8} {summary.get(f'{name}_count'):>7} {_f(g('p50'))} {_f(g('p90'))} "
                         f"{_f(g('p99'))} {_f(g('max'))}")
    lines.append(f"  overload rate {summary.get('overload_rate', 0.0):.4f}, outcomes "
                 + ", ".join(f"{k}={v}" for k, v in (summary.get("outcomes") or {}).items() if v))
    for c in failures.get("top") or []:
        lines.append(f"  {c['count']:>7} x {c['key']}")
    if summary.get("done_missing"):
        lines.append(f"  streams without [DONE]: {summary['done_missing']}")
    for s in steps:
        lines.append(f"  step {s['users']:>4} users: {s['attempted']} attempted, overload rate {s['overload_rate']:.4f}")
    for v in verdicts:
        lines.append(f"  --fail-on {v.name}: {'TRIGGERED' if triggered(v) else 'not triggered'} "
                     f"(value {number(v.value)})")
    if ctx.client_bound_reasons:
        lines.append("  WARNING client bound, timings not trustworthy: " + "; ".join(ctx.client_bound_reasons))
    lines += clock_lines(ctx.meta.get("clock_sync"))
    lines.append(f"  exit code {code}")
    logger.log(logging.WARNING if head else logging.INFO, "\n".join(lines))


def number(v: Any) -> str:
    """A rule's value for people: 4 significant digits (``25.05``, ``0.0123``, ``1.235e+04``); '-' when None."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "-" if v is None else str(v)
    return f"{v:.4g}"


def _f(v: Any) -> str:
    return f"{v:>9.2f}" if isinstance(v, int | float) else f"{'-':>9}"

