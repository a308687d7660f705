"""stream-harness: load testing and latency measurement for token-streaming LLM servers.

``harness.load_run(RUN_DIR)`` -> a pandas DataFrame, one row per request (:mod:`harness.analysis.dataframe`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_run"]


def __getattr__(name: str) -> Any:  # lazy: `import harness` must not import pandas
    if name == "load_run":
        from harness.analysis.dataframe import load_run

        return load_run
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
