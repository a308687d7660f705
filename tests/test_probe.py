"""`harness probe`: against the real reference server (TGI + OpenAI routes), scripted raw peers for the
variants it does not produce, and the printed commands run for real (Locust, sweep) through a shell."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).parent / "client"), str(Path(__file__).parent / "locust")]
from client_rawserver import END, RawServer, Request, chunk, json_response, sse_head  # noqa: E402
from locust_helpers import LOCUST, SIM  # noqa: E402

BIN = Path(sys.executable).parent
ENV = {k: v for k, v in os.environ.items() if k != "HARNESS_API_KEY"}


def probe(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "probe", *args], capture_output=True, text=True,
                          timeout=60, env={**ENV, **(env or {})})


def probe_json(*args: str) -> tuple[int, dict]:
    out = probe(*args, "--json")
    return out.returncode, json.loads(out.stdout)


def routes(data: dict) -> dict[str, dict]:
    return {r["endpoint"]: r for r in data["probe"]["routes"]}


def commands(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if line.strip().startswith(("locust ", "harness sweep "))]


# --------------------------------------------------------------------------- reference server


def test_reference_server_tgi_and_openai(serve):
    server = serve(SIM)
    rc, data = probe_json("--host", server.url, "--max-tokens", "12")
    assert rc == 0 and data["usable"] and data["reason"] is None
    p = data["probe"]
    assert p["model_name"] == "simulated" and p["model_source"] == "/v1/models"
    assert p["info"]["model_id"] == "simulated"
    assert p["request_id_accepted"] is True
    r = routes(data)
    assert {ep: x["status"] for ep, x in r.items()} == {
        "/generate_stream": "ok", "/v1/chat/completions": "ok", "/v1/completions": "ok"}
    # the reference server's shapes: TGI details on the last event; chat usage in a choices:[] chunk,
    # completions usage on the last content chunk; [DONE] on both OpenAI routes
    assert r["/generate_stream"]["usage"] == "final_event" and r["/generate_stream"]["done"] is None
    assert r["/v1/chat/completions"]["usage"] == "separate_chunk" and r["/v1/chat/completions"]["done"] is True
    assert r["/v1/completions"]["usage"] == "last_chunk" and r["/v1/completions"]["done"] is True
    for x in r.values():
        assert x["events"] == x["tokens_server"] == 12 and x["tokens_per_event"] == 1.0  # one token per event
        assert x["token_mismatch"] is False
        assert x["ttft_ms"] > 0 and x["itl_ms"]["count"] == 11 and x["itl_ms"]["p50"] > 0
    assert len(data["commands"]["locust"]) == 3 and "--protocol tgi" in data["commands"]["sweep"]
    assert len(data["findings"]) == 7  # host, server, model, 3 routes, request id


def test_printed_commands_run(serve, tmp_path):
    """Each printed command, run by a shell with a short duration, records ok requests."""
    server = serve(SIM)
    out = probe("--host", server.url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("host") and any("POST /v1/chat/completions: streams" in x for x in lines)
    cmds = commands(out.stdout)
    locusts = [c for c in cmds if c.startswith("locust ")]
    (sweep,) = [c for c in cmds if c.startswith("harness sweep ")]
    chat = next(c for c in locusts if "/v1/chat/completions" in c)
    tgi = next(c for c in locusts if "/generate_stream" in c)
    for name, cmd in (("chat", chat), ("tgi", tgi)):
        run_dir = tmp_path / name
        shell = (cmd.replace("locust ", shlex.quote(LOCUST) + " ", 1).replace("-t 1m", "-t 3s")
                 + f" --run-dir {shlex.quote(str(run_dir))} --only-summary --output-tokens fixed:8")
        done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=90, cwd=tmp_path, env=ENV)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        recs = [json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines() if x.strip()]
        assert recs and all(r["outcome"] == "ok" for r in recs)
        assert {r["target"] for r in recs} == {server.url + ("/v1/chat/completions" if name == "chat"
                                                             else "/generate_stream")}
    out_dir = tmp_path / "sweep"
    shell = (sweep.replace("harness ", shlex.quote(str(BIN / "harness")) + " ", 1).replace("--users 1,4,16", "--users 1")
             + f" --duration 2 --warmup 0 --no-point-reports --output-tokens fixed:8 --out {shlex.quote(str(out_dir))}")
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=180, cwd=tmp_path, env=ENV)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    recs = [json.loads(x) for x in (out_dir / "external" / "users-1" / "records.jsonl").read_text().splitlines()]
    assert recs and all(r["outcome"] == "ok" and r["target"] == server.url + "/generate_stream" for r in recs)


def test_api_key(serve):
    server = serve([*SIM, "--api-key", "s3cret"])
    out = probe("--host", server.url)
    assert out.returncode == 1 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "needs --api-key" in out.stderr
    wrong = probe("--host", server.url, "--api-key", "nope")
    assert wrong.returncode == 1 and "rejects the API key" in wrong.stderr
    ok = probe("--host", server.url, env={"HARNESS_API_KEY": "s3cret"})
    assert ok.returncode == 0, ok.stderr
    assert "s3cret" not in ok.stdout and '--api-key "$HARNESS_API_KEY"' in ok.stdout
    assert '--api-key \\"$HARNESS_API_KEY\\""' in ok.stdout  # inside the sweep's --locust-args


# --------------------------------------------------------------------------- unusable / bad options


def test_refused_port_one_line(tmp_path):
    from serverproc import free_port

    host = f"http://127.0.0.1:{free_port()}"
    out = probe("--host", host)
    assert out.returncode == 1 and out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    assert host in line and "refused" in line.lower()
    rc, data = probe_json("--host", host)
    assert rc == 1 and data["usable"] is False and "refused" in data["reason"].lower() and "probe" not in data


@pytest.mark.parametrize("args", [["--host", "ftp://x"], ["--host", "http://127.0.0.1:9", "--timeout", "0"],
                                  ["--host", "http://127.0.0.1:9", "--max-tokens", "0"]])
def test_bad_options_exit_2(args):
    out = probe(*args)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


# --------------------------------------------------------------------------- scripted peers


MODELS = json_response(200, {"object": "list", "data": [{"id": "raw-model", "object": "model"}]})
NOT_FOUND = json_response(404, {"error": {"message": "Not Found", "type": "not_found_error"}})


def _chunk(obj: dict | str) -> bytes:
    return chunk(b"data: " + (obj if isinstance(obj, str) else json.dumps(obj)).encode() + b"\n\n")


def openai_stream(req: Request, usage: str = "last", done: bool = True, n: int = 4) -> bytes:
    """An OpenAI stream of ``n`` one-token chunks; usage on the last one, in a choices:[] chunk, or none."""
    chat = req.path.endswith("/chat/completions")
    u = {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": n + 3}
    out = sse_head()
    for i in range(n):
        c = {"index": 0, "finish_reason": "length" if i == n - 1 else None}
        c.update({"delta": {"content": f" w{i}"}} if chat else {"text": f" w{i}"})
        obj: dict = {"object": "chat.completion.chunk", "model": "raw-model", "choices": [c]}
        if usage == "last" and i == n - 1:
            obj["usage"] = u
        out += _chunk(obj)
    if usage == "separate":
        out += _chunk({"object": "chat.completion.chunk", "model": "raw-model", "choices": [], "usage": u})
    if done:
        out += _chunk("[DONE]")
    return out + END


def raw(post) -> RawServer:
    """A peer with /v1/models, no TGI routes, and ``post(req)`` answering the OpenAI POSTs."""
    def script(req: Request) -> list[tuple[float, bytes]]:
        if req.method == "GET":
            return [(0, MODELS if req.path == "/v1/models" else NOT_FOUND)]
        if not req.path.startswith("/v1/"):
            return [(0, NOT_FOUND)]
        answer = post(req)
        return answer if isinstance(answer, list) else [(0, answer)]
    return RawServer(script)


@pytest.fixture
def peer():
    started: list[RawServer] = []

    def _start(post) -> RawServer:
        started.append(raw(post))
        return started[-1]

    yield _start
    for s in started:
        s.close()


def test_rejected_request_id_is_reported_and_left_out(peer, tmp_path):
    def post(req: Request) -> list[tuple[float, bytes]]:
        if "x-request-id" in req.headers:
            return [(0, json_response(400, {"error": {"code": 400, "message": "Invalid X-Request-Id header",
                                                      "type": "invalid_request_error"}}))]
        return [(0.05, openai_stream(req))]  # paced: the Locust run below stays at ~20 requests/s

    s = peer(post)
    rc, data = probe_json("--host", s.url)
    assert rc == 0, data
    p = data["probe"]
    assert p["request_id_accepted"] is False and "Invalid X-Request-Id header" in p["request_id_error"]
    assert all(r["status"] == "ok" for ep, r in routes(data).items() if ep != "/generate_stream")
    assert routes(data)["/generate_stream"]["status"] == "absent"
    assert all("--request-id-header ''" in c for c in data["commands"]["locust"])
    assert "--request-id-header ''" in data["commands"]["sweep"]
    sent = [r.headers["x-request-id"] for r in s.requests if "x-request-id" in r.headers]
    assert sent and all(str(uuid.UUID(x)) == x for x in sent)  # the header it tried carried a UUID
    out = probe("--host", s.url)
    assert any(re.match(r"request id\s+server rejects X-Request-Id: .*Invalid X-Request-Id", x)
               for x in out.stdout.splitlines())
    # the printed command (with --request-id-header '') is accepted by this peer
    cmd = next(c for c in commands(out.stdout) if c.startswith("locust ") and "/v1/chat/completions" in c)
    run_dir = tmp_path / "run"
    shell = (cmd.replace("locust ", shlex.quote(LOCUST) + " ", 1).replace("-t 1m", "-t 2s").replace("-u 4 -r 4", "-u 1 -r 1")
             + f" --run-dir {shlex.quote(str(run_dir))} --only-summary")
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=90, cwd=tmp_path, env=ENV)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    recs = [json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines() if x.strip()]
    assert recs and all(r["outcome"] == "ok" for r in recs)


@pytest.mark.parametrize("usage,done", [("separate", False), ("none", True), ("last", False)])
def test_usage_and_done_variants(peer, usage, done):
    s = peer(lambda req: openai_stream(req, usage=usage, done=done))
    rc, data = probe_json("--host", s.url)
    assert rc == 0, data
    chat = routes(data)["/v1/chat/completions"]
    assert chat["status"] == "ok" and chat["done"] is done
    assert chat["usage"] == {"separate": "separate_chunk", "none": "absent", "last": "last_chunk"}[usage]
    assert chat["tokens_server"] == (None if usage == "none" else 4) and chat["events"] == 4
    assert data["probe"]["model_name"] == "raw-model"
    text = probe("--host", s.url).stdout
    assert ("no [DONE]" in text) is (not done)


def test_json_instead_of_sse_is_not_usable(peer):
    s = peer(lambda req: json_response(200, {"choices": [{"index": 0, "text": "hi"}]}))
    out = probe("--host", s.url)
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert "no streaming" in line and "application/json" in line


def test_every_route_404():
    s = RawServer(lambda req: [(0, NOT_FOUND)])
    try:
        out = probe("--host", s.url)
    finally:
        s.close()
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert "no streaming route" in line and "404" in line and "/v1/chat/completions" in line


def test_stalled_stream_is_a_timeout_with_a_hint(peer):
    s = peer(lambda req: [(0, sse_head()), (3.0, END)])  # headers, then nothing within the budget
    out = probe("--host", s.url, "--timeout", "2")
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert "timeout" in line and "--timeout" in line
