"""How well the clocks of a distributed run were aligned: the ``clock_sync`` entry of run.json, shown
beside the per-second series (report.html, summary.md, the end-of-run console block).

``clock_sync`` (written by harness.locust.clock_sync on the master)::

    {"mode": "auto", "reference": "master CLOCK_MONOTONIC", "warn_ms": 5.0, "max_uncertainty_ns": 61000,
     "schedule_start_ns": 81234567890123,  # open loop: the arrival schedule's zero on the master's clock
     "workers": {"w0": {"offset_ns": 3500012345, "uncertainty_ns": 61000, "best_rtt_ns": 118000,
                        "exact": false, "aligned": true, "records": 812, "unaligned_records": 0,
                        "drift_ppm": null, "hostname": "...", "pid": 123, ...}, ...},
     "warnings": ["..."]}

``offset_ns`` is master clock minus worker clock (added to the worker's times); every record of a
worker is on the master's timeline within +- ``uncertainty_ns`` (half the best round trip of the
estimates applied). A warning is raised when a worker's uncertainty exceeds ``warn_ms``, when its
observed drift would move its offset by more than ``warn_ms`` over a minute, or when some of its
records arrived before any clock sample (left on its own clock).
"""

from __future__ import annotations

from html import escape
from typing import Any

#: default warning threshold of a worker's clock uncertainty, ms (``--clock-warn-ms``): the
#: per-second series use 1000 ms bins; 5 ms is the upper end of what a datacenter network gives
DEFAULT_WARN_MS = 5.0


def clock_warnings(clock: dict[str, Any] | None) -> list[str]:
    """One line per problem of ``clock`` (see the module docstring); [] when all is well or no entry."""
    if not clock or clock.get("mode") == "off":
        return []
    warn_ms = float(clock.get("warn_ms") or DEFAULT_WARN_MS)
    out = []
    for node, w in (clock.get("workers") or {}).items():
        u = w.get("uncertainty_ns")
        if not w.get("aligned"):
            out.append(f"{node}: no clock sample from the master; its times are on its own clock")
            continue
        if u is not None and u / 1e6 > warn_ms:
            out.append(f"{node}: clock uncertainty {u / 1e6:.2f} ms exceeds {warn_ms:g} ms "
                       "(per-second series and windows may mix its requests into neighbouring bins)")
        drift = w.get("drift_ppm")
        if drift is not None and abs(drift) * 60e-3 > warn_ms:  # ppm * 60 s = us; / 1000 = ms
            out.append(f"{node}: clock drift {drift:+.1f} ppm moves its offset by {abs(drift) * 0.06:.2f} ms a minute")
        if w.get("unaligned_records"):
            out.append(f"{node}: {w['unaligned_records']} records arrived before its first clock sample "
                       "(left on its own clock)")
    return out


def _ms(ns: Any, digits: int = 3) -> str:
    return "-" if ns is None else f"{int(ns) / 1e6:.{digits}f}"


def _rows(clock: dict[str, Any]) -> list[list[str]]:
    rows = []
    for node, w in (clock.get("workers") or {}).items():
        off = w.get("offset_ns")
        rows.append([node, str(w.get("hostname") or "-"), "exact (same clock)" if w.get("exact") else
                     ("-" if off is None else f"{int(off) / 1e9:+.6f}"), _ms(w.get("uncertainty_ns")),
                     _ms(w.get("best_rtt_ns")), str(w.get("records", 0)),
                     "-" if w.get("drift_ppm") is None else f"{w['drift_ppm']:+.2f}"])
    return rows


HEADER = ["worker", "host", "offset (s, master - worker)", "uncertainty (ms, +-)", "best round trip (ms)",
          "records", "drift (ppm)"]


def console_lines(clock: dict[str, Any] | None) -> list[str]:
    """The end-of-run console lines: one per worker, then the warnings."""
    if not clock or not clock.get("workers"):
        return []
    lines = [f"  clocks ({clock.get('mode')}, onto the master's): " + "; ".join(
        f"{r[0]} offset {r[2]} s +- {r[3]} ms" for r in _rows(clock))]
    lines += [f"  WARNING clocks: {w}" for w in clock.get("warnings") or clock_warnings(clock)]
    return lines


def markdown(clock: dict[str, Any] | None) -> list[str]:
    """summary.md's clock section (empty when the run had no distributed workers)."""
    if not clock or not clock.get("workers"):
        return []
    lines = ["", f"Clock alignment ({clock.get('mode')}): worker times mapped onto the master's clock; per-second "
             "series and windows are exact to within each worker's uncertainty.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(clock)]
    lines += ["", *[f"**Warning: {w}**" for w in clock.get("warnings") or clock_warnings(clock)]]
    return lines


def html(clock: dict[str, Any] | None) -> str:
    """report.html's clock note and table (beside the per-second series); '' without workers."""
    if not clock or not clock.get("workers"):
        return ""
    u = clock.get("max_uncertainty_ns")
    warns = clock.get("warnings") or clock_warnings(clock)
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in _rows(clock))
    note = (f"<p class='note'>Clocks ({escape(str(clock.get('mode')))}): every worker's times are mapped onto the "
            f"master's clock; the time series below are aligned to within +- {_ms(u)} ms.</p>")
    warn = "".join(f"<p class='fail'>Clock warning: {escape(w)}</p>" for w in warns)
    return f"<h3>Clock alignment</h3>{note}{warn}<table><tr>{head}</tr>{body}</table>"
