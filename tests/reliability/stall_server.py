"""A loopback peer that answers every request with SSE headers and ``events`` TGI token events,
then stops sending and holds the connection open (a stalled target)."""

from __future__ import annotations

import json
import socket
import threading


class StallServer:
    def __init__(self, events: int = 2) -> None:
        self.events = events
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            conn.sendall(head)
            for i in range(1, self.events + 1):
                ev = ("data: " + json.dumps({"index": i, "token": {"id": i, "text": " a", "logprob": -1.0,
                                                                  "special": False},
                                             "generated_text": None, "details": None}) + "\n\n").encode()
                conn.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
            self._stop.wait()  # stall: never another byte
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
