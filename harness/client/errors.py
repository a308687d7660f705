"""Classifying failures into :class:`~harness.records.Outcome` classes, and reading error bodies.

Rules (one place, shared by both protocols):

- HTTP status, non-2xx: 429, 503 and 529 -> ``overloaded`` (the server refuses work now, with or
  without ``Retry-After``); 400 and 422 -> ``validation`` (OpenAI-compatible servers answer a bad
  request with 400, TGI with 422); 424 -> ``generation``; anything else -> ``http_error``. An
  explicit TGI ``error_type`` in the body wins over the status for codes other than 429/503/529.
- Error events inside a 200 stream (TGI ``{"error","error_type"}``, OpenAI
  ``{"error":{"message","type"|"code"|"http_status_code"}}``): ``overloaded``, ``validation``,
  ``generation`` by type; ``incomplete_generation`` and ``incomplete_generation_stream`` ->
  ``incomplete``; otherwise "overloaded" in the message -> ``overloaded`` (TGI's OpenAI routes send
  every error with a hard-coded 422), an embedded 429/503/529 -> ``overloaded``, 400/422 -> ``validation``,
  anything else -> ``generation``.
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime

from harness.records import Outcome

_TYPE_MAP = {
    "overloaded": Outcome.OVERLOADED,
    "validation": Outcome.VALIDATION,
    "generation": Outcome.GENERATION,
    "incomplete_generation": Outcome.INCOMPLETE,
    "incomplete_generation_stream": Outcome.INCOMPLETE,
    "template_error": Outcome.VALIDATION,
    "missing_template_variable": Outcome.VALIDATION,
    "tool_error": Outcome.VALIDATION,
}

#: statuses by which servers refuse work for now: 429 Too Many Requests, 503 Service Unavailable
#: (vLLM, llama.cpp while busy or loading, proxies), 529 (overloaded, Anthropic-style gateways)
OVERLOAD_STATUSES = (429, 503, 529)

MAX_ERROR_TEXT = 500  #: error texts in records are cut to this many characters


def parse_error_payload(obj: object) -> tuple[str | None, str, int | None]:
    """``(error_type, message, embedded_status)`` from a decoded JSON error object.

    Accepts TGI ``{"error": str, "error_type": str}``; OpenAI-style ``{"error": {"message", "type",
    "code", "http_status_code"}}`` (OpenAI, vLLM >= 0.9, llama.cpp, Ollama's OpenAI mode, TGI's
    newer routes; ``code`` is an int status or a string type); the flat ``{"object": "error",
    "message", "type", "code"}`` of older vLLM and SGLang; FastAPI ``{"detail": ...}``; a plain
    ``{"message": str}``. The embedded status is an int ``code``/``http_status_code``, else None.
    """
    if isinstance(obj, list) and obj:
        obj = obj[0]
    if not isinstance(obj, dict):
        return None, str(obj), None
    err = obj.get("error")
    if isinstance(err, dict):
        etype = err.get("type") or err.get("error_type")
        code = err.get("code")
        status = err.get("http_status_code")
        if status is None and isinstance(code, int):
            status = code
        if etype is None and isinstance(code, str):
            etype = code
        return (str(etype) if etype is not None else None), str(err.get("message", err)), status
    if err is not None:
        etype = obj.get("error_type")
        return (str(etype) if etype is not None else None), str(err), None
    if "detail" in obj:
        return None, str(obj["detail"]), None
    if "message" in obj:
        code = obj.get("code")
        etype = obj.get("type")
        if etype is None and isinstance(code, str):
            etype = code
        return (str(etype) if etype is not None else None), str(obj["message"]), (
            code if isinstance(code, int) else None)
    return None, json.dumps(obj)[:MAX_ERROR_TEXT], None


def parse_error_body(body: bytes) -> tuple[str | None, str, int | None]:
    """Like :func:`parse_error_payload` for a raw body; non-JSON bodies give their text."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, body.decode("utf-8", errors="replace").strip(), None
    return parse_error_payload(obj)


def classify_status(status: int, error_type: str | None, message: str) -> str:
    """Outcome class of a non-2xx HTTP response (see the module docstring)."""
    if status in OVERLOAD_STATUSES:
        return Outcome.OVERLOADED.value
    if error_type and error_type.lower() in _TYPE_MAP:
        return _TYPE_MAP[error_type.lower()].value
    if status in (400, 422):
        return Outcome.VALIDATION.value
    if status == 424:
        return Outcome.GENERATION.value
    return Outcome.HTTP_ERROR.value


def classify_event(error_type: str | None, message: str, status: int | None = None) -> str:
    """Outcome class of an error event received inside a 200 stream."""
    if error_type and error_type.lower() in _TYPE_MAP:
        return _TYPE_MAP[error_type.lower()].value
    if "overloaded" in message.lower() or status in OVERLOAD_STATUSES:
        return Outcome.OVERLOADED.value
    if status in (400, 422):
        return Outcome.VALIDATION.value
    return Outcome.GENERATION.value


def format_error(status: int | None, error_type: str | None, message: str) -> str:
    """``"HTTP 429 overloaded: Model is overloaded"``-style text, cut to :data:`MAX_ERROR_TEXT`."""
    head = f"HTTP {status}" if status is not None else "error event"
    if error_type:
        head += f" {error_type}"
    text = f"{head}: {message}" if message else head
    return text[:MAX_ERROR_TEXT]


def parse_retry_after(value: str | None, now_wall_s: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now_wall_s is None else now_wall_s
    return max(0.0, when.timestamp() - now)
