"""A minimal HTTP/1.1 client transport over stdlib sockets, built for timing token streams.

Why not ``http.client``: its ``HTTPResponse.readline`` falls back to ``IOBase.readline`` (one
``read(1)`` per byte) and its chunked decoder hides chunk boundaries; we need the bytes of each
token event as soon as they arrive at a cost close to a bare ``BufferedReader.readline`` loop.

What it does:
- one keep-alive connection per :class:`Connection` (reconnects transparently when a reused idle
  connection turns out to be closed by the server before any response byte);
- request bodies are sent in one ``sendall``; responses are parsed from a buffered socket file;
- bodies: ``Content-Length``, ``Transfer-Encoding: chunked`` (decoded in Python; each chunk's data
  is handed over as soon as the chunk is read) and close-delimited (``read1``: whatever bytes
  have arrived, never waiting for a block to fill);
- timeouts: ``connect_s`` for the TCP connect, ``read_s`` for every socket read or send (so,
  between tokens), enforced by the process's read watchdog (harness.client.watchdog: no timer per
  read); the caller enforces the total deadline (it may lower the read timeout with
  :meth:`Connection.set_read_timeout`);
- stdlib ``socket`` only, so Locust's gevent monkey-patching makes it cooperative.

Failures raise :class:`TransportError` subclasses; the stream clients classify them.
"""

from __future__ import annotations

import io
import socket
import ssl
import time
from urllib.parse import urlsplit

from harness.client.watchdog import Guard, GuardedSocketIO, watchdog

MAX_LINE = 65536  #: longest status/header/chunk-size line accepted
MAX_HEADERS = 200
_ssl_context: ssl.SSLContext | None = None


class TransportError(Exception):
    """Base of transport failures (never an HTTP status: those are responses)."""


class ConnectError(TransportError):
    """The TCP (or TLS) connection could not be made: refused, unreachable, DNS."""


class ConnectTimeout(TransportError):
    """The connection was not established within ``connect_s``."""


class ReadTimeout(TransportError):
    """No byte arrived within the read timeout."""


class ConnectionClosed(TransportError):
    """The peer closed (or reset) the connection before the response was complete."""


class ProtocolError(TransportError):
    """The peer sent something that is not HTTP/1.x."""


def _shared_ssl_context() -> ssl.SSLContext:
    """One SSL context per process: creating one costs ~20 ms of CPU (reference: httpx pitfall)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


class _LengthBody:
    """A body of ``Content-Length`` bytes."""

    __slots__ = ("fp", "remaining", "complete", "truncated")

    def __init__(self, fp, length: int) -> None:
        self.fp = fp
        self.remaining = length
        self.complete = length == 0
        self.truncated = False

    def read_piece(self) -> bytes:
        if self.remaining <= 0:
            return b""
        data = self.fp.read1(min(self.remaining, 65536))
        if not data:
            self.truncated = True
            self.remaining = 0
            return b""
        self.remaining -= len(data)
        if self.remaining == 0:
            self.complete = True
        return data

    def read_all(self, limit: int) -> bytes:
        data = self.fp.read(min(self.remaining, limit)) if self.remaining > 0 else b""
        self.remaining -= len(data)
        if self.remaining == 0:
            self.complete = True
        return data


class _CloseBody:
    """A body delimited by the connection closing (HTTP/1.0 style); never reusable."""

    __slots__ = ("fp", "complete", "truncated")

    def __init__(self, fp) -> None:
        self.fp = fp
        self.complete = False
        self.truncated = False

    def read_piece(self) -> bytes:
        return self.fp.read1(65536)

    def read_all(self, limit: int) -> bytes:
        return self.fp.read(limit)


class _ChunkedBody:
    """``Transfer-Encoding: chunked``: ``read_piece`` returns each chunk's data as soon as it is read.

    ``b""`` at the end of the body. ``truncated`` is set when the connection closed or the chunk
    framing broke before the terminating zero-size chunk (the data read so far is returned).
    """

    __slots__ = ("fp", "done", "complete", "truncated")

    def __init__(self, fp) -> None:
        self.fp = fp
        self.done = False
        self.complete = False
        self.truncated = False

    def read_piece(self) -> bytes:
        if self.done:
            return b""
        fp = self.fp
        size_line = fp.readline(MAX_LINE)
        try:
            size = int(size_line, 16)  # int() ignores the surrounding whitespace and CRLF
        except ValueError:
            try:  # chunk extensions ("1a;name=value")
                size = int(size_line.split(b";", 1)[0], 16) if size_line.endswith(b"\n") else -1
            except ValueError:
                size = -1
        if size > 0:
            data = fp.read(size + 2)
            if len(data) < size + 2:
                self.done = self.truncated = True
            return data[:size]
        self.done = True
        if size < 0 or not size_line.endswith(b"\n"):
            self.truncated = True
            return b""
        while True:  # trailers, up to the blank line
            t = fp.readline(MAX_LINE)
            if not t.endswith(b"\n"):
                self.truncated = True
                return b""
            if t in (b"\r\n", b"\n"):
                self.complete = True
                return b""

    def read_all(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while not self.done and total < limit:
            c = self.read_piece()
            parts.append(c)
            total += len(c)
        return b"".join(parts)


class Response:
    """Status, lower-cased headers and a body reader (``body.read_piece()``: the next bytes that arrived)."""

    __slots__ = ("status", "reason", "headers", "body", "will_close")

    def __init__(self, status: int, reason: str, headers: dict[str, str], body, will_close: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.will_close = will_close

    @property
    def reusable(self) -> bool:
        """True when the whole body was read and the connection may serve another request."""
        return self.body.complete and not self.will_close


class Connection:
    """One keep-alive HTTP/1.1 connection to ``base_url``'s host (not safe for concurrent use)."""

    def __init__(self, base_url: str, connect_s: float = 10.0, read_s: float = 60.0) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.scheme = u.scheme
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        default_port = 443 if u.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.base_path = u.path.rstrip("/")
        self.connect_s = connect_s
        self.read_s = read_s
        self.sock: socket.socket | None = None
        self.fp = None
        self.guard: Guard | None = None
        self._current_timeout: float | None = None

    # ----------------------------------------------------------------- socket lifecycle

    def _connect(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_s)
        except TimeoutError as exc:
            raise ConnectTimeout(f"connect to {self.host}:{self.port} timed out after {self.connect_s:g}s") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                sock = _shared_ssl_context().wrap_socket(sock, server_hostname=self.host)
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeout(f"TLS handshake with {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            sock.close()
            raise ConnectError(f"TLS handshake with {self.host}:{self.port} failed: {exc}") from exc
        sock.settimeout(None)  # blocking; the watchdog enforces the read timeout
        self._current_timeout = self.read_s
        self.guard = Guard(sock, self.read_s)
        watchdog().register(self.guard)
        self.sock = sock
        self.fp = io.BufferedReader(GuardedSocketIO(sock, self.guard), 65536)

    def close(self) -> None:
        """Close the socket (the next request reconnects)."""
        fp, sock, guard = self.fp, self.sock, self.guard
        self.fp = self.sock = self.guard = None
        if guard is not None:
            watchdog().unregister(guard)
        if fp is not None:
            try:
                fp.close()
            except OSError:
                pass
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def set_read_timeout(self, seconds: float) -> None:
        """Set the per-read timeout (used to enforce a total deadline)."""
        if self.guard is not None and seconds != self._current_timeout:
            self.guard.set_timeout(max(seconds, 0.001))
            self._current_timeout = seconds

    # ----------------------------------------------------------------- request / response

    def send(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> bool:
        """Send one request; connects first if needed. Returns True when a reused connection was used.

        Raises ConnectError / ConnectTimeout when connecting fails, ConnectionClosed when the
        socket fails while sending.
        """
        reused = self.sock is not None
        if not reused:
            self._connect()
        lines = [f"{method} {self.base_path}{path} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        guard = self.guard
        assert guard is not None
        guard.waiting_since = time.monotonic_ns()  # a send that blocks is cut like a read
        try:
            self.sock.sendall(head + body if body else head)  # type: ignore[union-attr]
        except OSError as exc:
            timed_out = guard.expired or isinstance(exc, TimeoutError)
            self.close()
            if timed_out:
                raise ReadTimeout("timed out while sending the request") from exc
            raise ConnectionClosed(f"connection failed while sending: {exc}") from exc
        finally:
            guard.waiting_since = 0
        return reused

    def read_response(self, method: str = "POST") -> Response:
        """Read the status line and headers; the body is left to ``Response.body``."""
        fp = self.fp
        try:
            while True:
                line = fp.readline(MAX_LINE)
                if not line:
                    raise ConnectionClosed("connection closed before the response status line")
                if not line.endswith(b"\n"):
                    raise ConnectionClosed("connection closed inside the response status line")
                parts = line.decode("latin-1").rstrip("\r\n").split(None, 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                    raise ProtocolError(f"not an HTTP response: {line[:80]!r}")
                version = parts[0]
                try:
                    status = int(parts[1])
                except ValueError as exc:
                    raise ProtocolError(f"bad status line: {line[:80]!r}") from exc
                reason = parts[2] if len(parts) > 2 else ""
                headers = self._read_headers(fp)
                if 100 <= status < 200 and status != 101:
                    continue  # informational (100 Continue); the real response follows
                break
        except TimeoutError as exc:
            raise ReadTimeout(f"no response within {self._current_timeout:g}s") from exc
        except (ConnectionError, OSError) as exc:
            if isinstance(exc, TransportError):
                raise
            raise ConnectionClosed(f"connection failed while waiting for the response: {exc}") from exc
        conn_hdr = headers.get("connection", "").lower()
        will_close = "close" in conn_hdr or (version == "HTTP/1.0" and "keep-alive" not in conn_hdr)
        te = headers.get("transfer-encoding", "").lower()
        if method == "HEAD" or status in (204, 304):
            body = _LengthBody(fp, 0)
        elif "chunked" in te:
            body = _ChunkedBody(fp)
        elif "content-length" in headers:
            try:
                n = int(headers["content-length"])
            except ValueError as exc:
                raise ProtocolError(f"bad content-length: {headers['content-length']!r}") from exc
            body = _LengthBody(fp, n)
        else:
            body = _CloseBody(fp)
            will_close = True
        return Response(status, reason, headers, body, will_close)

    @staticmethod
    def _read_headers(fp) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            h = fp.readline(MAX_LINE)
            if not h.endswith(b"\n"):
                raise ConnectionClosed("connection closed inside the response headers")
            if h in (b"\r\n", b"\n"):
                return headers
            name, sep, value = h.decode("latin-1").partition(":")
            if not sep:
                raise ProtocolError(f"bad header line: {h[:80]!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        raise ProtocolError(f"more than {MAX_HEADERS} response headers")

    def finish(self, response: Response) -> None:
        """Keep the connection when the response was complete and reusable; else close it."""
        if not response.reusable:
            self.close()
