"""Regressions against a baseline: bootstrap confidence intervals of ``current - baseline`` per key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import metrics as m
from harness.analysis.frame import RunFrame, load_frame, records_path
from harness.analysis.rules import Verdict
from harness.analysis.summary import analyse, dist, lookup, run_value, split_key, window_mask
from harness.gate.config import GateConfig, Regression


@dataclass
class RunData:
    """A run's summary and (when records exist) its steady-window frame for resampling."""

    summary: dict
    frame: RunFrame | None
    source: str


def read_run(path: str | Path, slo: m.Slo | None) -> RunData:
    """A run dir with records (analysed like `harness report`), or a summary.json (point values only)."""
    p = Path(path)
    if p.is_dir() and records_path(p).exists() and records_path(p).stat().st_size > 0:
        frame = load_frame(p, slo)
        if len(frame) == 0:
            raise ValueError(f"{p}: no readable records")
        summary, window = analyse(frame, slo)
        sw = summary.get("steady_window_info") or {}
        if window is not None and sw.get("applied"):
            frame = frame.subset(window_mask(frame, window.as_tuple()))
        return RunData(summary, frame, str(p))
    sp = p / "summary.json" if p.is_dir() else p
    if not sp.exists():
        raise ValueError(f"{p}: neither records.jsonl nor summary.json found")
    try:
        data = json.loads(sp.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{sp}: not a summary.json ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{sp}: not a summary.json (expected an object)")
    return RunData(data, None, str(sp))


class _Resampler:
    """Draws bootstrap resamples of a frame's requests and evaluates one key on each."""

    def __init__(self, frame: RunFrame, slo: m.Slo | None) -> None:
        self.f = frame
        self.slo = slo
        self.n = len(frame)
        counts = np.bincount(frame.gap_row, minlength=self.n) if len(frame.gap_row) else np.zeros(self.n, np.int64)
        self.gap_start = np.concatenate(([0], np.cumsum(counts)))[:-1]
        self.gap_count = counts

    def value(self, key: str, idx: np.ndarray) -> float | None:
        f = self.f
        parts = split_key(key)
        if parts is not None:
            name, stat, _ = parts
            if name in f.gaps:  # cluster bootstrap: a request's gaps travel with it
                lens = self.gap_count[idx]
                total = int(lens.sum())
                if total == 0:
                    return None
                starts = np.repeat(self.gap_start[idx] - np.concatenate(([0], np.cumsum(lens)))[:-1], lens)
                v = f.gaps[name][starts + np.arange(total)]
            else:
                col = f.cols[name][idx]
                v = col[f.cols["ok"][idx]]
            return dist(v).get(stat)  # type: ignore[return-value]
        recs = f.records
        return run_value(key, [recs[i] for i in idx.tolist()], f.cols["slo_met"][idx], self.slo)


def _point(summary: dict, key: str) -> float | None:
    v = lookup(summary, key)
    return float(v) if isinstance(v, int | float) else None


def bootstrap_diff(cur: RunData, base: RunData, key: str, cfg: GateConfig, slo: m.Slo | None,
                   rng: np.random.Generator) -> tuple[float, float, int] | None:
    """Percentile CI of ``current - baseline`` for ``key``; None when the current run has no records."""
    if cur.frame is None or len(cur.frame) == 0:
        return None
    rc = _Resampler(cur.frame, slo)
    rb = _Resampler(base.frame, slo) if base.frame is not None and len(base.frame) else None
    work = rc.n + (rb.n if rb else 0)
    per_item = 1.0 if split_key(key) is not None else 20.0  # run keys go through Python per record
    b = max(50, min(cfg.resamples, int(4e7 / max(1.0, work * per_item))))
    base_point = _point(base.summary, key)
    diffs = []
    for _ in range(b):
        c = rc.value(key, rng.integers(0, rc.n, rc.n))
        bv = rb.value(key, rng.integers(0, rb.n, rb.n)) if rb else base_point
        if c is not None and bv is not None:
            diffs.append(c - bv)
    if len(diffs) < b // 2:
        return None
    alpha = (1 - cfg.confidence) / 2
    d = np.sort(np.asarray(diffs))
    return float(m.percentile(d, 100 * alpha)), float(m.percentile(d, 100 * (1 - alpha))), b


def evaluate_regressions(cur: RunData, base: RunData, cfg: GateConfig, slo: m.Slo | None) -> list[Verdict]:
    """One verdict per regression key: fail only when the whole CI of the change is beyond the tolerance."""
    rng = np.random.default_rng(cfg.seed)
    out = []
    for reg in cfg.regressions:
        c, b = _point(cur.summary, reg.metric), _point(base.summary, reg.metric)
        if c is None or b is None:
            out.append(Verdict(str(reg), reg.metric, False, c, str(reg),
                               f"no value in the {'current run' if c is None else 'baseline'}", "regression"))
            continue
        tol = reg.tolerance * abs(b) if reg.relative else reg.tolerance
        ci = bootstrap_diff(cur, base, reg.metric, cfg, slo, rng)
        sign = -1.0 if reg.higher_is_better else 1.0  # positive "worsening" = bad direction
        if ci is None:  # no records: point estimate only
            lo = hi = c - b
        else:
            lo, hi, _n = ci
        worse_lo, worse_hi = sorted((sign * lo, sign * hi))
        passed = not worse_lo > tol
        expected = f"{'>=' if reg.higher_is_better else '<='} baseline {b:.4g} {'-' if reg.higher_is_better else '+'} {tol:.4g}"
        detail = regression_detail(c - b, b, (lo, hi) if ci else None, reg, tol, cfg.confidence,
                                   passed, worse_hi <= tol, ci[2] if ci else 0)
        out.append(Verdict(str(reg), reg.metric, passed, c, expected, detail, "regression",
                           {"baseline": b, "ci": [lo, hi], "tolerance": tol}))
    return out


def regression_detail(change: float, base: float, ci: tuple[float, float] | None, reg: Regression, tol: float,
                      confidence: float, passed: bool, all_within: bool, resamples: int) -> str:
    """The gate table's explanation of one regression verdict: the change, the interval judged and the rule.

    E.g. ``+11.5 % of baseline (95 % CI +3.1 .. +19.8 %) vs tolerance 10 %: PASS because part of the CI
    is within the tolerance (a regression fails only when the whole CI is beyond it)``. Relative
    tolerances are shown in % of the baseline value, absolute ones in the key's unit.
    """
    def show(v: float) -> str:
        return f"{100 * v / base:+.1f} %" if reg.relative and base else f"{v:+.4g}"

    tol_text = f"{100 * reg.tolerance:g} %" if reg.relative and base else f"{tol:.4g}"
    head = f"{show(change)}{' of baseline' if reg.relative and base else ''}"
    if ci is None:
        interval = " (point estimate: no records to resample)"
    else:
        lo, hi = ci
        interval = f" ({100 * confidence:g} % CI {show(lo)} .. {show(hi)}, {resamples} resamples)"
    direction = "lower" if reg.higher_is_better else "higher"
    if not passed:
        why = f"FAIL because the whole {'interval' if ci else 'change'} is beyond the tolerance ({direction} is worse)"
    elif all_within:
        why = f"PASS because the whole {'interval' if ci else 'change'} is within the tolerance"
    else:
        why = ("PASS because part of the CI is within the tolerance (a regression fails only when the whole CI "
               f"is beyond it, {direction} being worse)")
    return f"{head}{interval} vs tolerance {tol_text}: {why}"
