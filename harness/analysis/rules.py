"""Gate rules: ``"<summary key> <op> <number>"`` -> :class:`Rule`, evaluated against a run summary.

The one rule language of ``harness gate`` (rules are conditions that must hold) and of Locust's
``--fail-on`` (rules are failure conditions); metric names are checked against
:func:`harness.analysis.summary.summary_keys`, so a metric declared in the dictionary is a rule key at once.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from harness.analysis.summary import lookup, summary_keys

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


# --------------------------------------------------------------------------- named checks

#: ``fn(summary) -> Verdict``: a check beyond ``<key> <op> <number>``, named in gate.toml's ``checks = [...]``
CheckFn = Callable[[dict], Verdict]
CHECKS: dict[str, CheckFn] = {}


def register_check(name: str, fn: CheckFn) -> CheckFn:
    """Add a named gate check (the public extension point): ``fn(summary)`` returns a :class:`Verdict`
    (``kind="check"``); gate.toml enables it with ``checks = ["NAME"]``. ValueError when ``name`` is taken."""
    if name in CHECKS:
        raise ValueError(f"gate check {name!r} already registered")
    CHECKS[name] = fn
    return fn


def evaluate_checks(names: Sequence[str], summary: dict) -> list[Verdict]:
    """One :class:`Verdict` per named check (names validated when the rules file is read)."""
    return [CHECKS[n](summary) for n in names]
