"""A raw-socket HTTP/1.1 client that keeps every byte it receives, for byte-exact wire fixtures.

:func:`exchange` sends one request the way the harness client does (same header names and order)
and returns the response exactly as it came off the socket: status line, headers and body with
its transfer framing (chunk sizes included). It reads until the body's framing says it is over
(``Content-Length`` bytes, the last ``0`` chunk and its trailer, or the connection's end), so it
works with keep-alive servers too.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Exchange:
    """One request and the raw bytes of its response."""

    request: bytes
    raw: bytes
    status: int
    headers: dict[str, str] = field(default_factory=dict)  #: lower-cased names; last value wins
    head_len: int = 0  #: bytes of status line + headers + blank line
    truncated: bool = False  #: the connection ended before the body's framing said it was complete

    @property
    def body_framed(self) -> bytes:
        """The body as sent (chunk framing included)."""
        return self.raw[self.head_len:]

    def body(self) -> bytes:
        """The body with chunk framing removed."""
        framed = self.body_framed
        if "chunked" not in self.headers.get("transfer-encoding", "").lower():
            return framed
        out, pos = bytearray(), 0
        while b"\r\n" in framed[pos:]:  # a truncated body ends the loop
            eol = framed.index(b"\r\n", pos)
            size = int(framed[pos:eol].split(b";")[0], 16)
            if size == 0:
                return bytes(out)
            out += framed[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
        return bytes(out)


def build_request(base_url: str, path: str, body: dict | bytes, request_id: str | None = "uuid",
                  extra_headers: list[tuple[str, str]] | None = None) -> bytes:
    """The request bytes: the harness client's header names, order and values.

    ``request_id``: ``"uuid"`` sends a fresh UUID4 as ``X-Request-Id``, None sends none, any
    other string is sent as it is.
    """
    u = urlsplit(base_url)
    payload = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    rid = str(uuid.uuid4()) if request_id == "uuid" else request_id
    headers = [("Host", u.netloc), ("User-Agent", "stream-harness"), ("Content-Type", "application/json"),
               ("Accept", "text/event-stream")]
    if rid is not None:
        headers.append(("X-Request-Id", rid))
    headers += extra_headers or []
    headers.append(("Content-Length", str(len(payload))))
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + payload


def _read_until(sock: socket.socket, buf: bytearray, pred, deadline: float) -> None:
    while not pred():
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError("connection closed")
        buf += piece


def exchange(base_url: str, request: bytes, timeout: float = 120.0) -> Exchange:
    """Send ``request`` on a new connection; return the response's raw bytes (see module docstring)."""
    u = urlsplit(base_url)
    deadline = time.monotonic() + timeout
    buf = bytearray()
    with socket.create_connection((u.hostname, u.port or 80), timeout=timeout) as sock:
        sock.sendall(request)
        _read_until(sock, buf, lambda: b"\r\n\r\n" in buf, deadline)
        head_len = buf.index(b"\r\n\r\n") + 4
        lines = bytes(buf[:head_len - 4]).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        truncated = False
        try:
            _read_body(sock, buf, head_len, headers, deadline)
        except ConnectionError:
            truncated = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()
    return Exchange(request, bytes(buf), status, headers, head_len, truncated)


def _read_body(sock: socket.socket, buf: bytearray, head_len: int, headers: dict[str, str],
               deadline: float) -> None:
    """Read the body into ``buf`` until its framing ends; ConnectionError when the connection ends first."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        pos = head_len
        while True:
            _read_until(sock, buf, lambda p=pos: b"\r\n" in buf[p:], deadline)
            eol = buf.index(b"\r\n", pos)
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            if size == 0:  # last chunk: the (empty) trailer ends with a blank line
                _read_until(sock, buf, lambda e=eol: b"\r\n\r\n" in buf[e:], deadline)
                break
            end = eol + 2 + size + 2
            _read_until(sock, buf, lambda e=end: len(buf) >= e, deadline)
            pos = end
    elif "content-length" in headers:
        end = head_len + int(headers["content-length"])
        _read_until(sock, buf, lambda: len(buf) >= end, deadline)
    else:  # close-delimited
        try:
            _read_until(sock, buf, lambda: False, deadline)
        except ConnectionError:
            pass
