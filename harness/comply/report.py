"""comply.html: the verdict, its reasons and marks, the ruleset, and one row per run (self-contained, no scripts)."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from harness.analysis.html import CSS, fmt, table

__all__ = ["write_report"]


def _ms(v: object) -> str:
    return "–" if not isinstance(v, int | float) or math.isnan(v) else ("∞" if math.isinf(v) else fmt(float(v)))


def write_report(result: dict, path: Path) -> Path:
    """Write ``comply.json``'s content ``result`` as an HTML page at ``path``."""
    rules = result["ruleset"]
    p = rules["percentile"]
    runs = result["runs"]
    if result["search"]:
        best = result["max_valid_rate"]
        head = (f"Highest VALID Poisson rate: {best:g} requests/s" if best is not None
                else "No VALID rate found")
        ok = best is not None
    else:
        ok = bool(runs) and runs[-1]["valid"]
        head = f"Result: {'VALID' if ok else 'INVALID'} at {runs[-1]['rate']:g} requests/s" if runs else "No run"
    parts = [f"<h1>{escape(head)}</h1>",
             f'<p class="sub">ruleset <code>{escape(rules["name"])}</code> against {escape(result["target"])}: '
             f"TTFT p{p:g} &le; {rules['ttft_ms']:g} ms, TPOT p{p:g} &le; {rules['tpot_ms']:g} ms, "
             f"min duration {rules['min_duration_s']:g} s, min queries {rules['min_queries']}, early stopping at "
             f"{rules['confidence']:.0%} confidence</p>"]
    for mark in result.get("marks", []):
        parts.append(f'<p class="fail">{escape(mark)}</p>')
    if runs and not runs[-1]["valid"] and not result["search"]:
        parts.append("<h2>Reasons</h2><ul>" + "".join(f"<li>{escape(r)}</li>" for r in runs[-1]["reasons"]) + "</ul>")
    rows = []
    for r in runs:
        t, o = r.get("ttft", {}), r.get("tpot", {})
        rows.append([f"{r['rate']:g}", f'<b class="{"good" if r["valid"] else "bad"}">{r["verdict"]}</b>',
                     fmt(r.get("queries")), fmt(r.get("duration_s")), _ms(t.get("p")), fmt(t.get("over_limit")),
                     _ms(o.get("p")), fmt(o.get("over_limit")),
                     "yes" if t.get("early_stopping_passed") and o.get("early_stopping_passed") else "no",
                     escape("; ".join(r["reasons"])) or "–"])
    parts.append("<h2>Runs</h2>" + table(
        ["rate (req/s)", "verdict", "queries", "scheduled over (s)", f"TTFT p{p:g} (ms)", "TTFT over",
         f"TPOT p{p:g} (ms)", "TPOT over", "early stopping", "reasons"], rows, text_cols=[9]))
    parts.append('<p class="note">Latency counts from each query\'s scheduled (Poisson) send time; TPOT = '
                 "(latency - TTFT) / (output tokens - 1). This checks an endpoint against MLPerf Inference's "
                 "published server-scenario latency constraints; it is not an MLPerf submission.</p>")
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(head)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    path.write_text(html, encoding="utf-8")
    return path
