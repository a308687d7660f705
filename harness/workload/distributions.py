"""Token-length distributions for synthetic workloads, parsed from short specs.

Specs (all values in tokens):

- ``fixed:128`` (or just ``128``): always 128;
- ``uniform:64,256``: integers uniform in [64, 256], both ends included;
- ``normal:mean=200,sd=50``: ``round(gauss(mean, sd))``;
- ``lognormal:mean=200,sd=80``: a lognormal whose *own* mean and standard deviation are the
  given values: ``sigma^2 = ln(1 + sd^2/mean^2)``, ``mu = ln(mean) - sigma^2/2``.

``normal`` and ``lognormal`` accept optional ``min=``/``max=`` bounds (clamped). Every sample is
at least 1 (a request needs one input token and one output token).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

KINDS = ("fixed", "uniform", "normal", "lognormal")


@dataclass(frozen=True, slots=True)
class Distribution:
    """A distribution of positive integers (token counts); ``sample(rng)`` draws one."""

    kind: str
    a: float  #: fixed value / uniform low / mean
    b: float = 0.0  #: uniform high / standard deviation
    lo: int = 1
    hi: int | None = None

    @classmethod
    def parse(cls, spec: str | int) -> Distribution:
        """Parse a spec (see the module docstring); raises ValueError with the expected forms."""
        if isinstance(spec, int):
            spec = str(spec)
        text = spec.strip()
        kind, sep, rest = text.partition(":")
        kind = kind.strip().lower()
        try:
            if not sep and kind.isdigit():
                return cls._checked("fixed", float(kind))
            if kind == "fixed":
                return cls._checked("fixed", float(int(rest)))
            if kind == "uniform":
                lo, hi = (int(x) for x in rest.split(","))
                return cls._checked("uniform", float(lo), float(hi))
            if kind in ("normal", "lognormal"):
                kv = dict(_kv(part) for part in rest.split(",") if part.strip())
                unknown = set(kv) - {"mean", "sd", "min", "max"}
                if unknown or "mean" not in kv or "sd" not in kv:
                    raise ValueError
                return cls._checked(kind, kv["mean"], kv["sd"], int(kv.get("min", 1)),
                                    int(kv["max"]) if "max" in kv else None)
        except ValueError as exc:
            if str(exc).startswith("distribution"):
                raise
        raise ValueError(f"bad distribution {spec!r}: expected fixed:N, uniform:LO,HI, "
                         "normal:mean=M,sd=S or lognormal:mean=M,sd=S (optional ,min=,max=)")

    @classmethod
    def _checked(cls, kind: str, a: float, b: float = 0.0, lo: int = 1, hi: int | None = None) -> Distribution:
        if kind in ("fixed", "uniform") and a < 1:
            raise ValueError(f"distribution {kind}: values must be >= 1, got {a:g}")
        if kind == "uniform" and b < a:
            raise ValueError(f"distribution uniform: high {b:g} < low {a:g}")
        if kind in ("normal", "lognormal") and (a <= 0 or b < 0):
            raise ValueError(f"distribution {kind}: mean must be > 0 and sd >= 0")
        if lo < 1 or (hi is not None and hi < lo):
            raise ValueError(f"distribution {kind}: need 1 <= min <= max")
        return cls(kind, a, b, lo, hi)

    def sample(self, rng: random.Random) -> int:
        """One draw (an int >= max(1, min), <= max when set)."""
        k = self.kind
        if k == "fixed":
            v = self.a
        elif k == "uniform":
            v = rng.randint(int(self.a), int(self.b))
        elif k == "normal":
            v = rng.gauss(self.a, self.b)
        else:
            s2 = math.log(1.0 + (self.b / self.a) ** 2)
            v = rng.lognormvariate(math.log(self.a) - s2 / 2.0, math.sqrt(s2))
        n = max(self.lo, int(round(v)))
        return min(n, self.hi) if self.hi is not None else n

    @property
    def mean(self) -> float:
        """The nominal mean (before clamping), tokens."""
        return (self.a + self.b) / 2.0 if self.kind == "uniform" else self.a

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{int(self.a)}"
        if self.kind == "uniform":
            return f"uniform:{int(self.a)},{int(self.b)}"
        bounds = (f",min={self.lo}" if self.lo != 1 else "") + (f",max={self.hi}" if self.hi is not None else "")
        return f"{self.kind}:mean={self.a:g},sd={self.b:g}{bounds}"


def _kv(part: str) -> tuple[str, float]:
    k, sep, v = part.partition("=")
    if not sep:
        raise ValueError
    return k.strip().lower(), float(v)
