"""Helpers shared by the reliability tests: the storm driver (benchmarks/soak_disconnect.py is the
one implementation, the tests run it bounded), log checks, raw HTTP over loopback."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

import soak_disconnect  # noqa: E402

LOCUST = str(Path(sys.executable).with_name("locust"))
SCENARIOS = ROOT / "scenarios"
HARNESS = [sys.executable, "-m", "harness"]

__all__ = ["soak_disconnect", "raw_http", "LOCUST", "SCENARIOS", "ROOT", "HARNESS", "no_tracebacks"]


def raw_http(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes, read the answer to EOF or its Content-Length; (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        while True:
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if length is not None and len(body) >= length:
                    break
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def no_tracebacks(log: str) -> None:
    """The server's log holds no traceback (an unhandled error under load is a defect)."""
    assert "Traceback" not in log, log[log.index("Traceback") - 300:][:3000]
