"""Test helpers: read SSE events over HTTP (httpx) the way a plain client does."""

from __future__ import annotations

import json

import httpx


def sse_events(url: str, body: dict, *, headers: dict | None = None, timeout: float = 30.0) -> tuple[httpx.Response, list]:
    """POST ``body``; return (response, parsed ``data:`` payloads; ``"[DONE]"`` kept as a string)."""
    events: list = []
    with httpx.stream("POST", url, json=body, headers=headers, timeout=timeout) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
    return resp, events
