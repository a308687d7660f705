"""sweep.json and sweep.html: per cap, percentiles / throughput / overload rate / goodput vs load,
the capacity table and the recommended cap (harness.analysis.capacity).

Points whose failures dominate (harness.analysis.failures) say so: each point's ``failures`` in
sweep.json, a "failures" column, and, when any point is inconclusive, sweep.html's first statement
and :func:`failure_lines` (printed first by ``harness sweep``).

Every point carries its verdict (``pass`` / ``fail`` / ``inconclusive``, harness.analysis.capacity)
and its evidence (``n`` ok requests, ``window_s``) in sweep.json and the points table; inconclusive
points are hollow markers on a dotted line at their load in the plots, "inconclusive" in the capacity
table and the recommendation, and listed by :func:`inconclusive_lines`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from harness.analysis.boundary import interval_text  # noqa: E402
from harness.analysis.capacity import (  # noqa: E402
    DEFAULT_MIN_REQUESTS,
    DEFAULT_MIN_WINDOW_S,
    Point,
    as_dicts,
    capacity,
    check_point,
    point_failures,
    recommend,
)
from harness.analysis.html import CSS, fmt, img_tag, plural, slo_label, table  # noqa: E402
from harness.analysis.summary import slo_spec  # noqa: E402

DPI = 80


@dataclass
class SweepPlan:
    """A sweep's axes and output dir: ``caps`` (None = an external target) x ``loads`` on ``axis``."""

    caps: list[int | None]
    axis: str  #: "users" (closed loop) or "rate" (open loop)
    loads: list[float]
    out: Path

    def point_dir(self, cap: int | None, load: float) -> Path:
        cap_part = "external" if cap is None else f"cap-{cap}"
        return self.out / cap_part / f"{self.axis}-{load:g}"

    @property
    def total(self) -> int:
        return len(self.caps) * len(self.loads)


def _series(points: list[dict], cap: Any, key: str) -> tuple[list[float], list[float]]:
    pts = sorted((p for p in points if p["cap"] == cap and p.get("summary")), key=lambda p: p["load"])
    xs, ys = [], []
    for p in pts:
        v = p["summary"].get(key)
        if v is not None:
            xs.append(p["load"])
            ys.append(v)
    return xs, ys


def _xscale(ax, points: list[dict]) -> None:
    """Log2 x axis for wide load ranges, ticked and labelled at the swept loads themselves (1, 2, 4, ...)."""
    loads = sorted({p["load"] for p in points if p.get("load")})
    if loads and max(loads) / min(loads) >= 8:
        ax.set_xscale("log", base=2)
    if loads and len(loads) <= 12:
        ax.set_xticks(loads, [f"{x:g}" for x in loads])
        ax.xaxis.set_minor_locator(NullLocator())


#: an SLO line further above the highest plotted value than this factor is marked at the top edge
SLO_HEADROOM = 1.5


def _slo_line(ax, bound: float, label: str) -> None:
    """Draw the SLO bound; when it is far above the data, keep the data's y range and mark the SLO
    at the top edge (a thick red line, "off scale" in the legend) so a loose SLO does not squash the curves."""
    top = max((float(max(ln.get_ydata(), default=0)) for ln in ax.get_lines()), default=0.0)
    if top > 0 and bound > SLO_HEADROOM * top:
        ax.set_ylim(0, top * 1.15)
        ax.axhline(top * 1.15, color="red", lw=4, alpha=0.5, label=f"{label}: above, off scale ↑")
    else:
        ax.axhline(bound, color="red", lw=1, alpha=0.6, label=label)


def _mark_inconclusive(ax, points: list[dict], caps: list, key: str | None) -> None:
    """Inconclusive points: a hollow marker where the point has a value for ``key``, and a dotted
    vertical line labelled "inconclusive" at its load (also where it has none)."""
    marked = False
    for i, cap in enumerate(caps):
        for p in points:
            if p["cap"] != cap or p.get("verdict") != "inconclusive":
                continue
            color = f"C{i % 10}"
            ax.axvline(p["load"], color=color, ls=":", lw=1, alpha=0.6)
            ax.text(p["load"], 0.98, " inconclusive", transform=ax.get_xaxis_transform(), rotation=90,
                    fontsize=7, color=color, va="top", ha="right")
            v = (p.get("summary") or {}).get(key) if key else None
            if v is not None:
                ax.plot([p["load"]], [v], ls="none", marker="o", ms=9, mfc="white", mec=color, mew=1.5,
                        label=None if marked else "inconclusive (hollow)")
                marked = True


def _xlabel(axis: str) -> str:
    return "concurrent users" if axis == "users" else "offered load (requests/s)"


def plot_latency(points: list[dict], caps: list, axis: str, slo: dict, out: Path) -> Path:
    """TTFT, ITL and E2E p50/p95/p99 vs load, one colour per cap."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, name in zip(axes, ("ttft", "itl", "e2e"), strict=True):
        key = f"{name}_intended" if axis == "rate" and name != "itl" else name  # open loop: from intended start
        for i, cap in enumerate(caps):
            color = f"C{i % 10}"
            for stat, ls in (("p50", ":"), ("p95", "--"), ("p99", "-")):
                xs, ys = _series(points, cap, f"{key}_{stat}_ms")
                if xs:
                    ax.plot(xs, ys, ls=ls, marker="o", ms=3, color=color,
                            label=f"{'load' if cap is None else f'cap {cap}'} {stat}")
        if name in slo:
            _slo_line(ax, slo[name][1], f"SLO {slo_label(*slo[name])}")
        _mark_inconclusive(ax, points, caps, slo[name][0] if name in slo else f"{key}_p95_ms")
        _xscale(ax, points)
        ax.set_title(f"{name.upper()} percentiles vs load" + (" (from intended start)" if key != name else ""))
        ax.set_xlabel(_xlabel(axis))
        ax.set_ylabel(f"{name.upper()} (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "sweep_latency.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_rates(points: list[dict], caps: list, axis: str, out: Path) -> Path:
    """Output tokens/s, overload rate and goodput vs load, one line per cap."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (("output_tokens_per_s", "Throughput vs load", "output tokens/s"),
              ("overload_rate", "Overload rate vs load", "fraction of attempted"),
              ("goodput", "Goodput vs load", "requests/s within SLO"))
    for ax, (key, title, unit) in zip(axes, panels, strict=True):
        for i, cap in enumerate(caps):
            xs, ys = _series(points, cap, key)
            if key == "goodput" and not xs:  # no SLO: request throughput instead
                xs, ys = _series(points, cap, "request_throughput")
                title, unit = "Request throughput vs load (no SLO given)", "requests/s"
            if xs:
                ax.plot(xs, ys, marker="o", ms=3, color=f"C{i % 10}", label="load" if cap is None else f"cap {cap}")
        _mark_inconclusive(ax, points, caps, key)
        _xscale(ax, points)
        ax.set_title(title)
        ax.set_xlabel(_xlabel(axis))
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "sweep_rates.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def write_sweep_outputs(plan: SweepPlan, points: list[dict], slo_text: str | None, max_error_rate: float,
                        min_requests: int = DEFAULT_MIN_REQUESTS, min_window_s: float = DEFAULT_MIN_WINDOW_S,
                        search: dict | None = None, table: list | None = None) -> dict:
    """Write sweep.json and sweep.html into ``plan.out``; returns sweep.json's content.

    ``search`` (``harness sweep --search``: search.json's content) adds the "Search" section; ``table``
    (its :class:`~harness.analysis.capacity.CapCapacity` per cap) replaces the grid's capacity table.

    Each point gets ``verdict`` (pass / fail / inconclusive), ``inconclusive_why``, ``evidence``
    (``n``, ``window_s``), ``meets_slo`` and ``slo_failures`` (harness.analysis.capacity.check_point).
    """
    out = Path(plan.out)
    slo = slo_spec(slo_text, intended=plan.axis == "rate")
    pts = [Point(p["cap"], p["load"], p.get("summary") or {}, p.get("run_dir", "")) for p in points if p.get("complete")]
    table_ = table if table is not None else capacity(pts, slo, plan.axis, max_error_rate, min_requests, min_window_s)
    rec = recommend(table_, plan.axis)
    for p in points:
        c = check_point(p.get("summary") or {}, slo, max_error_rate, min_requests, min_window_s)
        p["meets_slo"], p["slo_failures"], p["inconclusive"] = c.point_ok, c.failures, c.inconclusive
        p["verdict"], p["inconclusive_why"] = c.verdict.value, c.why
        p["evidence"] = {**c.evidence(), "ci": p.get("ci") or {}}  # ci: harness.sweep.points.slo_intervals
        if p.get("summary"):
            p["failures"] = point_failures(p["summary"])
    data = {"axis": plan.axis, "caps": plan.caps, "loads": plan.loads,
            "slo": {k: {"key": v[0], "bound_ms": v[1]} for k, v in slo.items()},
            "max_error_rate": max_error_rate, "min_requests": min_requests, "min_window_s": min_window_s,
            "points": points, "capacity": as_dicts(table_),
            "recommended": {"cap": rec.cap, "max_load": rec.max_load, "reason": rec.reason}}
    if search is not None:
        data["search"] = search
    (out / "sweep.json").write_text(json.dumps(data, indent=2, default=str))
    caps = list(plan.caps)
    imgs = [("Latency percentiles vs load", plot_latency(points, caps, plan.axis, slo, out)),
            ("Throughput, overload rate and goodput vs load", plot_rates(points, caps, plan.axis, out))]
    (out / "sweep.html").write_text(render(data, imgs, out), encoding="utf-8")
    return data


def load_text(load: float, axis: str) -> str:
    """``"1 user"``, ``"8 users"``, ``"2.5 req/s"``."""
    return plural(load, "user") if axis == "users" else f"{load:g} req/s"


def _label(p: dict) -> str:
    cap = "" if p["cap"] is None else f"cap {p['cap']}, "
    return f"{cap}{p.get('axis', 'load')} {p['load']:g}"


def failure_lines(data: dict) -> list[str]:
    """One line per point whose failures dominate, inconclusive points first (empty when none)."""
    pts = [p for p in data["points"] if (p.get("failures") or {}).get("headline")]
    pts.sort(key=lambda p: (not _by_failures(p), p["cap"] or 0, p["load"]))
    return [f"{_label(p)}: {'inconclusive: ' if _by_failures(p) else ''}{p['failures']['headline']}"
            for p in pts]


def _by_failures(p: dict) -> bool:
    """Inconclusive under the failure rule (old sweep.json files: ``inconclusive`` alone)."""
    return bool(p.get("inconclusive")) and p.get("inconclusive_why", "failures") == "failures"


def inconclusive_lines(data: dict) -> list[str]:
    """One line per point inconclusive for too little evidence (short window, few requests)."""
    pts = [p for p in data["points"] if p.get("inconclusive") and not _by_failures(p)]
    pts.sort(key=lambda p: (p["cap"] or 0, p["load"]))
    return [f"{_label(p)}: {'; '.join(f.removeprefix('inconclusive: ') for f in p.get('slo_failures') or [])}"
            for p in pts]


def render(data: dict, imgs: list[tuple[str, Path]], out: Path) -> str:
    axis = data["axis"]
    slo_txt = ", ".join(slo_label(v["key"], v["bound_ms"]) for v in data["slo"].values()) or "none (error rate only)"
    rec = data["recommended"]
    cap_rows = [[fmt(c["cap"]) if c["cap"] is not None else "external",
                 ("<span class='bad'>inconclusive</span>" if c.get("inconclusive") else "none")
                 if c["max_load"] is None else load_text(c["max_load"], axis),
                 fmt(c["goodput"], 2), fmt(c["output_tokens_per_s"]), fmt(c["limiting"])] for c in data["capacity"]]
    pt_rows = []
    for p in sorted(data["points"], key=lambda p: ((p["cap"] or 0), p["load"])):
        s = p.get("summary") or {}
        rep = Path(p["run_dir"]) / "report" / "report.html"
        link = (f'<a href="{os.path.relpath(rep, out)}">report</a>' if rep.exists() else "")
        ev = p.get("evidence") or {}
        pt_rows.append([fmt(p["cap"]) if p["cap"] is not None else "external", f"{p['load']:g}",
                        fmt(s.get("ttft_p50_ms")), fmt(s.get("ttft_p95_ms")), fmt(s.get("itl_p99_ms")),
                        fmt(s.get("e2e_p99_ms")), fmt(s.get("output_tokens_per_s")),
                        f"{(s.get('overload_rate') or 0):.1%}", _failure_cell(p), fmt(s.get("goodput"), 2),
                        fmt(ev.get("n")), fmt(ev.get("window_s")), _verdict_cell(p), link])
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>stream-harness sweep</title><style>{CSS}</style></head><body>",
        "<h1>stream-harness capacity sweep</h1>",
        _failure_banner(data),
        f"<p class='sub'>caps: {', '.join('external' if c is None else str(c) for c in data['caps'])} · "
        f"{axis}: {', '.join(f'{x:g}' for x in data['loads'])} · SLO: {fmt(slo_txt)} · "
        f"max error rate {data['max_error_rate']:.1%}</p>",
        (f"<p class='note'><b>Capacity of the target</b>: {fmt(rec['reason'])}</p>" if data["caps"] == [None] else
         f"<p class='note'><b>Recommended cap: {fmt(rec['cap']) if rec['cap'] is not None else 'none'}</b>. "
         f"{fmt(rec['reason'])}</p>"),
        "<h2>Capacity (largest load meeting the SLO, every lower load meeting it too)</h2>",
        table(["cap", "max load", "goodput (req/s)", "output tokens/s", "limit"], cap_rows, text_cols=(4,)),
        search_section(data),
    ]
    for title, path in imgs:
        parts.append(f"<h2>{title}</h2>{img_tag(path, title)}")
    parts += ["<h2>Points</h2>",
              table(["cap", axis, "TTFT p50", "TTFT p95", "ITL p99", "E2E p99", "tokens/s", "overload", "failed",
                     "goodput", "n", "window (s)", "verdict", "point"], pt_rows, text_cols=(12,)),
              "<p class='sub'>Latencies in ms over each point's steady window (warm-up and drain excluded); "
              f"n = ok requests sent in it; under the verdict, each SLO statistic's estimate [95 % bootstrap "
              f"interval] in ms. A point with fewer than {data.get('min_requests', DEFAULT_MIN_REQUESTS)} "
              f"ok requests or a window under {data.get('min_window_s', DEFAULT_MIN_WINDOW_S):g} s is "
              "inconclusive: neither pass nor fail.</p>",
              "</body></html>"]
    return "\n".join(parts)


def _verdict_cell(p: dict) -> str:
    """pass / fail (why) / inconclusive (why) / incomplete (error)."""
    if not p.get("complete"):
        return f"<span class='bad'>incomplete</span> {fmt(p.get('error'))}"
    why = fmt("; ".join(p.get("slo_failures") or []))
    ci = (p.get("evidence") or {}).get("ci") or {}
    ci_txt = ("<br><span class='sub'>" + fmt("; ".join(f"{k} {interval_text(t)}" for k, t in ci.items()))
              + "</span>") if ci else ""
    if p.get("verdict") == "inconclusive" or p.get("inconclusive"):
        return f"<b>inconclusive</b> {why}{ci_txt}"
    return ("pass" if p.get("meets_slo") else f"<span class='bad'>fail</span> {why}") + ci_txt


def _failure_cell(p: dict) -> str:
    """Failed share of the point's attempts; its cause when failures dominate."""
    f = p.get("failures") or {}
    if not f.get("attempts"):
        return fmt(None)
    share = f"{f.get('failed_share', 0.0):.1%}"
    top = (f.get("top") or [{}])[0].get("key")
    if f.get("inconclusive"):
        return f"<span class='bad'>{share} inconclusive</span> {fmt(top)}"
    return f"{share} {fmt(top)}" if f.get("dominates") else share


def _failure_banner(data: dict) -> str:
    """When failures decided any point, or points lacked evidence: the first statements of the page."""
    parts = []
    lines = failure_lines(data)
    if lines:
        inconclusive = sum(1 for p in data["points"] if _by_failures(p))
        head = (f"{inconclusive} of {len(data['points'])} points inconclusive: failures, not the server's capacity"
                if inconclusive else "Points where failures dominate")
        parts.append(f"<div class='fail'>{fmt(head)}<ul>" + "".join(f"<li>{fmt(x)}</li>" for x in lines)
                     + "</ul></div>")
    few = inconclusive_lines(data)
    if few:
        head = (f"{len(few)} of {len(data['points'])} points inconclusive: too little evidence to judge "
                "(rerun them longer: --extend-inconclusive or a longer --duration)")
        parts.append(f"<div class='note'><b>{fmt(head)}</b><ul>" + "".join(f"<li>{fmt(x)}</li>" for x in few)
                     + "</ul></div>")
    return "".join(parts)


def search_section(data: dict) -> str:
    """``--search``: per cap the boundary with its interval, cliff warnings and every probe (empty without)."""
    search = data.get("search")
    if not search:
        return ""
    unit = "users" if search["axis"] == "users" else "req/s"
    o = search["options"]
    step = load_text(o["resolution"], "users") if search["axis"] == "users" else f"{o['resolution']:.0%} of the load"
    parts = ["<h2>Search: the highest load within the SLO</h2>",
             f"<p class='sub'>Bracketing from {load_text(o['start'], search['axis'])} by doubling (at most "
             f"{o['max_load']:g}), then "
             f"bisection to {step}. Each probe is judged by {o['confidence']:.0%} bootstrap intervals of the SLO "
             f"statistics ({o['resamples']} resamples of the steady window's requests): pass when the upper end is "
             f"within the bound, fail when the lower end is above it, otherwise repeated once and judged on both "
             f"runs' requests, then by the estimate. Cliff: a statistic growing more than {o['cliff_factor']:g}x "
             f"over one step.</p>"]
    for c in search["caps"]:
        who = "the target" if c["cap"] is None else f"cap {c['cap']}"
        lo, hi = c["interval"]
        if c["boundary"] is None:
            head = f"{who}: no load probed meets the SLO"
        elif hi is None:
            head = f"{who}: at least {lo:g} {unit} (every load probed met the SLO)"
        else:
            head = f"{who}: {load_text(lo, search['axis'])}; the limit lies in [{lo:g}, {hi:g}) {unit}"
        parts.append(f"<p class='note'><b>{fmt(head)}</b> · {len(c['probes'])} probes in {c['wall_s']:.0f} s · "
                     f"{fmt(c['limiting'])}</p>")
        if c["cliffs"]:
            parts.append("<div class='fail'>" + "<br>".join(fmt(x["text"]) for x in c["cliffs"]) + "</div>")
        rows = []
        for i, p in enumerate(c["probes"], 1):
            terms = "; ".join(f"{k} {interval_text(t)} vs {t['bound_ms']:g} ({t['verdict']})" for k, t in p["terms"].items())
            verdict = p["verdict"] if p["verdict"] == "pass" else f"<span class='bad'>{fmt(p['verdict'])}</span>"
            rows.append([str(i), f"{p['load']:g}", verdict, fmt(terms or "; ".join(p["failures"]) or None),
                         fmt(p["decided_by"] + (" (repeated)" if p["repeated"] else "")), f"{p['wall_s']:.0f}"])
        parts.append(table(["#", unit, "verdict", "estimate [interval] ms vs bound", "decided by", "s"], rows,
                           text_cols=(3, 4)))
    return "\n".join(parts)
