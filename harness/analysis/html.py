"""report.html: one self-contained file (images inlined as base64 PNG, inline CSS, no scripts).

Order: the failure headline (when failures dominate, :mod:`harness.analysis.failures`), headline
numbers, latency table, outcomes and failure causes, plots, then the definitions appendix taken from
the metric dictionary (:data:`harness.metrics.METRICS`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from harness import metrics as m
from harness.analysis.clocks import html as clock_html
from harness.analysis.frame import GAP_METRICS, REQUEST_METRICS
from harness.analysis.summary import run_state

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.card{border:1px solid #ddd;border-radius:8px;padding:.6em 1em;min-width:9em}
.card .v{font-size:1.5em;font-weight:600} .card .k{color:#666;font-size:.85em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:right} th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left}
td.text,th.text{text-align:left;max-width:48em} td code,p code{background:#f3f3f3;padding:0 .2em;border-radius:3px}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.note{background:#f8f8e8;border-left:4px solid #cc9;padding:.5em 1em}
.bad{color:#b00} .good{color:#070}
.fail{background:#fbeaea;border-left:4px solid #b00;padding:.6em 1em;font-weight:600}
"""


def img_tag(path: Path, alt: str) -> str:
    """An <img> with the PNG inlined as a data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def fmt(v: object, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:
            return "–"
        return f"{v:,.{digits}f}" if abs(v) >= 1 or v == 0 else f"{v:.{max(digits, 3)}g}"
    if isinstance(v, int):
        return f"{v:,}"
    return escape(str(v))


def cards(items: Iterable[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{v}</div><div class="k">{escape(k)}</div></div>' for k, v in items) + "</div>"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], text_cols: Sequence[int] = ()) -> str:
    """An HTML table; cells are HTML already. Numbers align right; ``text_cols`` (indexes) align left."""
    h = "".join(f"<th class='text'>{escape(x)}</th>" if i in text_cols else f"<th>{escape(x)}</th>"
                for i, x in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td class='text'>{c}</td>" if i in text_cols else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def run_card_value(d: m.MetricDef, v: object) -> str:
    """A run metric on a card: fractions as percent, per-second rates to 2 decimals, else :func:`fmt`."""
    if d.unit == "fraction":
        return f"{(v or 0):.2%}"  # type: ignore[str-format]
    return fmt(v, 2) if d.unit.endswith("/s") and d.unit != "tokens/s" else fmt(v)


def headline_cards(s: dict) -> str:
    """The run metrics declared with a ``card`` caption (harness.metrics), then the latency percentiles."""
    run = [(d.card, run_card_value(d, s.get(d.name))) for d in m.run_metrics() if d.card]
    return cards([
        *run,
        ("TTFT p50 / p99 (ms)", f"{fmt(s.get('ttft_p50_ms'))} / {fmt(s.get('ttft_p99_ms'))}"),
        ("ITL p50 / p99 (ms)", f"{fmt(s.get('itl_p50_ms'))} / {fmt(s.get('itl_p99_ms'))}"),
        ("TPOT p50 (ms)", fmt(s.get("tpot_p50_ms"))),
        ("E2E p50 / p99 (ms)", f"{fmt(s.get('e2e_p50_ms'))} / {fmt(s.get('e2e_p99_ms'))}"),
    ])


def latency_table(s: dict) -> str:
    """The latency table; with a ``percentiles`` entry (harness report), a note saying how percentiles were
    computed, and a method column when some are HdrHistogram's (large runs)."""
    stats = ("mean", "p50", "p90", "p95", "p99", "p99_9", "max")
    pct = s.get("percentiles") or {}
    methods = pct.get("method") or {}
    show = "hdr" in methods.values()
    rows = []
    for name in (*REQUEST_METRICS, *GAP_METRICS):
        if not s.get(f"{name}_count"):
            continue
        unit = m.METRICS[name].unit
        label = name if unit == "ms" else f"{name} ({unit})"
        rows.append([label, fmt(s.get(f"{name}_count"))] + [fmt(s.get(f"{name}_{st}_{unit}"), 2) for st in stats]
                    + ([METHOD_LABELS.get(methods.get(name, "exact"), "exact")] if show else []))
    note = f"<p class='sub'>Percentiles: {escape(pct['text'])}.</p>" if pct.get("text") else ""
    return note + table(["metric (ms)", "count", "mean", "p50", "p90", "p95", "p99", "p99.9", "max"]
                        + (["percentiles"] if show else []), rows, text_cols=(9,) if show else ())


#: how a distribution's percentiles were computed, as the latency tables say it
METHOD_LABELS = {"exact": "exact", "hdr": "HdrHistogram (3 digits)"}


def turn_table(s: dict) -> str:
    """TTFT by session turn (summary ``ttft_by_turn``), with the mean cached share; empty without turns."""
    by_turn = s.get("ttft_by_turn") or {}
    if not by_turn:
        return ""
    rows = [[f"turn {t}"] + [fmt(d.get(k), 2) for k in ("count", "mean", "p50", "p90", "p95", "p99", "max")]
            + [fmt(d.get("cached_share_mean"), 3)] for t, d in by_turn.items()]
    return ("<h2>TTFT by session turn (ok requests, steady window)</h2>"
            + table(["turn", "count", "mean", "p50", "p90", "p95", "p99", "max", "cached share"], rows, text_cols=(0,)))


_ROLE = re.compile(r":(?:func|data|mod|class|meth|attr):`~?([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")
_EMPH = re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])")


def rst_html(text: str) -> str:
    """A docstring's inline reST as HTML: ``x`` and :role:`x` -> <code>x</code>, *x* -> <em>x</em>.

    A role naming a dictionary metric's function (:func:`ttft_ms`) shows the metric's name (ttft)."""
    by_fn = {getattr(d.fn, "__name__", ""): d.name for d in m.METRICS.values()}
    out, pos = [], 0
    for mt in re.finditer(f"{_ROLE.pattern}|{_LITERAL.pattern}", text):
        out.append(_EMPH.sub(r"<em>\1</em>", escape(text[pos:mt.start()])))
        role, lit = mt.group(1), mt.group(2)
        code = by_fn.get(role.rsplit(".", 1)[-1], role) if role else lit
        out.append(f"<code>{escape(code)}</code>")
        pos = mt.end()
    out.append(_EMPH.sub(r"<em>\1</em>", escape(text[pos:])))
    return "".join(out)


def definitions_appendix() -> str:
    """Every dictionary metric with its unit, scope and definition (the docstring, reST rendered, left-aligned)."""
    rows = [[f"<code>{escape(d.name)}</code>", escape(d.unit), escape(d.scope), rst_html(d.definition)]
            for d in m.METRICS.values()]
    return ("<h2>Appendix: metric definitions</h2>"
            + table(["metric", "unit", "scope", "definition"], rows, text_cols=(1, 2, 3)))


def client_bound_note(meta: dict) -> str:
    """A warning when run.json says the load generator was the bottleneck (``client_bound``)."""
    if not meta.get("client_bound"):
        return ""
    reasons = "; ".join(str(r) for r in meta.get("client_bound_reasons") or []) or "no reason recorded"
    return ("<p class='note' style='border-left:4px solid #c0392b;padding-left:8px'><b>Client-bound:</b> the load "
            f"generator was saturated or above its calibrated limit, so timings are not trustworthy ({escape(reasons)}).</p>")


def run_state_note(meta: dict) -> str:
    """A banner when run.json says the run did not end normally (interrupted, or incomplete)."""
    state = run_state(meta)
    if not state:
        return ""
    return f"<p class='note' style='border-left:4px solid #c0392b;padding-left:8px'><b>{escape(state)}</b></p>"


def failure_note(summary: dict) -> str:
    """The failure headline as the page's first statement, when failures dominate; else ''."""
    head = (summary.get("failures") or {}).get("headline")
    return f"<p class='fail'>{escape(head)}</p>" if head else ""


def failure_table(summary: dict) -> str:
    """Most common failure causes (key, requests), when there were failures."""
    top = (summary.get("failures") or {}).get("top") or []
    if not top:
        return ""
    return "<h3>Failure causes</h3>" + table(["cause", "requests"], [[escape(c["key"]), fmt(c["count"])] for c in top])


def plural(n: float, word: str) -> str:
    """``"1 user"``, ``"8 users"``, ``"0.5 users"`` (``n`` formatted with ``:g``)."""
    return f"{n:g} {word}" if n == 1 else f"{n:g} {word}s"


def users_text(users: object) -> str | None:
    """run.json's ``users`` (a count, or ``{class: count}``) as text: ``8 (ChatStreamUser)``."""
    if isinstance(users, dict):
        if not users:
            return None
        total = sum(int(v) for v in users.values())
        return f"{total} ({', '.join(f'{k}: {v}' if len(users) > 1 else k for k, v in users.items())})"
    return None if users in (None, "") else str(users)


def slo_label(key: str, bound: float) -> str:
    """``("ttft_p95_ms", 500)`` -> ``"TTFT p95 <= 500 ms"`` (open loop: ``ttft_intended_*`` -> "from intended start")."""
    metric, stat, _unit = key.rsplit("_", 2) if key.count("_") >= 2 else (key, "", "ms")
    if stat == "9" and metric.endswith("_p99"):  # p99_9 split as (..._p99, 9)
        metric, stat = metric.removesuffix("_p99"), "p99.9"
    intended = metric.endswith("_intended")
    name = metric.removesuffix("_intended").upper()
    return f"{name} {stat} <= {bound:g} ms" + (" (from intended start)" if intended else "")


def slo_text(summary: dict, terms: dict[str, tuple[str, float]] | None) -> str:
    """The SLO as the user wrote it, with the measured value: ``TTFT p95 <= 500 ms (measured 312.4 ms, met)``.

    ``terms`` are :func:`harness.analysis.summary.slo_spec`'s; without them (only per-request bounds
    known) each bound reads ``TTFT <= 500 ms per request``. Goodput counts the requests meeting every
    bound either way."""
    if terms:
        out = []
        for key, bound in terms.values():
            v = summary.get(key)
            verdict = "" if v is None else f" (measured {v:,.1f} ms, {'met' if v <= bound else 'missed'})"
            out.append(slo_label(key, bound) + verdict)
        return ", ".join(out)
    slo = summary.get("slo")
    if not slo:
        return "none given (goodput not computed)"
    return ", ".join(f"{k.removesuffix('_ms').upper()} <= {v:g} ms per request" for k, v in slo.items())


def outcome_table(steady: dict[str, int], whole: dict[str, int]) -> str:
    """Requests per outcome class (classes with none in either column left out), with the whole
    run's share of its requests; a note names the classes that had none."""
    total = sum(whole.values())
    rows = [[k, fmt(steady.get(k, 0)), fmt(v), f"{v / total:.1%}" if total else "–"]
            for k, v in whole.items() if v or steady.get(k)]
    none = [k for k, v in whole.items() if not v and not steady.get(k)]
    note = f"<p class='sub'>No requests: {escape(', '.join(none))}.</p>" if none else ""
    return table(["outcome", "steady window", "whole run", "share of whole run"], rows) + note


#: summary["tokens"] key -> (label, where the count comes from); the rules of harness.metrics
TOKEN_ROWS: dict[str, tuple[str, str]] = {
    "output_total": ("output tokens (used for tokens/s)",
                     "per request the server-reported count when the server gives one, else the client's event count"),
    "output_server_total": ("output tokens, server-reported",
                            "the stream's final details (TGI) or usage (OpenAI); counts the end-of-sequence token "
                            "when the model stopped on it, which arrives as no visible token event"),
    "output_events_total": ("output tokens in token events (client)",
                            "tokens carried by the token events the client received; one per event unless the "
                            "server bundles several"),
    "output_retokenized_total": ("output tokens, client re-tokenized",
                                 "the generated text re-tokenized by the client (only when a client tokenizer is "
                                 "set; else 0)"),
    "input_total": ("input tokens",
                    "server-reported prompt length (as the server tokenized it: chat template and special tokens "
                    "included) when given, else "
                    "the client's estimate: round(1.3 x words) of the prompt text, approximate"),
    "compared": ("requests compared", "ok requests with a server-reported output count"),
    "mismatched": ("requests mismatched",
                   "server count != client count; server = client + 1 on an end-of-sequence stop is no mismatch"),
}


def token_table(tok: dict) -> str:
    """Token accounting with a plain-words source for every count (keys not in :data:`TOKEN_ROWS` as is)."""
    rows = [[escape(TOKEN_ROWS.get(k, (k, ""))[0]), fmt(v), escape(TOKEN_ROWS.get(k, (k, ""))[1])]
            for k, v in tok.items()]
    return table(["quantity", "tokens", "where it comes from"], rows, text_cols=(2,))


def render_report(summary: dict, full_outcomes: dict[str, int], plots: Sequence[tuple[str, Path]],
                  meta: dict, window_note: str, slo_terms: dict[str, tuple[str, float]] | None = None) -> str:
    """The whole report page; ``slo_terms``: the SLO as given (:func:`harness.analysis.summary.slo_spec`)."""
    title = f"stream-harness report: {meta.get('scenario') or meta.get('run_id') or 'run'}"
    facts = [("target", meta.get("host") or meta.get("target")), ("users", users_text(meta.get("users"))),
             ("scenario", meta.get("scenario")), ("run dir", meta.get("run_dir"))]
    sub = " · ".join(f"{k}: {escape(str(v))}" for k, v in facts if v not in (None, ""))
    slo_txt = slo_text(summary, slo_terms)
    tok = summary.get("tokens") or {}
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        run_state_note(meta),
        failure_note(summary),
        f"<p class='sub'>{sub}</p>",
        client_bound_note(meta),
        f"<p class='note'>Headline numbers cover the steady window: {escape(window_note)}. "
        f"{fmt(summary.get('requests'))} requests in it, {fmt(summary.get('ok'))} ok; "
        f"measurement window {fmt(summary.get('measurement_window_s'), 1)} s. SLO: {escape(slo_txt)}.</p>",
        headline_cards(summary),
        "<h2>Latency (ok requests, steady window)</h2>", latency_table(summary), turn_table(summary),
        "<h2>Outcomes</h2>",
        outcome_table(summary.get("outcomes") or {}, full_outcomes),
        failure_table(summary),
        (f"<p>Streams without [DONE] (ok, ended after their finish_reason): {fmt(summary.get('done_missing'))}</p>"
         if summary.get("done_missing") else ""),
        "<h2>Token accounting (ok requests, steady window)</h2>",
        token_table(tok),
        "<h2>Plots</h2>",
        clock_html(meta.get("clock_sync")),  # distributed runs: how well the time series align
    ]
    for title_, path in plots:
        parts.append(f"<h3>{escape(title_)}</h3>{img_tag(path, title_)}")
    parts.append(definitions_appendix())
    parts.append("</body></html>")
    return "\n".join(parts)
