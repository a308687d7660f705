"""Capacity planning: the largest load each server cap sustains within the SLO, and the cap to pick.

A sweep point *meets the SLO* when every SLO statistic of its steady-window summary is within its
bound (e.g. ``ttft_p95_ms <= 500``) and its error rate (overloaded and every other failure except
requests the harness cancelled at the end of the point, over attempted requests) is at most
``max_error_rate`` - a cap that turns most requests away must not
look fast. A cap *sustains* load L when the point at L and every point below it meet the SLO; its
capacity is the largest such L (None when even the lowest load fails).

A point whose attempts mostly failed for another reason than overload (connect errors, 4xx, 5xx,
timeouts, broken streams: :func:`harness.analysis.failures.failure_verdict` calls it
*inconclusive*) is no capacity figure at all: its figures describe the failures. The cap's search
stops there with ``limiting`` = ``inconclusive: failures ...`` (the loads below it still count), and
the recommendation says the sweep is inconclusive instead of "no cap met the SLO". Overloaded
answers to a load above the cap remain what they are, a capacity signal (the error-rate check).

Recommended cap: the one with the largest capacity; ties go to the higher goodput (or output tokens/s
without an SLO) at that load, then to the smaller cap (less memory, less queueing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from harness.analysis.failures import failure_verdict

DEFAULT_MAX_ERROR_RATE = 0.01


@dataclass
class Point:
    cap: int | None
    load: float
    summary: dict
    run_dir: str = ""


@dataclass
class Check:
    point_ok: bool
    failures: list[str] = field(default_factory=list)
    inconclusive: bool = False  #: failures other than overload dominate: not a capacity figure


@dataclass
class CapCapacity:
    cap: int | None
    max_load: float | None
    goodput: float | None
    output_tokens_per_s: float | None
    limiting: str  #: why the next load failed, or why it is unbounded within the sweep
    inconclusive: bool = False  #: the search stopped at a point whose failures were no capacity signal


@dataclass
class Recommendation:
    cap: int | None
    max_load: float | None
    reason: str


def point_failures(summary: dict) -> dict:
    """The failure verdict of a point's summary (``summary["failures"]``, or the rule applied to its
    outcome counts for a summary written before it existed)."""
    return summary.get("failures") or failure_verdict(summary.get("outcomes") or {}).as_dict()


def check_point(summary: dict, slo: dict[str, tuple[str, float]], max_error_rate: float) -> Check:
    """Does one point meet the SLO? ``slo`` maps metric -> (summary key, bound in ms).

    A point whose non-overload failures dominate is not checked against the SLO: it is
    ``inconclusive`` (module docstring).
    """
    verdict = point_failures(summary)
    if verdict.get("inconclusive"):
        return Check(False, [f"inconclusive: failures: {verdict.get('headline')}"], inconclusive=True)
    failures = []
    for key, bound in slo.values():
        v = summary.get(key)
        if v is None:
            failures.append(f"{key} missing" + (" (no ok requests)" if not summary.get("ok") else ""))
        elif v > bound:
            failures.append(f"{key} {v:.1f} > {bound:g}")
    # requests the harness itself cancelled at the end of a point are not the server's failures
    err = (summary.get("error_rate") or 0.0) - (summary.get("error_rate_cancelled") or 0.0)
    if err > max_error_rate:
        failures.append(f"error rate {err:.1%} > {max_error_rate:.1%}"
                        + (f" (overloaded {summary.get('overload_rate', 0):.1%})" if summary.get("overload_rate") else ""))
    if not summary.get("ok"):
        failures.append("no ok requests")
    return Check(not failures, failures)


def _unit(axis: str) -> str:
    return "users" if axis == "users" else "requests/s"


def capacity(points: list[Point], slo: dict[str, tuple[str, float]], axis: str = "users",
             max_error_rate: float = DEFAULT_MAX_ERROR_RATE) -> list[CapCapacity]:
    """Per cap (ascending), the largest load sustained within the SLO."""
    caps = sorted({p.cap for p in points}, key=lambda c: (c is None, c or 0))
    out = []
    for cap in caps:
        pts = sorted((p for p in points if p.cap == cap), key=lambda p: p.load)
        best: Point | None = None
        limiting = f"met the SLO at every load swept (up to {pts[-1].load:g} {_unit(axis)})" if pts else "no points"
        inconclusive = False
        for p in pts:
            c = check_point(p.summary, slo, max_error_rate)
            if c.inconclusive:
                inconclusive = True
                limiting = f"inconclusive at {p.load:g} {_unit(axis)}: " + point_failures(p.summary)["headline"]
                break
            if not c.point_ok:
                limiting = f"at {p.load:g} {_unit(axis)}: " + "; ".join(c.failures)
                break
            best = p
        out.append(CapCapacity(cap, best.load if best else None,
                               best.summary.get("goodput") if best else None,
                               best.summary.get("output_tokens_per_s") if best else None, limiting, inconclusive))
    return out


def recommend(table: list[CapCapacity], axis: str = "users") -> Recommendation:
    """The cap with the largest sustained load (ties: more goodput / tokens/s, then the smaller cap)."""
    ok = [c for c in table if c.max_load is not None]
    if not ok:
        worst = "; ".join(f"cap {c.cap}: {c.limiting}" for c in table)
        if any(c.inconclusive for c in table):
            return Recommendation(None, None, f"inconclusive: failures, not the server's capacity, decided the "
                                              f"sweep ({worst})")
        return Recommendation(None, None, f"no cap met the SLO even at the lowest load ({worst})")

    def key(c: CapCapacity) -> tuple:
        rate = c.goodput if c.goodput is not None else (c.output_tokens_per_s or 0.0)
        return (c.max_load, round(rate, 6), -(c.cap or 0))

    best = max(ok, key=key)
    rate_txt = (f"goodput {best.goodput:.2f} req/s" if best.goodput is not None
                else f"{best.output_tokens_per_s or 0:.1f} output tokens/s")
    others = [f"cap {c.cap} sustains {'nothing' if c.max_load is None else f'{c.max_load:g} {_unit(axis)}'}"
              f" ({c.limiting})" for c in table if c is not best]
    if best.limiting.startswith("met"):
        beyond = f"it {best.limiting}, so its limit lies beyond the sweep"
    elif best.inconclusive:
        beyond = f"above that the sweep is {best.limiting}, so its limit is unknown"
    else:
        beyond = f"the next load fails it: {best.limiting}"
    who = "the target" if best.cap is None else f"cap {best.cap}"
    reason = (f"{who} sustains {'' if best.cap is None else 'the most load '}within the SLO: "
              f"{best.max_load:g} {_unit(axis)} with {rate_txt}; {beyond}.")
    if others:
        reason += " Others: " + "; ".join(others) + "."
    return Recommendation(best.cap, best.max_load, reason)


def as_dicts(table: list[CapCapacity]) -> list[dict]:
    return [asdict(c) for c in table]
