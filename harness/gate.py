"""`harness gate RUN_DIR --rules gate.toml [--baseline DIR_OR_SUMMARY] [--junit out.xml]`.

Two kinds of checks, both read only the analysis summary (and, for regressions, the records):

* **Bounds**: ``"<summary key> <op> <number>"`` with op one of ``<= < >= > == !=``, e.g.
  ``ttft_p95_ms <= 500``, ``overload_rate <= 0.01``, ``output_tokens_per_s >= 50``.
* **Regressions** against a baseline run, with a tolerance per key (``"10%"`` of the baseline value,
  or an absolute number in the key's unit). Judged with a bootstrap confidence interval so that noise
  alone does not fail a build: both runs' requests are resampled with replacement (inter-token gaps
  travel with their request, a cluster bootstrap), the statistic is recomputed on each resample with the
  same analysis code, and the percentile interval of ``current - baseline`` at the configured
  confidence (default 95 %) is formed. A key *regresses* only when the whole interval lies beyond
  the tolerance in the bad direction (higher for latencies and rates, lower for throughputs). A
  baseline given as ``summary.json`` (no records) is treated as exact: only the current run is resampled.

Exit status: 0 all checks pass, 1 some check fails, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from harness import metrics as m
from harness.analysis.frame import RunFrame, load_frame, records_path
from harness.analysis.summary import (
    HIGHER_IS_BETTER,
    RUN_FUNCTIONS,
    analyse,
    dist,
    lookup,
    parse_slo,
    run_value,
    split_key,
    summary_keys,
    window_mask,
)

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq, "!=": operator.ne,
}
_RULE_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|==|!=|<|>|=)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Rule:
    """An absolute bound: ``summary[metric] op threshold``."""

    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


@dataclass
class Verdict:
    """The result of one check."""

    name: str  #: the rule as written, e.g. "ttft_p95_ms <= 500"
    metric: str
    passed: bool
    value: float | None
    expected: str  #: what was required, e.g. "<= 500" or "regression <= 10%"
    detail: str = ""
    kind: str = "bound"  #: "bound" | "regression"
    extra: dict = field(default_factory=dict)


def parse_rule(text: str) -> Rule:
    """``"ttft_p95_ms<=500"`` -> :class:`Rule`; ValueError with a clear message on a bad rule."""
    mt = _RULE_RE.match(text or "")
    if not mt:
        raise ValueError(f"bad rule {text!r}: expected '<metric> <op> <number>' with op one of "
                         f"{' '.join(OPS)}, e.g. 'ttft_p95_ms <= 500'")
    metric, op, value = mt.groups()
    if op == "=":
        raise ValueError(f"bad operator '=' in rule {text!r}: use one of {' '.join(OPS)}")
    check_metric(metric, text)
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"bad threshold {value!r} in rule {text!r}: not a number") from None
    if math.isnan(threshold):
        raise ValueError(f"bad threshold {value!r} in rule {text!r}: not a number")
    return Rule(metric, op, threshold)


def check_metric(metric: str, context: str) -> None:
    """ValueError unless ``metric`` is a key summaries have."""
    if metric not in summary_keys():
        hint = _suggest(metric)
        raise ValueError(f"unknown metric {metric!r} in {context!r}" + (f" (did you mean {hint!r}?)" if hint else
                                                                         "; see docs/reports.md for summary keys"))


def _suggest(metric: str) -> str | None:
    import difflib

    close = difflib.get_close_matches(metric, sorted(summary_keys()), n=1)
    return close[0] if close else None


def evaluate_rules(rules: Sequence[Rule], summary: dict) -> list[Verdict]:
    """One :class:`Verdict` per rule; a missing value (e.g. no ok request) fails its rule."""
    out = []
    for r in rules:
        v = lookup(summary, r.metric)
        if not isinstance(v, int | float):
            out.append(Verdict(str(r), r.metric, False, None, f"{r.op} {r.threshold:g}",
                               "no value in this run (no ok requests, or no SLO for goodput)"))
            continue
        val = float(v)
        passed = (not math.isnan(val)) and OPS[r.op](val, r.threshold)
        out.append(Verdict(str(r), r.metric, passed, val, f"{r.op} {r.threshold:g}"))
    return out


# --------------------------------------------------------------------------- regression (bootstrap)


@dataclass(frozen=True)
class Regression:
    """``metric`` must not get worse than the baseline by more than ``tolerance``."""

    metric: str
    tolerance: float
    relative: bool  #: tolerance is a fraction of the baseline value

    def __str__(self) -> str:
        tol = f"{self.tolerance:.0%}" if self.relative else f"{self.tolerance:g}"
        return f"{self.metric} regression <= {tol}"

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER


@dataclass
class GateConfig:
    rules: list[Rule]
    regressions: list[Regression]
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0
    slo: str | None = None


def parse_tolerance(metric: str, value: object) -> Regression:
    """``"10%"`` (relative) or a number in the metric's unit (absolute)."""
    check_metric(metric, f"[regression.tolerance] {metric}")
    if split_key(metric) is None and metric not in RUN_FUNCTIONS and not metric.startswith("error_rate_"):
        raise ValueError(f"regression on {metric!r} is not supported: use a latency key or a run metric")
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            tol = float(value.strip()[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"bad tolerance {value!r} for {metric}: expected e.g. '10%' or 25.0") from None
        rel = True
    elif isinstance(value, int | float) and not isinstance(value, bool):
        tol, rel = float(value), False
    else:
        raise ValueError(f"bad tolerance {value!r} for {metric}: expected e.g. '10%' or 25.0")
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"bad tolerance {value!r} for {metric}: must be >= 0")
    return Regression(metric, tol, rel)


def load_config(path: str | Path) -> GateConfig:
    """Read gate.toml; ValueError with one clear line on any problem."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p}: no such rules file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p}: bad TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: cannot read: {exc}") from None
    unknown = set(data) - {"rules", "regression", "slo"}
    if unknown:
        raise ValueError(f"{p}: unknown top-level key(s) {', '.join(sorted(unknown))}: expected rules, regression, slo")
    rules_raw = data.get("rules", [])
    if not isinstance(rules_raw, list) or not all(isinstance(r, str) for r in rules_raw):
        raise ValueError(f"{p}: 'rules' must be a list of strings like \"ttft_p95_ms <= 500\"")
    try:
        rules = [parse_rule(r) for r in rules_raw]
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None
    reg = data.get("regression", {})
    if not isinstance(reg, dict):
        raise ValueError(f"{p}: [regression] must be a table")
    bad = set(reg) - {"confidence", "resamples", "seed", "tolerance"}
    if bad:
        raise ValueError(f"{p}: unknown key(s) in [regression]: {', '.join(sorted(bad))}")
    tol = reg.get("tolerance", {})
    if not isinstance(tol, dict):
        raise ValueError(f"{p}: [regression.tolerance] must be a table of metric = \"10%\"")
    try:
        regressions = [parse_tolerance(k, v) for k, v in tol.items()]
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None
    conf = reg.get("confidence", 0.95)
    if not isinstance(conf, float | int) or not 0.5 <= conf < 1:
        raise ValueError(f"{p}: [regression] confidence must be a number in [0.5, 1), e.g. 0.95")
    res = reg.get("resamples", 1000)
    if not isinstance(res, int) or res < 50:
        raise ValueError(f"{p}: [regression] resamples must be an integer >= 50")
    slo = data.get("slo")
    if slo is not None:
        if not isinstance(slo, str):
            raise ValueError(f"{p}: slo must be a string like \"ttft_p95=500,itl_p99=50\"")
        try:
            parse_slo(slo)
        except ValueError as exc:
            raise ValueError(f"{p}: {exc}") from None
    if not rules and not regressions:
        raise ValueError(f"{p}: no rules and no [regression.tolerance]: nothing to check")
    return GateConfig(rules, regressions, float(conf), res, int(reg.get("seed", 0)), slo)


@dataclass
class RunData:
    """A run's summary and (when records exist) its steady-window frame for resampling."""

    summary: dict
    frame: RunFrame | None
    source: str


def load_run(path: str | Path, slo: m.Slo | None) -> RunData:
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
            how = "point estimate (no records to resample)"
        else:
            lo, hi, n = ci
            how = f"{cfg.confidence:.0%} CI [{lo:+.4g}, {hi:+.4g}] from {n} resamples"
        worse_lo = min(sign * lo, sign * hi)
        passed = not worse_lo > tol
        expected = f"{'>=' if reg.higher_is_better else '<='} baseline {b:.4g} {'-' if reg.higher_is_better else '+'} {tol:.4g}"
        detail = f"change {c - b:+.4g} ({(c - b) / b:+.1%} of baseline); {how}" if b else f"change {c - b:+.4g}; {how}"
        out.append(Verdict(str(reg), reg.metric, passed, c, expected, detail, "regression",
                           {"baseline": b, "ci": [lo, hi], "tolerance": tol}))
    return out


# --------------------------------------------------------------------------- output


def print_table(verdicts: Sequence[Verdict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("check", "value", "required", "verdict", "detail"):
        t.add_column(col, overflow="fold")
    for v in verdicts:
        t.add_row(v.name, "-" if v.value is None else f"{v.value:.4g}", v.expected,
                  "[green]PASS[/green]" if v.passed else "[bold red]FAIL[/bold red]", v.detail)
    Console(width=140).print(t)


def write_junit(verdicts: Sequence[Verdict], path: str | Path, suite: str = "harness gate") -> Path:
    """JUnit XML: one testcase per check, a <failure> for each failed one."""
    fails = sum(not v.passed for v in verdicts)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuites><testsuite name={quoteattr(suite)} tests="{len(verdicts)}" failures="{fails}" errors="0">']
    for v in verdicts:
        case = f'<testcase classname={quoteattr("gate." + v.kind)} name={quoteattr(v.name)}'
        msg = f"value {v.value if v.value is not None else 'missing'}, required {v.expected}. {v.detail}".strip()
        if v.passed:
            lines.append(f"{case}><system-out>{escape(msg)}</system-out></testcase>")
        else:
            lines.append(f"{case}><failure message={quoteattr(msg)}>{escape(msg)}</failure></testcase>")
    lines.append("</testsuite></testsuites>")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


# --------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (records.jsonl) or a summary.json")
    p.add_argument("--rules", required=True, help="gate.toml: rules = [...], [regression.tolerance], slo")
    p.add_argument("--baseline", default=None, help="baseline run dir (records: bootstrap CIs) or summary.json")
    p.add_argument("--junit", default=None, metavar="OUT_XML", help="write JUnit XML here")
    p.add_argument("--slo", default=None, help="SLO for goodput (overrides the rules file's slo)")


def run(args: argparse.Namespace) -> int:
    from harness.cli import CliError

    try:
        cfg = load_config(args.rules)
        slo = parse_slo(args.slo if args.slo is not None else cfg.slo)
        if not Path(args.run_dir).exists():
            raise ValueError(f"{args.run_dir}: no such run directory")
        cur = load_run(args.run_dir, slo)
        if cfg.regressions and args.baseline is None:
            raise ValueError("the rules have [regression.tolerance] entries but no --baseline was given")
        base = load_run(args.baseline, slo) if args.baseline else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    verdicts = evaluate_rules(cfg.rules, cur.summary)
    if base is not None:
        verdicts += evaluate_regressions(cur, base, cfg, slo)
    failed = sum(not v.passed for v in verdicts)
    print_table(verdicts, f"harness gate: {cur.source}" + (f" vs {base.source}" if base else ""))
    if args.junit:
        write_junit(verdicts, args.junit)
    print(f"{len(verdicts) - failed} passed, {failed} failed")
    return 1 if failed else 0
