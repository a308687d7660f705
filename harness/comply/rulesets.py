"""Rulesets: one TOML file per model and scenario with MLPerf's latency limits and run minimums.

Packaged files live in ``harness/comply/rulesets/<model>-<scenario>.toml`` (``harness comply --list``);
``--rules PATH`` reads a custom one. Fields (ms and s): ``ttft_ms``, ``tpot_ms`` (required), ``name``,
``model``, ``scenario``, ``percentile`` (99.0), ``confidence`` (0.99, of the early-stopping test),
``min_duration_s`` (600) and ``min_queries`` (100), the last four defaulting to MLPerf's server values
(``loadgen/mlperf.conf``: ``*.Server.min_duration = 600000`` ms, LoadGen's default ``min_query_count``).
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["MLPERF_MIN_DURATION_S", "MLPERF_MIN_QUERIES", "RULESET_DIR", "Ruleset", "load_ruleset", "packaged"]

RULESET_DIR = Path(__file__).resolve().parent / "rulesets"
MLPERF_MIN_DURATION_S = 600.0
MLPERF_MIN_QUERIES = 100
_KNOWN = {"name", "model", "scenario", "ttft_ms", "tpot_ms", "percentile", "confidence", "min_duration_s",
          "min_queries"}


@dataclass(frozen=True)
class Ruleset:
    """Latency limits (p-th percentile of TTFT and TPOT, ms) and the run minimums of one model/scenario."""

    name: str
    ttft_ms: float
    tpot_ms: float
    model: str = "custom"
    scenario: str = "server"
    percentile: float = 99.0
    confidence: float = 0.99
    min_duration_s: float = MLPERF_MIN_DURATION_S
    min_queries: int = MLPERF_MIN_QUERIES
    source: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def packaged() -> dict[str, Path]:
    """Name -> path of every packaged ruleset, sorted by name."""
    return {p.stem: p for p in sorted(RULESET_DIR.glob("*.toml"))}


def _positive(data: dict, key: str, kind: type, where: str) -> None:
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0 or (kind is int and v != int(v)):
        raise ValueError(f"{where}: {key} = {v!r} must be a positive {'whole ' if kind is int else ''}number")


def load_ruleset(name_or_path: str) -> Ruleset:
    """A packaged ruleset by name, or a TOML file by path; ValueError (one line) on anything malformed."""
    p = packaged().get(name_or_path) or Path(name_or_path)
    if not p.is_file():
        raise ValueError(f"ruleset {name_or_path!r}: neither a packaged ruleset (see --list) nor a file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{p}: not a TOML ruleset ({exc})") from None
    unknown = set(data) - _KNOWN
    if unknown:
        raise ValueError(f"{p}: unknown field(s) {', '.join(sorted(unknown))}")
    for key in ("ttft_ms", "tpot_ms"):
        if key not in data:
            raise ValueError(f"{p}: missing {key}")
    for key, kind in (("ttft_ms", float), ("tpot_ms", float), ("min_duration_s", float), ("min_queries", int)):
        if key in data:
            _positive(data, key, kind, str(p))
    for key in ("percentile", "confidence"):
        if key in data:
            v, top = data[key], 100.0 if key == "percentile" else 1.0
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < top:
                raise ValueError(f"{p}: {key} = {v!r} must be between 0 and {top:g}")
    data.setdefault("name", p.stem)
    data["min_queries"] = int(data.get("min_queries", MLPERF_MIN_QUERIES))
    return Ruleset(**data, source=str(p))
