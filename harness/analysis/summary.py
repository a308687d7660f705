"""summary.json / summary.md: every metric with its percentiles, counts by outcome, token accounting.

Keys follow the dictionary's convention ``<metric>_<stat>_<unit>`` (``ttft_p95_ms``, ``itl_p99_ms``,
``output_tokens_p50_tokens``) plus the run metrics under their own names (``output_tokens_per_s``,
``request_throughput``, ``goodput``, ``overload_rate``, ``error_rate``, ``drops``,
``token_mismatch_rate``, ``failed_share``, ``done_missing``). Latency distributions cover ok requests
only; failures are counted under ``outcomes`` and their causes under ``failures`` (the rule of
:mod:`harness.analysis.failures`: when failures dominate, ``failures.headline`` is summary.md's
first line). Every value comes from a :mod:`harness.metrics` function: per-request values from the
frame (one dictionary call per record), run values from the dictionary's run functions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness import metrics as m
from harness.analysis.clocks import markdown as clock_markdown
from harness.analysis.failures import cause_counts, failure_verdict, scan_file
from harness.analysis.frame import GAP_METRICS, OUTCOMES, REQUEST_METRICS, LightRecord, RunFrame, build_frame
from harness.analysis.steady import SteadyWindow, detect
from harness.records import RequestRecord

STATS: tuple[str, ...] = ("mean", "min", "max", *m.PERCENTILE_KEYS.values())
#: session turns whose TTFT (``ttft_by_turn.<turn>.<stat>``, ms) rules may name
TURN_KEYS = 32


#: above this many values, percentiles come from one multi-point partition instead of a full sort
PARTITION_MIN = 1_000_000


class _IndexProbe:
    """A stand-in sequence that records which ranks :func:`harness.metrics.percentile` reads."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: set[int] = set()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> float:
        self.seen.add(int(i) % self.n)
        return 0.0


def dist(values: np.ndarray) -> dict[str, float | int]:
    """Like :func:`harness.metrics.distribution` (same keys, exact percentiles via
    :func:`harness.metrics.percentile`) for a numpy array; NaN ("not defined") values are ignored.

    Large arrays are not fully sorted: the ranks the dictionary's percentile function reads are found
    first (with a probe), one ``np.partition`` puts exactly those ranks in sorted position, and the
    same function then reads them - the result is identical to sorting.
    """
    v = np.asarray(values, dtype=np.float64)
    nan = np.isnan(v)
    if nan.any():
        v = v[~nan]
    n = len(v)
    if n == 0:
        return {"count": 0}
    mean = float(v.mean())  # before reordering, so both paths sum in the same order
    if n < PARTITION_MIN:
        v = np.sort(v)
    else:
        probe = _IndexProbe(n)
        for p in m.PERCENTILES:
            m.percentile(probe, p)
        v = np.partition(v, sorted(probe.seen | {0, n - 1}))
    out: dict[str, float | int] = {"count": int(n), "mean": mean,
                                   "min": float(v[0]), "max": float(v[-1])}
    for p in m.PERCENTILES:
        out[m.PERCENTILE_KEYS[p]] = float(m.percentile(v, p))
    return out


def _flatten(prefix: str, unit: str, d: dict[str, float | int], out: dict) -> None:
    out[f"{prefix}_count"] = d.get("count", 0)
    for stat in STATS:
        out[f"{prefix}_{stat}_{unit}"] = d.get(stat)


def window_mask(frame: RunFrame, steady_window: tuple[int, int] | None) -> np.ndarray:
    """Rows sent inside ``[start_ns, end_ns)``; all rows when no window is given."""
    send = frame.cols["send_ns"]
    if steady_window is None:
        return np.ones(len(send), dtype=bool)
    start, end = steady_window
    return (send >= start) & (send < end)


def run_value(key: str, records: Sequence[RequestRecord], slo_met: np.ndarray, slo: m.Slo | None) -> float | None:
    """One run key computed by the dictionary over ``records`` (``slo_met[i]`` = ``slo.met_by(records[i])``)."""
    window = m.measurement_window_s(records)
    if key.startswith("error_rate_"):
        return m.error_rate_by_class(records).get(key.removeprefix("error_rate_"))
    met = [r for r, f in zip(records, slo_met.tolist(), strict=True) if f] if slo is not None else None
    return m.METRICS[key].summary_value(records, window, met)  # type: ignore[return-value]


def run_metrics(records: Sequence[RequestRecord], slo_met: np.ndarray, slo: m.Slo | None) -> dict:
    """Every run metric of the dictionary (:func:`harness.metrics.run_metrics`) over ``records``, plus
    ``error_rate_<class>``; ``slo_met[i]`` is ``slo.met_by(records[i])`` (goodput is None without an SLO)."""
    window = m.measurement_window_s(records)
    met = [r for r, f in zip(records, slo_met.tolist(), strict=True) if f] if slo is not None else None
    out: dict = {d.name: d.summary_value(records, window, met) for d in m.run_metrics()}
    for k, v in m.error_rate_by_class(records).items():
        out[f"error_rate_{k}"] = v
    return out


def summarize_frame(frame: RunFrame, slo: m.Slo | None = None,
                    steady_window: tuple[int, int] | None = None) -> dict:
    """Summary of the requests of ``frame`` sent inside ``steady_window`` (all of them when None)."""
    slo = slo if slo is not None else frame.slo
    mask = window_mask(frame, steady_window)
    sub = frame if mask.all() else frame.subset(mask)
    cols = sub.cols
    ok = cols["ok"]
    out: dict = {"outcomes": m.outcome_counts(sub.records)}
    for name in REQUEST_METRICS:
        _flatten(name, m.METRICS[name].unit, dist(cols[name][ok]), out)
    done: dict[int, dict] = {}
    for name in GAP_METRICS:  # itl_per_token may share itl's array: one sort
        g = sub.gaps[name]
        d = done.setdefault(id(g), dist(g))
        _flatten(name, m.METRICS[name].unit, d, out)
    _flatten("output_tokens", "tokens", dist(cols["output_tokens"][ok]), out)
    _flatten("input_tokens", "tokens", dist(cols["input_tokens"][ok]), out)
    if "turn" in cols and (cols["turn"] > 0).any():
        out["ttft_by_turn"] = ttft_by_turn(sub)
    out.update(run_metrics(sub.records, cols["slo_met"], slo))
    # token accounting over ok requests
    mism = cols["token_mismatch"][ok]
    out["tokens"] = {
        "output_total": int(np.nansum(cols["output_tokens"][ok])),
        "output_server_total": int(np.nansum(cols["output_tokens_server"][ok])),
        "output_events_total": int(np.nansum(cols["output_tokens_events"][ok])),
        "output_retokenized_total": int(np.nansum(cols["output_tokens_retokenized"][ok])),
        "input_total": int(np.nansum(cols["input_tokens"][ok])),
        "compared": int((~np.isnan(mism)).sum()),
        "mismatched": int(np.nansum(mism)),
    }
    causes, done_missing = failure_facts(sub, steady_window)
    verdict = failure_verdict(out["outcomes"], causes)
    out["failures"] = verdict.as_dict()
    out["failed_share"] = verdict.failed_share
    out["done_missing"] = done_missing
    out["slo"] = _slo_dict(slo)
    out["steady_window"] = None if steady_window is None else {
        "start_ns": int(steady_window[0]), "end_ns": int(steady_window[1])}
    return out


def ttft_by_turn(frame: RunFrame) -> dict[str, dict[str, float | int]]:
    """TTFT by session turn: ``{"<turn>": distribution of ttft (ms) of the ok requests of that turn}`` with
    the mean cached share (:func:`harness.metrics.cached_share`) of those requests when the server
    reported it, turns ascending; empty without session turns. Rule keys: ``ttft_by_turn.2.p95`` (ms; turns
    1 to :data:`TURN_KEYS`)."""
    cols = frame.cols
    turn, ok = cols["turn"], cols["ok"]
    out: dict[str, dict[str, float | int]] = {}
    for t in sorted(set(turn[(turn > 0) & ok].tolist())):
        rows = ok & (turn == t)
        d = dist(cols["ttft"][rows])
        share = cols["cached_share"][rows] if "cached_share" in cols else np.zeros(0)
        if share.size and not np.isnan(share).all():
            d["cached_share_mean"] = float(np.nanmean(share))
        out[str(int(t))] = d
    return out


def failure_facts(frame: RunFrame, steady_window: tuple[int, int] | None = None) -> tuple[dict[str, int], int]:
    """(failure-key counts, ok streams that ended without ``[DONE]``) of the frame's requests.

    From the records when the frame keeps them; a frame read from a file keeps no error texts, so
    its file is scanned for the failed records sent inside ``steady_window``
    (:func:`harness.analysis.failures.scan_file`).
    """
    cols = frame.cols
    recs = frame.records if len(frame) else []
    if recs and not isinstance(recs[0], LightRecord):
        causes: dict[str, int] = cause_counts(recs)
        done_missing = sum(1 for r in recs if r.ok and getattr(r, "done_missing", False))
    elif frame.meta.get("path") and Path(frame.meta["path"]).exists():
        causes, done_missing = scan_file(frame.meta["path"], steady_window)
    else:
        causes, done_missing = {}, 0
    if "done_missing" in cols:  # a frame column, when the frame has one, is exact for this subset
        done_missing = int(np.asarray(cols["done_missing"])[cols["ok"]].astype(bool).sum())
    return causes, done_missing


def analyse(frame: RunFrame, slo: m.Slo | None, steady: bool = True,
            warmup_s: float = 0.0) -> tuple[dict, SteadyWindow | None]:
    """Summary of the detected steady window (whole run when ``steady`` is False or none is detected).

    ``warmup_s`` > 0 always cuts at least that much from the start. ``steady_window_info`` in the
    summary describes the window and whether it was applied.
    """
    oc = frame.cols["outcome"]
    live = oc != OUTCOMES.index("dropped")
    window = detect(frame.cols["send_ns"][live], frame.cols["end_ns"][live], warmup_s,
                    frame.cols["send_ns"][oc == OUTCOMES.index("cancelled")])
    applied = window is not None and ((steady and window.detected) or warmup_s > 0)
    summary = summarize_frame(frame, slo, window.as_tuple() if applied else None)  # type: ignore[union-attr]
    summary["steady_window_info"] = None if window is None else {**window.to_dict(), "applied": applied}
    return summary, window


def _slo_dict(slo: m.Slo | None) -> dict | None:
    if slo is None:
        return None
    return {k: getattr(slo, k) for k in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms") if getattr(slo, k) is not None}


def summarize(records: Sequence[RequestRecord] | RunFrame, slo: m.Slo | None = None,
              steady_window: tuple[int, int] | None = None) -> dict:
    """Flat summary dict of ``records`` (or an already built frame).

    ``steady_window`` = ``(start_ns, end_ns)``: only requests sent inside it count. ``goodput`` is
    None without an SLO.
    """
    frame = records if isinstance(records, RunFrame) else build_frame(records, slo)
    if isinstance(records, RunFrame) and slo is not None and frame.slo != slo:
        raise ValueError("frame was built with a different SLO; rebuild it with this one")
    return summarize_frame(frame, slo, steady_window)


def parse_slo(text: str | None) -> m.Slo | None:
    """``"ttft_p95=500,itl_p99=50"`` or ``"ttft=500,e2e=3000"`` -> :class:`Slo` (ms bounds per request).

    A percentile suffix is accepted for readability: the bound applies to each request (goodput =
    requests meeting every bound); the percentile is what sweeps and capacity plans check against it.
    """
    if not text:
        return None
    bounds: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"bad SLO term {part!r}: expected NAME=MS, e.g. ttft_p95=500")
        name, _, value = part.partition("=")
        base = slo_metric(name.strip())[0]
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"bad SLO value in {part!r}: not a number") from None
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"bad SLO value in {part!r}: must be a positive number of ms")
        bounds[f"{base}_ms"] = v
    return m.Slo(**bounds) if bounds else None


_SLO_BASES = ("ttft", "itl", "tpot", "e2e")


def slo_metric(name: str) -> tuple[str, str]:
    """``"ttft_p95"`` -> ``("ttft", "p95")``; ``"itl"`` -> ``("itl", "p99")`` (default percentile per metric)."""
    base, _, stat = name.lower().removesuffix("_ms").partition("_")
    if base not in _SLO_BASES:
        raise ValueError(f"unknown SLO metric {name!r}: use one of {', '.join(_SLO_BASES)} "
                         f"with an optional percentile, e.g. ttft_p95")
    if stat and stat not in m.PERCENTILE_KEYS.values() and stat not in ("mean", "max"):
        raise ValueError(f"unknown statistic {stat!r} in SLO term {name!r}: use one of "
                         f"{', '.join(m.PERCENTILE_KEYS.values())}, mean, max")
    return base, stat or "p95"


def slo_spec(text: str | None, intended: bool = False) -> dict[str, tuple[str, float]]:
    """``"ttft_p95=500,itl_p99=50"`` -> ``{"ttft": ("ttft_p95_ms", 500.0), "itl": ("itl_p99_ms", 50.0)}``.

    ``intended`` (open loop): TTFT and E2E are judged from the intended start
    (``ttft_intended_*``, ``e2e_intended_*``), so a saturated client cannot hide queueing.
    """
    out: dict[str, tuple[str, float]] = {}
    if not text:
        return out
    parse_slo(text)  # validates
    for part in text.split(","):
        if part.strip():
            name, _, value = part.partition("=")
            base, stat = slo_metric(name.strip())
            key = f"{base}_intended" if intended and base in ("ttft", "e2e") else base
            out[base] = (f"{key}_{stat}_ms", float(value))
    return out


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.1f}"
    return str(v)


def run_state(meta: dict | None) -> str | None:
    """One line when a run did not end normally, from run.json (or a summary's ``run`` entry): ``interrupted``
    (Ctrl-C or SIGTERM before its end) or ``complete: false`` (a distributed run whose workers' final
    batches did not all arrive); None for a complete run, or for a run.json written before these fields."""
    meta = meta or {}
    if meta.get("interrupted"):
        return "INCOMPLETE: the run was interrupted (Ctrl-C or SIGTERM) before its end; its numbers cover only the part that ran"
    if meta.get("complete") is False:
        return "INCOMPLETE: not every worker's records arrived before the run was finalized"
    return None


def to_markdown(summary: dict, title: str = "Run summary") -> str:
    """summary.md: the run state (when incomplete), the failure headline (when failures dominate),
    headline table, latency table, outcomes, failure causes, token accounting."""
    head = (summary.get("failures") or {}).get("headline")
    lines = [f"**{head}**", ""] if head else []
    if state := run_state(summary.get("run")):
        lines[:0] = [f"**{state}**", ""]
    lines += [f"# {title}", ""]
    sw = summary.get("steady_window_info") or {}
    if sw:
        lines += [f"Steady window: {sw.get('reason', '')} ({_fmt(sw.get('duration_s'))} s).", ""]
    if pct := (summary.get("percentiles") or {}).get("text"):  # harness report: how percentiles were computed
        lines += [f"Percentiles: {pct}.", ""]
    lines += ["| metric | value |", "|---|---|"]
    for d in m.run_metrics():  # the dictionary's run metrics, as declared (label, unit, show)
        v = summary.get(d.name)
        if d.show == "always" or (d.show == "nonzero" and v):
            lines.append(f"| {d.label or d.name} ({d.unit}) | {_fmt(v)} |")
    methods = (summary.get("percentiles") or {}).get("method") or {}
    hdr = "hdr" in methods.values()  # a large run: say per row which percentiles are HdrHistogram's
    lines += ["", "| latency (ms) | count | mean | p50 | p90 | p95 | p99 | p99.9 | max |" + (" percentiles |" if hdr else ""),
              "|---|---|---|---|---|---|---|---|---|" + ("---|" if hdr else "")]
    for name in (*REQUEST_METRICS, *GAP_METRICS):
        d = m.METRICS[name]
        unit = d.unit
        if d.show != "always" and not summary.get(f"{name}_count"):
            continue  # e.g. reasoning and tool-call metrics of a run without either
        row = [_fmt(summary.get(f"{name}_count"))] + [
            _fmt(summary.get(f"{name}_{s}_{unit}")) for s in ("mean", "p50", "p90", "p95", "p99", "p99_9", "max")]
        if hdr:
            row.append("HdrHistogram (3 digits)" if methods.get(name) == "hdr" else "exact")
        lines.append(f"| {name}{'' if unit == 'ms' else f' ({unit})'} | " + " | ".join(row) + " |")
    by_turn = summary.get("ttft_by_turn") or {}
    if by_turn:
        lines += ["", "| TTFT by session turn (ms) | count | mean | p50 | p90 | p95 | p99 | max | cached share |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t, d in by_turn.items():
            lines.append(f"| turn {t} | " + " | ".join(_fmt(d.get(k)) for k in (
                "count", "mean", "p50", "p90", "p95", "p99", "max", "cached_share_mean")) + " |")
    lines += ["", "| outcome | requests |", "|---|---|"]
    for k, v in summary.get("outcomes", {}).items():
        lines.append(f"| {k} | {v} |")
    top = (summary.get("failures") or {}).get("top") or []
    if top:
        lines += ["", "| failure cause | requests |", "|---|---|"]
        lines += [f"| {c['key'].replace('|', '/')} | {c['count']} |" for c in top]
    lines += ["", "| tokens | value |", "|---|---|"]
    for k, v in (summary.get("tokens") or {}).items():
        lines.append(f"| {k} | {v} |")
    lines += clock_markdown(summary.get("clock_sync"))  # distributed runs: the workers' clocks
    return "\n".join(lines) + "\n"


def write_summary(summary: dict, out_dir: str | Path, title: str = "Run summary") -> tuple[Path, Path]:
    """Write summary.json and summary.md into ``out_dir``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    pj, pm = d / "summary.json", d / "summary.md"
    pj.write_text(json.dumps(summary, indent=2, default=_json_default))
    pm.write_text(to_markdown(summary, title))
    return pj, pm


def _json_default(o: object) -> object:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def run_keys() -> tuple[str, ...]:
    """The summary's run-level keys: the dictionary's run metrics (:func:`harness.metrics.run_metrics`)."""
    return tuple(d.name for d in m.run_metrics())


def higher_is_better(key: str) -> bool:
    """True when larger values of ``key`` are better (a run metric declared ``better="higher"``);
    latencies, rates and everything else: lower is better."""
    d = m.METRICS.get(key)
    return d is not None and d.scope == "run" and d.higher_is_better


def summary_keys() -> set[str]:
    """Every key a summary can hold (nested ones as ``outcomes.<class>`` / ``tokens.<name>``)."""
    keys: set[str] = set(run_keys())
    for name, unit in [*((n, m.METRICS[n].unit) for n in (*REQUEST_METRICS, *GAP_METRICS)),
                       ("output_tokens", "tokens"), ("input_tokens", "tokens")]:
        keys.add(f"{name}_count")
        keys.update(f"{name}_{s}_{unit}" for s in STATS)
    from harness.records import Outcome

    for o in Outcome:
        keys.add(f"outcomes.{o.value}")
        if o not in (Outcome.OK, Outcome.DROPPED):
            keys.add(f"error_rate_{o.value}")
    keys.update(f"tokens.{k}" for k in ("output_total", "output_server_total", "output_events_total",
                                         "output_retokenized_total", "input_total", "compared", "mismatched"))
    keys.update(f"ttft_by_turn.{t}.{s}" for t in range(1, TURN_KEYS + 1) for s in ("count", *STATS))
    return keys


def lookup(summary: dict, key: str) -> object:
    """Value of ``key`` in a summary; dotted keys reach into nested dicts; None when absent."""
    cur: object = summary
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def split_key(key: str) -> tuple[str, str, str] | None:
    """``"ttft_p95_ms"`` -> ``("ttft", "p95", "ms")`` for distribution keys; None for run keys."""
    for name, unit in [*((n, m.METRICS[n].unit) for n in (*REQUEST_METRICS, *GAP_METRICS)),
                       ("output_tokens", "tokens"), ("input_tokens", "tokens")]:
        for s in STATS:
            if key == f"{name}_{s}_{unit}":
                return name, s, unit
    return None
