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

Every point gets one :class:`PointVerdict` - ``pass``, ``fail`` or ``inconclusive`` - with the
evidence it rests on (:class:`Check`: ``n`` ok requests and ``window_s`` of the steady window). A point
is *inconclusive* (never a pass, never a failure) for one of :data:`INCONCLUSIVE_WHY`, checked in this
order:

1. ``failures``: failures other than overload dominate (the failure rule above);
2. ``short window``: its steady window is shorter than ``min_window_s`` (default
   :data:`DEFAULT_MIN_WINDOW_S` = 3 s, the shortest window the steady-window rule accepts as steady,
   :data:`harness.analysis.steady.MIN_WINDOW_S`): a window that short is mostly ramp-up and drain;
3. ``few requests``: fewer than ``min_requests`` ok requests were sent inside the steady window
   (default :data:`DEFAULT_MIN_REQUESTS` = 20: the p95 of fewer than 20 values is their maximum, so one
   slow request would decide it). Exception: the error rate alone fails a point over at least
   ``min_requests`` attempts (a server refusing most of them is a measured failure).

Recommended cap: the one with the largest capacity; ties go to the higher goodput (or output tokens/s
without an SLO) at that load, then to the smaller cap (less memory, less queueing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

from harness.analysis.failures import failure_verdict
from harness.analysis.html import plural
from harness.analysis.steady import MIN_WINDOW_S

DEFAULT_MAX_ERROR_RATE = 0.01
#: fewest ok requests in a point's steady window for a latency verdict (module docstring)
DEFAULT_MIN_REQUESTS = 20
#: shortest steady window, s, for any verdict (module docstring)
DEFAULT_MIN_WINDOW_S = MIN_WINDOW_S


class PointVerdict(StrEnum):
    """A sweep point's verdict against the SLO: the one list of them."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


#: why a point is inconclusive, in the order they are checked (module docstring)
INCONCLUSIVE_WHY = ("failures", "short window", "few requests")
#: the inconclusive causes a longer run can cure (``harness sweep --extend-inconclusive``)
EXTENDABLE = ("short window", "few requests")


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
    inconclusive: bool = False  #: neither pass nor fail: see ``why``
    why: str | None = None  #: one of :data:`INCONCLUSIVE_WHY` when inconclusive
    n: int = 0  #: ok requests sent inside the steady window
    window_s: float = 0.0  #: the steady window's length, s

    @property
    def verdict(self) -> PointVerdict:
        if self.inconclusive:
            return PointVerdict.INCONCLUSIVE
        return PointVerdict.PASS if self.point_ok else PointVerdict.FAIL

    @property
    def label(self) -> str:
        """``pass`` / ``fail`` / ``inconclusive: few requests``."""
        return f"inconclusive: {self.why}" if self.inconclusive else self.verdict.value

    def evidence(self) -> dict:
        """What the verdict rests on: ``{"n": ok requests, "window_s": steady window s}``."""
        return {"n": self.n, "window_s": round(self.window_s, 3)}


@dataclass
class CapCapacity:
    cap: int | None
    max_load: float | None
    goodput: float | None
    output_tokens_per_s: float | None
    limiting: str  #: why the next load failed, or why it is unbounded within the sweep
    inconclusive: bool = False  #: the search stopped at an inconclusive point (its limit is unknown)
    why: str | None = None  #: that point's cause, one of :data:`INCONCLUSIVE_WHY`


@dataclass
class Recommendation:
    cap: int | None
    max_load: float | None
    reason: str


def point_failures(summary: dict) -> dict:
    """The failure verdict of a point's summary (``summary["failures"]``, or the rule applied to its
    outcome counts for a summary written before it existed)."""
    return summary.get("failures") or failure_verdict(summary.get("outcomes") or {}).as_dict()


def window_s(summary: dict) -> float | None:
    """Length, s, of the window a point's summary covers: its steady window (``steady_window_info``),
    else its ``measurement_window_s``; None when the summary records neither (not checked then)."""
    info = summary.get("steady_window_info")
    if info:
        return float(info.get("duration_s") or 0.0)
    v = summary.get("measurement_window_s")
    return float(v) if isinstance(v, int | float) else None


def check_point(summary: dict, slo: dict[str, tuple[str, float]], max_error_rate: float,
                min_requests: int = DEFAULT_MIN_REQUESTS, min_window_s: float = DEFAULT_MIN_WINDOW_S) -> Check:
    """The point's verdict (module docstring). ``slo`` maps metric -> (summary key, bound in ms)."""
    n, w_known = int(summary.get("ok") or 0), window_s(summary)
    w = w_known if w_known is not None else 0.0
    verdict = point_failures(summary)

    def inconclusive(why: str, text: str) -> Check:
        return Check(False, [f"inconclusive: {text}"], True, why, n, w)

    if verdict.get("inconclusive"):
        return inconclusive("failures", f"failures: {verdict.get('headline')}")
    if w_known is not None and w < min_window_s:
        return inconclusive("short window", f"steady window {w:.1f} s < {min_window_s:g} s ({n} ok requests)")
    # requests the harness itself cancelled at the end of a point are not the server's failures
    err = (summary.get("error_rate") or 0.0) - (summary.get("error_rate_cancelled") or 0.0)
    err_fail = (f"error rate {err:.1%} > {max_error_rate:.1%}"
                + (f" (overloaded {summary.get('overload_rate', 0):.1%})" if summary.get("overload_rate") else ""))
    if n < min_requests:
        if err > max_error_rate and int(verdict.get("attempts") or 0) >= min_requests:
            return Check(False, [err_fail], n=n, window_s=w)
        where = f" in the {w:.1f}-s steady window" if w_known is not None else ""
        return inconclusive("few requests", f"{n} ok requests{where} < {min_requests}")
    failures = []
    for key, bound in slo.values():
        v = summary.get(key)
        if v is None:
            failures.append(f"{key} missing" + (" (no ok requests)" if not n else ""))
        elif v > bound:
            failures.append(f"{key} {v:.1f} > {bound:g}")
    if err > max_error_rate:
        failures.append(err_fail)
    if not n:
        failures.append("no ok requests")
    return Check(not failures, failures, n=n, window_s=w)


def _load(load: float, axis: str) -> str:
    """``1 user``, ``8 users``, ``2.5 requests/s``."""
    return plural(load, "user") if axis == "users" else f"{load:g} requests/s"


def capacity(points: list[Point], slo: dict[str, tuple[str, float]], axis: str = "users",
             max_error_rate: float = DEFAULT_MAX_ERROR_RATE, min_requests: int = DEFAULT_MIN_REQUESTS,
             min_window_s: float = DEFAULT_MIN_WINDOW_S) -> list[CapCapacity]:
    """Per cap (ascending), the largest load sustained within the SLO; the search stops at the first
    point that fails or is inconclusive."""
    caps = sorted({p.cap for p in points}, key=lambda c: (c is None, c or 0))
    out = []
    for cap in caps:
        pts = sorted((p for p in points if p.cap == cap), key=lambda p: p.load)
        best: Point | None = None
        limiting = f"met the SLO at every load swept (up to {_load(pts[-1].load, axis)})" if pts else "no points"
        inconclusive, why = False, None
        for p in pts:
            c = check_point(p.summary, slo, max_error_rate, min_requests, min_window_s)
            if c.inconclusive:
                inconclusive, why = True, c.why
                text = (point_failures(p.summary)["headline"] if c.why == "failures"
                        else c.failures[0].removeprefix("inconclusive: "))
                limiting = f"inconclusive at {_load(p.load, axis)}: {text}"
                break
            if not c.point_ok:
                limiting = f"at {_load(p.load, axis)}: " + "; ".join(c.failures)
                break
            best = p
        out.append(CapCapacity(cap, best.load if best else None,
                               best.summary.get("goodput") if best else None,
                               best.summary.get("output_tokens_per_s") if best else None, limiting, inconclusive, why))
    return out


def recommend(table: list[CapCapacity], axis: str = "users") -> Recommendation:
    """The cap with the largest sustained load (ties: more goodput / tokens/s, then the smaller cap)."""
    ok = [c for c in table if c.max_load is not None]
    if not ok:
        worst = "; ".join(f"cap {c.cap}: {c.limiting}" for c in table)
        if any(c.inconclusive and c.why == "failures" for c in table):
            return Recommendation(None, None, f"inconclusive: failures, not the server's capacity, decided the "
                                              f"sweep ({worst})")
        if any(c.inconclusive for c in table):
            return Recommendation(None, None, f"inconclusive: too little evidence at the lowest loads to judge "
                                              f"any cap; run longer points or --extend-inconclusive ({worst})")
        return Recommendation(None, None, f"no cap met the SLO even at the lowest load ({worst})")

    def key(c: CapCapacity) -> tuple:
        rate = c.goodput if c.goodput is not None else (c.output_tokens_per_s or 0.0)
        return (c.max_load, round(rate, 6), -(c.cap or 0))

    best = max(ok, key=key)
    rate_txt = (f"goodput {best.goodput:.2f} req/s" if best.goodput is not None
                else f"{best.output_tokens_per_s or 0:.1f} output tokens/s")
    others = [(f"cap {c.cap} is {c.limiting}" if c.max_load is None and c.inconclusive else
               f"cap {c.cap} sustains {'nothing' if c.max_load is None else _load(c.max_load, axis)}"
               f" ({c.limiting})") for c in table if c is not best]
    if best.limiting.startswith("met"):
        beyond = f"it {best.limiting}, so its limit lies beyond the sweep"
    elif best.inconclusive:
        beyond = f"above that the sweep is {best.limiting}, so its limit is unknown"
    else:
        beyond = f"the next load fails it: {best.limiting}"
    who = "the target" if best.cap is None else f"cap {best.cap}"
    reason = (f"{who} sustains {'' if best.cap is None else 'the most load '}within the SLO: "
              f"{_load(best.max_load, axis)} with {rate_txt}; {beyond}.")
    if others:
        reason += " Others: " + "; ".join(others) + "."
    return Recommendation(best.cap, best.max_load, reason)


def as_dicts(table: list[CapCapacity]) -> list[dict]:
    return [asdict(c) for c in table]
