"""harness.server.lean_http: while the server is full, a refusable request is answered in uvicorn's
parser callbacks (no request-response cycle, no ASGI task); anything it cannot answer goes the ASGI
way with its body; without the lean path uvicorn's own protocol is used. The bytes themselves are
compared with the framework's in test_server_lean.py (real servers)."""

from __future__ import annotations

import argparse
import asyncio
import socket

import uvicorn
from uvicorn.server import ServerState

from harness.server import cli
from harness.server.app import create_app
from harness.server.backends import create_backend
from harness.server.lean_http import LeanHttpToolsProtocol, protocol_class


def _app():
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    args = p.parse_args(["--model", "simulated", "--max-concurrent-requests", "2"])
    return create_app(create_backend(args), cli.build_config(args))


async def _exchange(app, request: bytes) -> tuple[bytes, LeanHttpToolsProtocol]:
    """One request over a socket pair to the protocol uvicorn would use for ``app``; the answer."""
    config = uvicorn.Config(app, http=protocol_class(app), lifespan="off", log_level="warning", access_log=False)
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    server_sock, client_sock = socket.socketpair()
    proto = config.http_protocol_class(config=config, server_state=state, app_state={})
    await loop.connect_accepted_socket(lambda: proto, server_sock)
    client_sock.setblocking(False)
    await loop.sock_sendall(client_sock, request)
    out = b""
    while b"\r\n\r\n" not in out or not out.endswith((b"}", b"\r\n0\r\n\r\n")):
        out += await asyncio.wait_for(loop.sock_recv(client_sock, 65536), 10)
    client_sock.close()
    return out, proto


def _post(path: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)


def test_refusal_is_answered_without_an_asgi_cycle() -> None:
    app = _app()
    adm = app.state.service.admission
    adm.in_use = adm.capacity  # every permit held
    assert protocol_class(app) is LeanHttpToolsProtocol
    out, proto = asyncio.run(_exchange(app, _post(b"/generate", b'{"inputs":"a"}')))
    assert out.startswith(b"HTTP/1.1 429 ") and out.endswith(b'"error_type":"overloaded"}')
    assert proto.cycle is None  # uvicorn's cycle (and its task) never created
    out, proto = asyncio.run(_exchange(app, _post(b"/generate_stream", b'{"inputs":"a"}')))
    assert out.startswith(b"HTTP/1.1 200 ") and b'"error_type":"overloaded"' in out and proto.cycle is None
    # a body the lean path does not answer: the ASGI way, body handed over (the framework's 422)
    out, proto = asyncio.run(_exchange(app, _post(b"/generate", b'{"inputs":1}')))
    assert out.startswith(b"HTTP/1.1 422 ") and proto.cycle is not None
    assert app.state.service.metrics.request_failure.get("overloaded") == 2


def test_without_the_lean_path_uvicorn_protocol_is_used() -> None:
    app = _app()
    app.lean = None  # as with HARNESS_LEAN=0
    assert protocol_class(app) == "httptools"
