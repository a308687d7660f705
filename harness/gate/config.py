"""gate.toml: ``rules``, ``[regression]`` (confidence, resamples, seed, ``tolerance`` per key) and ``slo``."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness.analysis.rules import CHECKS, Rule, check_metric, parse_rule
from harness.analysis.summary import higher_is_better, parse_slo, run_keys, split_key


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
        return higher_is_better(self.metric)


@dataclass
class GateConfig:
    rules: list[Rule]
    regressions: list[Regression]
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0
    slo: str | None = None
    checks: list[str] = field(default_factory=list)  #: named checks (harness.analysis.rules.register_check)


def parse_tolerance(metric: str, value: object) -> Regression:
    """``"10%"`` (relative) or a number in the metric's unit (absolute)."""
    check_metric(metric, f"[regression.tolerance] {metric}")
    if split_key(metric) is None and metric not in run_keys() and not metric.startswith("error_rate_"):
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
    unknown = set(data) - {"rules", "regression", "slo", "checks"}
    if unknown:
        raise ValueError(f"{p}: unknown top-level key(s) {', '.join(sorted(unknown))}: expected rules, regression, "
                         f"slo, checks")
    checks = data.get("checks", [])
    if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
        raise ValueError(f"{p}: 'checks' must be a list of check names")
    missing = [c for c in checks if c not in CHECKS]
    if missing:
        raise ValueError(f"{p}: unknown check(s) {', '.join(missing)}: registered are "
                         f"{', '.join(sorted(CHECKS)) or 'none'}")
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
    if not rules and not regressions and not checks:
        raise ValueError(f"{p}: no rules and no [regression.tolerance]: nothing to check")
    return GateConfig(rules, regressions, float(conf), res, int(reg.get("seed", 0)), slo, checks)
