"""W3C Trace Context (``traceparent``) for the harness's requests, derived from the request id.

Every request carries ``traceparent: 00-<trace id>-<parent id>-01`` (version 00, sampled flag),
so a slow request in a report can be found in the server's logs and traces (OpenTelemetry
servers continue the trace; the reference server logs the trace id with its own timings and
writes it into its ``--trace-file``). Both ids are *derived* from the record's ``request_id``,
so a record keeps its trace id without a field of its own:

- trace id = the request id's 32 hex digits when it is a UUID (the harness's ids are UUID4
  strings, :func:`harness.client.new_request_id`), else the first 16 bytes of
  ``blake2b(request_id)`` in hex;
- parent (span) id = ``blake2b(trace id, 8 bytes)`` in hex: the client's span of the request.

An all-zero id is invalid in W3C Trace Context; neither derivation yields one in practice, and
:func:`traceparent` replaces it with ``...01`` if it ever did.
"""

from __future__ import annotations

import hashlib
import re
import uuid

HEADER = "traceparent"
VERSION = "00"
FLAGS_SAMPLED = "01"
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$")


def trace_id_of(request_id: str) -> str:
    """The 32-hex-digit trace id of a request (see the module docstring for the derivation)."""
    try:
        tid = uuid.UUID(request_id).hex
    except (ValueError, AttributeError, TypeError):
        tid = hashlib.blake2b(str(request_id).encode("utf-8"), digest_size=16).hexdigest()
    return tid if tid.strip("0") else tid[:-1] + "1"


def span_id_of(trace_id: str) -> str:
    """The 16-hex-digit parent id sent with ``trace_id``."""
    sid = hashlib.blake2b(trace_id.encode("ascii"), digest_size=8).hexdigest()
    return sid if sid.strip("0") else sid[:-1] + "1"


def traceparent(request_id: str) -> str:
    """The ``traceparent`` header value of a request: ``00-<trace id>-<span id>-01``."""
    tid = trace_id_of(request_id)
    return f"{VERSION}-{tid}-{span_id_of(tid)}-{FLAGS_SAMPLED}"


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """``(trace id, parent id)`` of a ``traceparent`` header value; None when absent or invalid.

    Follows the W3C parsing rules: lowercase hex, version ``ff`` invalid, all-zero ids invalid;
    a future version may carry more fields after the flags (accepted).
    """
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip())
    if m is None:
        return None
    version, tid, sid, _flags = m.groups()
    if version == "ff" or not tid.strip("0") or not sid.strip("0"):
        return None
    if version == VERSION and len(value.strip()) != 55:
        return None
    return tid, sid
