"""W3C traceparent: derived from the request id, sent by the client, logged and traced by the reference server."""

from __future__ import annotations

import json
import uuid

from harness.client import make_client
from harness.client.tracecontext import parse_traceparent, span_id_of, trace_id_of, traceparent

SIM = ["--model", "simulated", "--sim-ttft-ms", "5", "--sim-itl-ms", "2", "--sim-jitter-ms", "0"]


def test_header_is_derived_from_the_request_id_and_parses_back():
    rid = str(uuid.uuid4())
    value = traceparent(rid)
    version, tid, sid, flags = value.split("-")
    assert (version, flags) == ("00", "01")
    assert tid == uuid.UUID(rid).hex == trace_id_of(rid) and sid == span_id_of(tid)
    assert parse_traceparent(value) == (tid, sid)
    # a request id that is not a UUID still gets a valid, stable 32-hex trace id
    other = trace_id_of("not-a-uuid")
    assert len(other) == 32 and int(other, 16) and other == trace_id_of("not-a-uuid")
    assert parse_traceparent(traceparent("not-a-uuid")) is not None


def test_parser_follows_the_w3c_rules():
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"  # the specification's example
    assert parse_traceparent(good) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra") is not None
    for bad in (None, "", good.upper(), "ff" + good[2:], "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", good + "-extra", good[:-1]):
        assert parse_traceparent(bad) is None, bad


def test_reference_server_logs_and_traces_the_trace_id(serve, tmp_path):
    trace = tmp_path / "trace.jsonl"
    server = serve([*SIM, "--trace-file", str(trace), "--log-level", "debug"])
    with make_client("tgi", server.url, max_new_tokens=4) as on, \
            make_client("openai", server.url, max_new_tokens=4) as chat:
        recs = [on.stream("hello"), chat.stream("hello")]
        off_client = make_client("tgi", server.url, max_new_tokens=4)
        off_client.send_traceparent = False
        off = off_client.stream("hello")
        off_client.close()
    assert all(r.ok for r in [*recs, off])
    server.stop()  # flushes the trace file
    lines = [json.loads(x) for x in trace.read_text().splitlines() if x.strip()]
    by_rid: dict[str, set] = {}
    for d in lines:
        by_rid.setdefault(d["request_id"], set()).add(d.get("trace_id"))
    for r in recs:
        assert by_rid[r.request_id] == {trace_id_of(r.request_id)}
    assert by_rid[off.request_id] == {None}
    log = server.log()
    for r in recs:
        line = next(x for x in log.splitlines() if f"request {r.request_id} trace" in x)
        assert f"trace {trace_id_of(r.request_id)} status=done events=" in line
    assert f"request {off.request_id} trace - status=done" in log
