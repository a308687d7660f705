"""Replays every wire fixture (tests/fixtures/wire/*.http) through the client over a real socket.

Fixtures are the exact bytes of an HTTP response: captured from live servers (llama.cpp's server,
``transformers serve``; see that folder's README.md) or written from the documentation of servers
that cannot run here (vLLM, SGLang, TGI old and new, Ollama's OpenAI mode). ``expected.toml`` says
what the client must make of each; docs/protocol-tolerance.md names these tests per variant.
Each fixture is replayed twice: in one write, and cut into small pieces (boundaries inside lines,
CRLF pairs and chunk headers) written one by one.
"""

from __future__ import annotations

import re
import time
import tomllib
from pathlib import Path

import pytest
from client_rawserver import CLOSE, RawServer

from harness.client import make_client

WIRE = Path(__file__).resolve().parent.parent / "fixtures" / "wire"
EXPECTED = tomllib.loads((WIRE / "expected.toml").read_text())
FIXTURES = sorted(p.stem for p in WIRE.glob("*.http"))
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
META = {"source", "protocol", "endpoint", "error_contains", "model"}


def test_every_fixture_has_an_expectation_and_every_expectation_a_fixture():
    assert FIXTURES and set(FIXTURES) == set(EXPECTED)


def _replay(raw: bytes, piece: int | None):
    def script(_req):
        if piece is None:
            return [(0, raw), (0, CLOSE)]
        return [(0.0002, raw[i:i + piece]) for i in range(0, len(raw), piece)] + [(0, CLOSE)]
    return script


@pytest.mark.parametrize("piece", [None, 7], ids=["whole", "pieces"])
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_replay(name, piece):
    exp = EXPECTED[name]
    raw = (WIRE / f"{name}.http").read_bytes()
    srv = RawServer(_replay(raw, piece))
    try:
        t0 = time.monotonic_ns()
        with make_client(exp["protocol"], srv.url, endpoint=exp.get("endpoint"), model_name=exp.get("model"),
                         max_new_tokens=8) as client:
            rec = client.stream("Why is the sky blue?")
    finally:
        srv.close()
    assert rec.outcome == exp["outcome"], (rec.outcome, rec.error_text)
    for key, want in exp.items():
        if key not in META:
            assert getattr(rec, key) == want, (key, getattr(rec, key), want)
    if "error_contains" in exp:
        assert exp["error_contains"] in (rec.error_text or ""), rec.error_text
    if rec.outcome == "ok":
        assert rec.error_text is None
        stamps = [rec.send_ns, *rec.token_ns, rec.end_ns]  # a stream may end ok with no token (max_tokens 0)
        assert t0 <= stamps[0] and stamps == sorted(stamps)
    assert UUID.fullmatch(srv.requests[0].headers["x-request-id"])


def test_no_request_id_header_when_disabled():
    raw = (WIRE / "generic-done-without-finish-reason.http").read_bytes()
    srv = RawServer(_replay(raw, None))
    try:
        with make_client("openai", srv.url, request_id_header="") as client:
            rec = client.stream("hi")
        with make_client("openai", srv.url, request_id_header="X-Correlation-Id") as client:
            rec2 = client.stream("hi")
    finally:
        srv.close()
    assert rec.outcome == rec2.outcome == "ok"
    assert "x-request-id" not in srv.requests[0].headers
    assert srv.requests[1].headers["x-correlation-id"] == rec2.request_id
    with pytest.raises(ValueError, match="bad request-id header name"):
        make_client("openai", srv.url, request_id_header="X Bad: 1")
