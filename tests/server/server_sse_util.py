"""Test helpers for the server tests: SSE reading over HTTP, module-scoped servers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import httpx


def _root_conftest():
    """tests/conftest.py loaded under its own name (its ``start_server`` for module-scoped servers)."""
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("harness_tests_root_conftest", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


start_server = _root_conftest().start_server


def sse_events(url: str, body: dict, *, headers: dict | None = None, timeout: float = 60.0) -> tuple[httpx.Response, list]:
    """POST ``body``; return (response, parsed ``data:`` payloads; ``"[DONE]"`` kept as a string)."""
    events: list = []
    with httpx.stream("POST", url, json=body, headers=headers, timeout=timeout) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
    return resp, events


def metric_value(text: str, name: str) -> float | None:
    """The value of the series line ``name`` (exact, labels included) in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None
