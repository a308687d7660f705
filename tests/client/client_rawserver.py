"""A tiny raw HTTP/1.1 peer on 127.0.0.1 that writes exactly the bytes a test scripts.

Each response is a list of ``(delay_s, bytes)`` pieces written with TCP_NODELAY, or the
sentinel ``CLOSE`` (close the connection right there). The script is a function of the parsed
request (method, path, headers, body), so a test can also check what the client sent. Used by
the parser tests: it is a real peer over loopback, not a mock.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSE = b"<close>"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


Script = Callable[[Request], list[tuple[float, bytes]]]


def sse_head(status: int = 200, extra: str = "", chunked: bool = True) -> bytes:
    te = "Transfer-Encoding: chunked\r\n" if chunked else ""
    return (f"HTTP/1.1 {status} X\r\nContent-Type: text/event-stream\r\n{te}{extra}\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


END = b"0\r\n\r\n"


def json_response(status: int, obj: object, extra: str = "") -> bytes:
    body = json.dumps(obj).encode()
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{extra}\r\n").encode() + body


@dataclass
class RawServer:
    script: Script
    requests: list[Request] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fp = conn.makefile("rb")
        try:
            while True:
                line = fp.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (h := fp.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = fp.read(int(headers.get("content-length", 0)))
                req = Request(method, path, headers, body)
                self.requests.append(req)
                for delay, data in self.script(req):
                    if delay:
                        time.sleep(delay)
                    if data == CLOSE:
                        return
                    conn.sendall(data)
        except OSError:
            return
        finally:
            fp.close()
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()
