"""Reference Locust users for benchmarks/client_cost.py: the same TGI stream read without the harness.

- ``BareUser``: a stdlib socket (gevent-patched by Locust) + ``BufferedReader.readline`` loop; per
  token event: stamp ``time.monotonic_ns()`` and ``json.loads`` the event, as the harness does; per
  request: TTFT and E2E request events (the pattern Locust documents for streaming responses).
- ``HttpxUser``: ``httpx.Client`` + ``httpx_sse.connect_sse``; same per-event and per-request work.
Both send ``X-Request-Id`` and, when ``BENCH_TOKENS_FILE`` is set, append one JSON line
``{"request_id", "send_ns", "token_ns"}`` per request at the end of the run (so their stamps can be joined
with the server trace like the harness's records). Deliberately no harness imports.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import ssl
import time
from urllib.parse import urlsplit

from locust import User, constant, events, task

_ids = itertools.count()
_done: list[str] = []
BODY = {"inputs": os.environ.get("BENCH_PROMPT", "a b c d e f g h"),
        "parameters": {"max_new_tokens": int(os.environ.get("BENCH_MAX_NEW_TOKENS", "64"))}}
_SSL = ssl.create_default_context()


def _fire(env, name: str, send_ns: int, toks: list[int], end_ns: int) -> None:
    if toks:
        env.events.request.fire(request_type="TTFT", name=name, response_time=(toks[0] - send_ns) / 1e6,
                                response_length=0, exception=None, context={})
    env.events.request.fire(request_type="E2E", name=name, response_time=(end_ns - send_ns) / 1e6,
                            response_length=len(toks), exception=None, context={})


class BareUser(User):
    wait_time = constant(0)

    def on_start(self) -> None:
        u = urlsplit(self.host)
        self.addr = (u.hostname, u.port or 80)
        self.sock = socket.create_connection(self.addr)
        self.fp = self.sock.makefile("rb")
        self.body = json.dumps(BODY).encode()

    @task
    def stream(self) -> None:
        rid = f"bare-{os.getpid()}-{next(_ids)}"
        head = (f"POST /generate_stream HTTP/1.1\r\nHost: {self.addr[0]}:{self.addr[1]}\r\n"
                f"Content-Type: application/json\r\nAccept: text/event-stream\r\nX-Request-Id: {rid}\r\n"
                f"Content-Length: {len(self.body)}\r\n\r\n").encode()
        send_ns = time.monotonic_ns()
        self.sock.sendall(head + self.body)
        readline = self.fp.readline
        while readline() not in (b"\r\n", b"\n", b""):  # status line and headers
            pass
        toks: list[int] = []
        loads, clock = json.loads, time.monotonic_ns
        while True:
            line = readline()
            if not line:
                break
            if line.startswith(b"data:"):
                t = clock()
                event = loads(line[5:])
                toks.append(t)
                if event.get("generated_text") is not None or "error" in event:
                    break
        while readline() not in (b"0\r\n", b""):  # rest of the chunked body
            pass
        readline()  # the final CRLF
        end_ns = time.monotonic_ns()
        _fire(self.environment, "bare", send_ns, toks, end_ns)
        _done.append(json.dumps({"request_id": rid, "send_ns": send_ns, "token_ns": toks}))


class HttpxUser(User):
    wait_time = constant(0)

    def on_start(self) -> None:
        import httpx

        self.client = httpx.Client(base_url=self.host, timeout=60.0, verify=_SSL)

    @task
    def stream(self) -> None:
        from httpx_sse import connect_sse

        rid = f"httpx-{os.getpid()}-{next(_ids)}"
        send_ns = time.monotonic_ns()
        toks: list[int] = []
        loads, clock = json.loads, time.monotonic_ns
        with connect_sse(self.client, "POST", "/generate_stream", json=BODY, headers={"X-Request-Id": rid}) as es:
            for sse in es.iter_sse():
                t = clock()
                event = loads(sse.data)
                toks.append(t)
                if event.get("generated_text") is not None or "error" in event:
                    break
        _fire(self.environment, "httpx", send_ns, toks, time.monotonic_ns())
        _done.append(json.dumps({"request_id": rid, "send_ns": send_ns, "token_ns": toks}))


@events.quitting.add_listener
def _write_tokens(environment, **_) -> None:
    path = os.environ.get("BENCH_TOKENS_FILE")
    if path:
        with open(path, "a") as fh:
            fh.write("".join(line + "\n" for line in _done))
    environment.process_exit_code = 0


@events.init_command_line_parser.add_listener
def _accept_level_options(parser) -> None:
    """harness.calibration.levels passes the harness's workload options; accepted and ignored here
    (the body above is the same 8-word prompt and 64 tokens)."""
    for name in ("--run-dir", "--input-tokens", "--output-tokens"):
        parser.add_argument(name, default="", include_in_web_ui=False)
