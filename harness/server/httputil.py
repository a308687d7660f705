"""Small HTTP helpers shared by the route modules: auth, body reading, JSON answers."""

from __future__ import annotations

import itertools
import os
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from harness.server.config import ServerConfig
from harness.server.infer_errors import InferError, RequestRejected
from harness.server.sse_response import dumps
from harness.server.validation import M, parse_body

_ids = itertools.count(1)
_PREFIX = f"{os.getpid():x}-"


class Unauthorized(Exception):
    """``--api-key`` set and the ``Authorization`` header missing or wrong: 401, empty body."""


def check_auth(request: Request, cfg: ServerConfig) -> None:
    """TGI: ``Authorization`` must equal ``Bearer <key>``, both sides lowercased."""
    if cfg.api_key is None:
        return
    got = request.headers.get("authorization")
    if got is None or got.lower() != f"bearer {cfg.api_key}".lower():
        raise Unauthorized()


async def read_json(request: Request, model: type[M], cfg: ServerConfig) -> M:
    """The request body parsed into ``model``. The content type is not checked (``curl -d`` sends
    ``application/x-www-form-urlencoded``); the body must be JSON. Over ``--payload-limit`` bytes:
    413 with TGI's text."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cfg.payload_limit:
        raise RequestRejected(413, "Failed to buffer the request body: length limit exceeded")
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():  # counted as it arrives: a chunked body is cut at the limit
            size += len(chunk)
            if size > cfg.payload_limit:
                raise RequestRejected(413, "Failed to buffer the request body: length limit exceeded")
            parts.append(chunk)
    except ClientDisconnect:  # the client went away mid-body: nothing to answer, nothing to log
        raise RequestRejected(400, "Failed to buffer the request body: client disconnected") from None
    return parse_body(b"".join(parts), model)


def request_id(request: Request) -> str:
    """The client's ``x-request-id`` (trusted as-is, capped at 200 chars), else a new one."""
    rid = request.headers.get("x-request-id")
    return rid[:200] if rid else f"{_PREFIX}{next(_ids):x}"


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(obj).encode(), status_code=status, headers=headers,
                    media_type="application/json")


def error_response(exc: InferError, headers: dict[str, str] | None = None) -> Response:
    """``{"error", "error_type"}`` with the error's HTTP status."""
    return json_response(exc.body(), exc.status, headers)
