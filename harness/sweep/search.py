"""`harness sweep --search users|rate`: per cap, the highest offered load within the SLO by bracketing and
bisection, each probe judged with bootstrap intervals (:mod:`harness.analysis.boundary`).

Per cap (ascending), with ``S`` = ``--search-start``, ``M`` = ``--search-max``:

1. *Bracket*: probe ``S, 2S, 4S, ...`` (the last one ``M``) until a probe fails; the last passing load
   is ``lo``, the failing one ``hi``. ``S`` failing: the cap sustains nothing from ``S`` on. ``M``
   passing: the boundary is at least ``M`` (beyond the search).
2. *Bisect*: probe the middle of ``(lo, hi)`` (users: ``(lo + hi) // 2``; rate: the arithmetic middle
   to 3 significant digits) and move ``lo`` or ``hi`` to it, until ``hi - lo <= --search-resolution``
   (users: absolute, default 1 user; rate: relative to ``lo``, default 0.1 = 10 %).
3. The boundary is ``lo``; the true limit lies in ``[lo, hi)``, the boundary interval reported with it.

Each probe is one sweep point (:func:`harness.sweep.points.run_point`: the same headless Locust run,
steady window and summary as a grid point, in ``OUT/cap-<cap>/<axis>-<load>/``). Its verdict:

- the failure rule first (:func:`harness.analysis.capacity.check_point` with no SLO terms): an
  *inconclusive* point (failures other than overload dominate) stops the cap's search; the boundary
  found so far stands and the result says the search is inconclusive above it;
- other checks without an interval (error rate above ``--max-error-rate``, no ok request) fail it;
- every SLO term (e.g. ``ttft_p95=500``) is judged by its bootstrap interval over the steady window's
  requests (:func:`harness.analysis.boundary.judge`): pass / fail / close;
- a close probe is run once more (into ``OUT/repeats/...``), both runs' values are pooled and judged
  again; still close, the pooled estimate decides and the probe says ``decided by estimate``.

Cliffs (:func:`harness.analysis.boundary.find_cliffs`): neighbouring probes one step apart whose SLO
statistic grows by more than ``--search-cliff`` times. Without ``--slo`` the probes are judged by the
error rate alone and cliffs are looked for in TTFT p95.

Completed probes are reused on a rerun (``point.json``), so an interrupted search resumes along the
same path; ``--out`` carries the sweep's settings fingerprint (:mod:`harness.sweep.plan`), so a rerun
with other settings refuses instead of reusing them (``--restart`` discards them, repeats included). ``OUT/search.json`` holds every cap's probes, boundary, interval and cliffs; sweep.json and
sweep.html hold the probes as points, with a "Search" section and the search's capacity table.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harness.analysis import boundary as bd
from harness.analysis.capacity import (
    DEFAULT_MIN_REQUESTS,
    DEFAULT_MIN_WINDOW_S,
    EXTENDABLE,
    CapCapacity,
    check_point,
)
from harness.analysis.frame import GAP_METRICS, load_frame
from harness.analysis.summary import parse_slo, slo_spec, split_key, window_mask
from harness.analysis.sweep_report import SweepPlan, load_text, write_sweep_outputs
from harness.scenarios import scenario_path
from harness.sweep.plan import SettingsMismatch, make_plan
from harness.sweep.points import CapTarget, completed_point, run_point
from harness.usage import CliError

SEARCH_FILE = "search.json"
#: default start, maximum and resolution per axis
DEFAULTS = {"users": {"start": 1.0, "max": 256.0, "resolution": 1.0},
            "rate": {"start": 1.0, "max": 1024.0, "resolution": 0.1}}
#: the statistic cliffs are looked for in when no SLO is given
NO_SLO_CLIFF_KEY = "ttft_p95_ms"
#: ``decided_by`` of a probe whose runs hold too little data for a verdict (repeated once)
TOO_LITTLE = "too little data"


@dataclass
class SearchOptions:
    """The search's settings (``--search*``; the module docstring gives their meaning)."""

    axis: str  #: "users" (closed loop) or "rate" (open loop)
    start: float
    max_load: float
    resolution: float  #: users: absolute step; rate: fraction of the lower load
    cliff_factor: float = bd.CLIFF_FACTOR
    confidence: float = bd.CONFIDENCE
    resamples: int = bd.RESAMPLES

    @property
    def relative(self) -> bool:
        return self.axis == "rate"

    def done(self, lo: float, hi: float) -> bool:
        """Is ``[lo, hi)`` narrow enough?"""
        return hi - lo <= self.resolution * (lo if self.relative else 1.0) * (1 + 1e-9)

    def middle(self, lo: float, hi: float) -> float:
        """The next load to probe in ``(lo, hi)``: users ``(lo + hi) // 2``; rate the middle to 3 significant digits."""
        if not self.relative:
            return float((int(lo) + int(hi)) // 2)
        mid = (lo + hi) / 2.0
        digits = 3 - int(math.floor(math.log10(mid))) - 1
        return round(mid, digits)

    def unit(self) -> str:
        return "users" if self.axis == "users" else "req/s"


@dataclass
class Probe:
    """One judged load: ``verdict`` pass / fail / inconclusive; ``terms``: per SLO term its interval,
    bound and verdict (of the last judgement); ``decided_by``: interval, estimate, checks or failure rule."""

    load: float
    verdict: str
    decided_by: str
    repeated: bool = False
    terms: dict[str, dict] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)
    first_verdict: str | None = None  #: the first run's verdict when the probe was repeated
    wall_s: float = 0.0

    def line(self, axis: str) -> str:
        """``8 users: pass (ttft_p95_ms 312.0 [290.1, 340.2] <= 500; decided by interval)``."""
        parts = [f"{k} {bd.interval_text(t)} {'<=' if t['verdict'] == bd.PASS else '>' if t['verdict'] == bd.FAIL else '~'} "
                 f"{t['bound_ms']:g}" for k, t in self.terms.items()]
        parts += self.failures
        how = self.decided_by + (f"; repeated: first run {self.first_verdict}" if self.repeated else "")
        return f"{load_text(self.load, axis)}: {self.verdict} ({'; '.join(parts) or 'no SLO terms'}; decided by {how})"


@dataclass
class CapSearch:
    """One cap's search: the boundary (last passing load, None: none passed) and ``[low, high)``."""

    cap: int | None
    boundary: float | None
    interval: tuple[float | None, float | None]
    limiting: str
    inconclusive: bool
    probes: list[Probe]
    cliffs: list[dict]
    wall_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def search_cap(probe: Callable[[float], Probe], opts: SearchOptions) -> tuple[float | None, float | None, list[Probe]]:
    """Bracket and bisect (module docstring) with ``probe(load) -> Probe``; returns (lo, hi, probes).

    ``lo`` None: the start failed; ``hi`` None: no probe failed up to the maximum. An inconclusive probe
    ends the search (it is the last probe; ``hi`` stays what it was).
    """
    probes: list[Probe] = []
    lo: float | None = None
    hi: float | None = None
    load = opts.start
    while True:  # bracket
        p = probe(load)
        probes.append(p)
        if p.verdict == bd.INCONCLUSIVE:
            return lo, hi, probes
        if p.verdict != bd.PASS:
            hi = load
            break
        lo = load
        if load >= opts.max_load:
            return lo, None, probes
        load = min(load * 2.0, opts.max_load)
    if lo is None:
        return None, hi, probes
    while not opts.done(lo, hi):  # bisect
        mid = opts.middle(lo, hi)
        if not lo < mid < hi:
            break
        p = probe(mid)
        probes.append(p)
        if p.verdict == bd.INCONCLUSIVE:
            break
        if p.verdict == bd.PASS:
            lo = mid
        else:
            hi = mid
    return lo, hi, probes


# --- judging a probe -----------------------------------------------------------------------------------

def term_values(run_dir: str | Path, point: dict, key: str, slo_text: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(values ms, request row per value) of a summary key's metric (``ttft_p95_ms`` -> TTFT) over the
    point's steady window, ok requests only (ITL: every gap of an ok request)."""
    parts = split_key(key)
    if parts is None:
        raise ValueError(f"{key}: not a distribution key")
    name = parts[0]
    frame = load_frame(run_dir, parse_slo(slo_text))
    sw = (point.get("summary") or {}).get("steady_window")
    if sw:
        frame = frame.subset(window_mask(frame, (sw["start_ns"], sw["end_ns"])))
    if name in GAP_METRICS:
        return np.asarray(frame.gaps[name], dtype=np.float64), np.asarray(frame.gap_row)
    ok = np.flatnonzero(frame.cols["ok"].astype(bool))
    return np.asarray(frame.cols[name], dtype=np.float64)[ok], ok


def judge_point_runs(points: list[dict], slo: dict[str, tuple[str, float]], slo_text: str | None,
                     max_error_rate: float, opts: SearchOptions, min_requests: int = DEFAULT_MIN_REQUESTS,
                     min_window_s: float = DEFAULT_MIN_WINDOW_S) -> tuple[str, str, dict[str, dict], list[str]]:
    """(verdict, decided_by, terms, failures) of one or more runs of the same load, pooled.

    Each run passes :func:`~harness.analysis.capacity.check_point` without SLO terms first (the failure
    rule, the error rate, enough data). A run with too little data (a short steady window or few ok
    requests) counts when the runs together have enough (``decided_by`` = :data:`TOO_LITTLE` otherwise:
    the probe is repeated once).
    """
    n = w = 0.0
    short: list[str] = []
    for pt in points:
        if not pt.get("complete"):
            return bd.INCONCLUSIVE, "checks", {}, [pt.get("error") or "point did not complete"]
        c = check_point(pt.get("summary") or {}, {}, max_error_rate, min_requests, min_window_s)
        if c.inconclusive and c.why in EXTENDABLE:
            short += c.failures
        elif c.inconclusive:
            return bd.INCONCLUSIVE, "failure rule", {}, c.failures
        elif c.failures:
            return bd.FAIL, "checks", {}, c.failures
        n, w = n + c.n, w + c.window_s
    if short and (n < min_requests or w < min_window_s):
        return bd.INCONCLUSIVE, TOO_LITTLE, {}, short + ([f"pooled: {n:.0f} ok requests in {w:.1f} s"]
                                                         if len(points) > 1 else [])
    terms: dict[str, dict] = {}
    intervals: dict[str, bd.Interval] = {}
    bounds: dict[str, float] = {}
    for key, bound in slo.values():
        vals, rows = [], []
        offset = 0
        for pt in points:
            v, r = term_values(pt["run_dir"], pt, key, slo_text)
            vals.append(v)
            rows.append(r + offset)
            offset += int(r.max()) + 1 if len(r) else 0
        stat = split_key(key)[1]  # type: ignore[index]
        iv = bd.bootstrap_ci(np.concatenate(vals), np.concatenate(rows), stat, resamples=opts.resamples,
                             confidence=opts.confidence)
        intervals[key], bounds[key] = iv, bound
        terms[key] = {**iv.as_dict(), "bound_ms": bound, "verdict": bd.judge(iv, bound)}
    verdict = bd.combine([t["verdict"] for t in terms.values()])
    return verdict, "interval", terms, []


# --- the command -----------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``--search*`` options (added to ``harness sweep``)."""
    g = p.add_argument_group("adaptive SLO-boundary search (instead of a grid of --users/--rates)")
    g.add_argument("--search", choices=("users", "rate"), default=None,
                   help="per cap, find the highest load within the SLO by bracketing (doubling from "
                        "--search-start) and bisection; each probe judged by bootstrap intervals")
    g.add_argument("--search-start", type=float, default=None,
                   help="first load probed (default 1 user / 1 req/s)")
    g.add_argument("--search-max", type=float, default=None,
                   help="highest load probed (default 256 users / 1024 req/s)")
    g.add_argument("--search-resolution", type=float, default=None,
                   help="stop bisecting when the interval is this narrow: users, absolute (default 1); "
                        "rate, a fraction of the lower load (default 0.1)")
    g.add_argument("--search-cliff", type=float, default=bd.CLIFF_FACTOR,
                   help=f"warn of a cliff when an SLO statistic grows more than this factor over one step "
                        f"(default {bd.CLIFF_FACTOR:g})")
    g.add_argument("--search-confidence", type=float, default=bd.CONFIDENCE,
                   help=f"confidence of the bootstrap intervals (default {bd.CONFIDENCE:g})")
    g.add_argument("--search-resamples", type=int, default=bd.RESAMPLES,
                   help=f"bootstrap resamples per interval (default {bd.RESAMPLES})")


def options(args: argparse.Namespace) -> SearchOptions:
    """Validated search options; ValueError with one line."""
    if args.users or args.rates:
        raise ValueError("--search finds the loads itself: drop --users/--rates (use --search-start/--search-max)")
    d = DEFAULTS[args.search]
    start = d["start"] if args.search_start is None else args.search_start
    mx = d["max"] if args.search_max is None else args.search_max
    res = d["resolution"] if args.search_resolution is None else args.search_resolution
    if args.search == "users" and (start != int(start) or mx != int(mx) or res != int(res)):
        raise ValueError("--search users: --search-start, --search-max and --search-resolution must be whole numbers")
    if not 0 < start <= mx:
        raise ValueError(f"--search-start {start:g} must be > 0 and <= --search-max {mx:g}")
    if res <= 0 or (args.search == "rate" and res >= 1):
        raise ValueError("--search-resolution must be > 0 (rate: a fraction below 1, e.g. 0.1)")
    if args.search_cliff <= 1:
        raise ValueError("--search-cliff must be > 1")
    if not 0.5 <= args.search_confidence < 1:
        raise ValueError("--search-confidence must be in [0.5, 1)")
    if args.search_resamples < 100:
        raise ValueError("--search-resamples must be at least 100")
    return SearchOptions(args.search, float(start), float(mx), float(res), args.search_cliff,
                         args.search_confidence, args.search_resamples)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_search(args: argparse.Namespace, plan: SweepPlan, opts: SearchOptions) -> dict:
    """Search every cap of ``plan``; writes search.json, sweep.json and sweep.html; returns search.json's content."""
    plan.out.mkdir(parents=True, exist_ok=True)
    repeats = SweepPlan(plan.caps, plan.axis, [], plan.out / "repeats")
    slo = slo_spec(args.slo, intended=plan.axis == "rate")
    results: list[CapSearch] = []
    points: list[dict] = []
    t_all = time.monotonic()
    for cap in plan.caps:
        results.append(_search_cap(args, plan, repeats, cap, slo, opts, points))
    data = {"axis": plan.axis, "options": asdict(opts), "slo": args.slo, "max_error_rate": args.max_error_rate,
            "caps": [r.as_dict() for r in results], "wall_s": time.monotonic() - t_all}
    (plan.out / SEARCH_FILE).write_text(json.dumps(data, indent=2, default=str))
    report_plan = SweepPlan(plan.caps, plan.axis, sorted({p["load"] for p in points}), plan.out)
    table = [CapCapacity(r.cap, r.boundary, *_rates_at(points, r.cap, r.boundary), r.limiting, r.inconclusive,
                         _inconclusive_why(r.probes[-1]) if r.inconclusive else None) for r in results]
    sweep = write_sweep_outputs(report_plan, points, args.slo, args.max_error_rate,
                                getattr(args, "min_requests", DEFAULT_MIN_REQUESTS),
                                getattr(args, "min_window", DEFAULT_MIN_WINDOW_S), search=data, table=table)
    data["recommended"] = sweep["recommended"]
    return data


def _search_cap(args: argparse.Namespace, plan: SweepPlan, repeats: SweepPlan, cap: int | None,
                slo: dict[str, tuple[str, float]], opts: SearchOptions, points: list[dict]) -> CapSearch:
    """One cap's search (its server started before the first probe that runs, stopped at the end);
    appends the first run of every probe to ``points``."""
    t_cap = time.monotonic()
    where = "" if cap is None else f"cap {cap}, "
    host = CapTarget(args, plan.out, cap, lambda: _say(f"{where}starting server"))

    def run_once(p: SweepPlan, load: float) -> dict:
        done = completed_point(p, cap, load)
        if done is not None:
            return done
        h, scrape = host()
        return run_point(args, p, cap, load, h, scrape)

    def judge(runs: list[dict]) -> tuple[str, str, dict[str, dict], list[str]]:
        return judge_point_runs(runs, slo, args.slo, args.max_error_rate, opts,
                                getattr(args, "min_requests", DEFAULT_MIN_REQUESTS),
                                getattr(args, "min_window", DEFAULT_MIN_WINDOW_S))

    def probe(load: float) -> Probe:
        t0 = time.monotonic()
        first = run_once(plan, load)
        points.append(first)
        runs = [first]
        verdict, how, terms, fails = judge(runs)
        pr = Probe(load, verdict, how, terms=terms, failures=fails, run_dirs=[first["run_dir"]])
        if verdict == bd.CLOSE or how == TOO_LITTLE:
            why = "too close to call" if verdict == bd.CLOSE else TOO_LITTLE
            _say(f"{where}{pr.line(opts.axis)}: {why}, repeating once")
            runs.append(run_once(repeats, load))
            v2, how2, terms2, fails2 = judge(runs)
            pr = Probe(load, v2, how2, True, terms2, fails2, [r["run_dir"] for r in runs],
                       first_verdict=bd.CLOSE if verdict == bd.CLOSE else TOO_LITTLE)
            if v2 == bd.CLOSE:
                pr.verdict = bd.by_estimate({k: bd.Interval(t["estimate"], t["low"], t["high"], t["n"],
                                                            t["clusters"]) for k, t in terms2.items()},
                                            {k: t["bound_ms"] for k, t in terms2.items()})
                pr.decided_by = "estimate (pooled runs still too close to call)"
        pr.wall_s = time.monotonic() - t0
        _say(f"{where}{pr.line(opts.axis)}")
        return pr

    try:
        lo, hi, probes = search_cap(probe, opts)
    finally:
        host.stop()
    return _cap_result(cap, lo, hi, probes, slo, opts, time.monotonic() - t_cap)


def _inconclusive_why(p: Probe) -> str:
    """The capacity table's cause (:data:`harness.analysis.capacity.INCONCLUSIVE_WHY`) of an inconclusive probe."""
    if p.decided_by == "failure rule":
        return "failures"
    if p.decided_by == TOO_LITTLE and any(f.startswith("inconclusive: steady window") for f in p.failures):
        return "short window"
    return "few requests"


def _rates_at(points: list[dict], cap: int | None, load: float | None) -> tuple[float | None, float | None]:
    for p in points:
        if p["cap"] == cap and p["load"] == load and p.get("summary"):
            return p["summary"].get("goodput"), p["summary"].get("output_tokens_per_s")
    return None, None


def _cap_result(cap: int | None, lo: float | None, hi: float | None, probes: list[Probe],
                slo: dict[str, tuple[str, float]], opts: SearchOptions, wall_s: float) -> CapSearch:
    unit = opts.unit()
    last = probes[-1]
    inconclusive = last.verdict == bd.INCONCLUSIVE
    if inconclusive:
        limiting = f"inconclusive at {load_text(last.load, opts.axis)}: " + "; ".join(last.failures)
    elif lo is None:
        limiting = f"fails at the lowest load probed ({load_text(opts.start, opts.axis)}): " + _why(last)
    elif hi is None:
        limiting = f"met the SLO at every load probed (up to --search-max {opts.max_load:g} {unit})"
    else:
        failing = next(p for p in probes if p.load == hi)
        limiting = f"at {load_text(hi, opts.axis)}: " + _why(failing)
    keys = [k for k, _ in slo.values()] or [NO_SLO_CLIFF_KEY]
    est = []
    for p in probes:
        if p.terms:
            est.append((p.load, {k: p.terms[k]["estimate"] for k in keys if k in p.terms}))
    cliffs = [c.as_dict() | {"text": c.text(unit)}
              for c in bd.find_cliffs(est, opts.resolution, opts.cliff_factor, opts.relative)]
    return CapSearch(cap, lo, (lo, hi), limiting, inconclusive, probes, cliffs, wall_s)


def _why(p: Probe) -> str:
    bad = [f"{k} {bd.interval_text(t)} > {t['bound_ms']:g}" for k, t in p.terms.items() if t["verdict"] != bd.PASS]
    return "; ".join(p.failures + bad) or p.verdict


def plan_search(args: argparse.Namespace) -> tuple[SweepPlan, SearchOptions]:
    """The sweep plan (caps, out) and the search options of ``--search``; ValueError with one line."""
    opts = options(args)
    if args.search == "rate" and args.scenario is None:
        args.scenario = str(scenario_path("open_loop"))
    plan = make_plan(args)
    return SweepPlan(plan.caps, args.search, [], plan.out), opts


def result_lines(data: dict) -> list[str]:
    """One line per cap (boundary and interval, probes, wall time), then every cliff."""
    unit = "users" if data["axis"] == "users" else "req/s"
    out = []
    for c in data["caps"]:
        who = "target" if c["cap"] is None else f"cap {c['cap']}"
        lo, hi = c["interval"]
        if c["boundary"] is None:
            b = "sustains nothing probed"
        elif hi is None:
            b = f"boundary >= {lo:g} {unit} (the search's maximum)"
        else:
            b = f"boundary {load_text(lo, data['axis'])} (passes {lo:g}, fails {hi:g}: the limit lies in [{lo:g}, {hi:g}))"
        loads = ", ".join(f"{p['load']:g}" for p in c["probes"])
        out.append(f"{who}: {b}; {len(c['probes'])} probes ({loads}) in {c['wall_s']:.0f} s; {c['limiting']}")
        out += [f"{who}: {x['text']}" for x in c["cliffs"]]
    return out


def run_command(args: argparse.Namespace) -> int:
    """``harness sweep --search ...``: exit 0, 1 when a probe did not complete, 2 on bad input."""
    from harness.sweep.command import (  # the grid's --out guard (command imports us)
        prepare_out,
        resume_command,
    )

    try:
        plan, opts = plan_search(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        if getattr(args, "restart", False):
            shutil.rmtree(plan.out / "repeats", ignore_errors=True)
            (plan.out / SEARCH_FILE).unlink(missing_ok=True)
        prepare_out(args, plan)  # the settings fingerprint: probes made with other settings are never reused
        data = run_search(args, plan, opts)
    except (RuntimeError, SettingsMismatch) as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: {resume_command(plan.out)}", file=sys.stderr, flush=True)
        return 130
    for line in result_lines(data):
        print(f"search: {line}")
    rec = data["recommended"]
    if plan.caps != [None]:
        print(f"recommended cap: {rec['cap'] if rec['cap'] is not None else 'none'} - {rec['reason']}")
    print(f"sweep report: {plan.out / 'sweep.html'}")
    bad = [p for c in data["caps"] for p in c["probes"] if p["decided_by"] == "checks" and p["verdict"] == bd.INCONCLUSIVE]
    return 1 if bad else 0


__all__ = ["SEARCH_FILE", "CapSearch", "Probe", "SearchOptions", "add_arguments", "judge_point_runs", "options",
           "plan_search", "result_lines", "run_command", "run_search", "search_cap"]
