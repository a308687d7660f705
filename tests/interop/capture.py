"""Capture byte-exact wire fixtures from the live targets into tests/fixtures/wire/<target>-<case>.http.

Each fixture is one HTTP response exactly as it came off the socket (status line, headers, body
with its chunk framing), for a request sent with the harness client's headers (``X-Request-Id``
a UUID unless the case says otherwise) and body shape (``stream: true``, ``stream_options:
{"include_usage": true}``, ``max_tokens``, ``model``). ``live-captures.json`` beside the fixtures
records, per fixture, the request body, the HTTP status, the target's package versions and the
capture date. The venvs must exist (``python tests/interop/targets.py ensure``).

    .venv/bin/python tests/interop/capture.py [--target llamacpp|tserve] [--out DIR]

llama.cpp's server is started with its own default ``interrupt_requests`` (on), as a user gets it,
so that the ``chat-interrupted`` case shows what it does to a stream when a second request arrives.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import live
import rawhttp

ROOT = Path(__file__).resolve().parents[2]
WIRE = ROOT / "tests" / "fixtures" / "wire"
MANIFEST = "live-captures.json"
#: per route: a question for chat, a story opening for completions (a bare question there often ends at once on EOS)
PROMPTS = {"/v1/chat/completions": "Why is the sky blue?",
           "/v1/completions": "Once upon a time, in a small village by the sea, there lived"}
MAX_TOKENS = 8

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


def body(target: live.LiveTarget, path: str, prompt: str | None = None, max_tokens: int = MAX_TOKENS,
         **extra) -> dict:
    """The harness client's request body for ``path`` (see harness/client/openai.py), plus ``extra``."""
    prompt = PROMPTS[path] if prompt is None else prompt
    b: dict = {"model": target.model_name}
    if path == CHAT:
        b["messages"] = [{"role": "user", "content": prompt}]
    else:
        b["prompt"] = prompt
    b.update({"max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}})
    b.update(extra)
    return {k: v for k, v in b.items() if v is not None}


@dataclass
class Case:
    """One fixture: ``make(target) -> (path, body, request_id)``; ``note`` says what it shows."""

    name: str
    make: Callable[[live.LiveTarget], tuple[str, dict, str | None]]
    note: str
    subdir: str = ""  #: "pending": kept beside, not yet replayed by tests/client/test_client_fixtures.py


def _long(n_words: int) -> str:
    return "hello " * n_words


LLAMACPP_CASES = [
    Case("chat-stream", lambda t: (CHAT, body(t, CHAT), "uuid"),
         "role chunk, one content chunk per token, empty-delta finish_reason chunk, data: [DONE]; no usage"),
    Case("completion-stream", lambda t: (COMPLETIONS, body(t, COMPLETIONS), "uuid"),
         "text chunks, empty-text finish_reason chunk, data: [DONE]; no usage"),
    Case("bad-model", lambda t: (CHAT, body(t, CHAT, model="no-such-model"), "uuid"),
         "an unknown model name is served by the default model (and echoed in each chunk)"),
    Case("long-prompt", lambda t: (CHAT, body(t, CHAT, prompt=_long(live.LLAMA_N_CTX + 100)), "uuid"),
         "prompt over the context: 200 text/event-stream and an empty chunked body (the error only in the log)"),
    Case("bad-top-p", lambda t: (CHAT, body(t, CHAT, top_p=5), "uuid"),
         "request validation error as HTTP 500 internal_server_error with pydantic's text"),
    Case("bad-max-tokens", lambda t: (COMPLETIONS, body(t, COMPLETIONS, max_tokens=-1), "uuid"),
         "completions max_tokens=-1: HTTP 500 internal_server_error (chat accepts -1 as 'no limit')"),
    Case("bad-temperature", lambda t: (CHAT, body(t, CHAT, temperature=-5), "uuid"),
         "temperature=-5 is accepted and served"),
    Case("request-id-not-uuid", lambda t: (CHAT, body(t, CHAT), "0123456789abcdef"),
         "X-Request-Id that is not a UUID: HTTP 400 with an empty body"),
]

TSERVE_CASES = [
    Case("chat-stream", lambda t: (CHAT, body(t, CHAT), "uuid"),
         "role chunk, content chunks, finish_reason chunk with usage; no data: [DONE]"),
    Case("completion-stream", lambda t: (COMPLETIONS, body(t, COMPLETIONS), "uuid"),
         "text chunks, finish_reason chunk with usage; no data: [DONE]"),
    Case("bad-model", lambda t: (CHAT, body(t, CHAT, model="no-such-model"), "uuid"),
         "HTTP 400 FastAPI {\"detail\": \"Server is pinned to ...\"}"),
    Case("long-prompt", lambda t: (COMPLETIONS, body(t, COMPLETIONS, prompt=_long(8300), max_tokens=2), "uuid"),
         "no prompt length check: 8301 prompt tokens (model context 8192) are served"),
    Case("bad-field", lambda t: (CHAT, body(t, CHAT, temprature=0.5), "uuid"),
         "an unknown request field: HTTP 422 {\"detail\": \"Unexpected fields in the request: ...\"}"),
    Case("bad-max-tokens", lambda t: (CHAT, body(t, CHAT, max_tokens=-1), "uuid"),
         "max_tokens=-1: a 200 stream with no token, finish_reason length, completion_tokens 0"),
    Case("bad-temperature", lambda t: (CHAT, body(t, CHAT, temperature=-5), "uuid"),
         "temperature=-5 is accepted (continuous batching keeps the first request's sampling config)"),
]

CASES = {"llamacpp": LLAMACPP_CASES, "tserve": TSERVE_CASES}


def _interrupted(t: live.LiveTarget) -> tuple[dict, rawhttp.Exchange]:
    """A long stream, cut by a second request that arrives while it runs (llama.cpp's default)."""
    b = body(t, CHAT, prompt="Write a long story about a lighthouse keeper.", max_tokens=200)
    result: dict = {}

    def first() -> None:
        result["ex"] = rawhttp.exchange(t.url, rawhttp.build_request(t.url, CHAT, b))

    th = threading.Thread(target=first)
    th.start()
    time.sleep(0.5)
    rawhttp.exchange(t.url, rawhttp.build_request(t.url, CHAT, body(t, CHAT, max_tokens=2)))
    th.join(120)
    return b, result["ex"]


def capture(name: str, out: Path, tmp: Path) -> list[dict]:
    """Start target ``name``, capture each of its cases into ``out``; returns the manifest entries."""
    start = live.start_llamacpp(tmp, interrupt=True) if name == "llamacpp" else live.STARTERS[name](tmp)
    entries = []
    try:
        # one request first, so that one-time warm-up is not in the fixtures' timing-free bytes anyway
        rawhttp.exchange(start.url, rawhttp.build_request(start.url, CHAT, body(start, CHAT, max_tokens=2)))
        jobs: list[tuple[str, str, str, Callable[[], tuple[str, dict, rawhttp.Exchange]]]] = []
        for case in CASES[name]:
            def run(case=case):
                path, b, rid = case.make(start)
                return path, b, rawhttp.exchange(start.url, rawhttp.build_request(start.url, path, b, request_id=rid))
            jobs.append((case.name, case.note, case.subdir, run))
        if name == "llamacpp":
            def run_interrupted():
                b, ex = _interrupted(start)
                return CHAT, b, ex
            jobs.append(("chat-interrupted", "with interrupt_requests on (the default) a second request cuts "
                         "a running stream: data: [DONE] right after a content chunk, no finish_reason, and "
                         "the chunked body is never terminated", "", run_interrupted))
        for case_name, note, subdir, run in jobs:
            path, b, ex = run()
            fname = f"{subdir}/{name}-{case_name}.http" if subdir else f"{name}-{case_name}.http"
            (out / fname).parent.mkdir(exist_ok=True)
            (out / fname).write_bytes(ex.raw)
            shown = dict(b)
            if isinstance(shown.get("prompt"), str) and len(shown["prompt"]) > 200:
                shown["prompt"] = f"'hello ' * {shown['prompt'].count('hello')}"
            if "messages" in shown and len(shown["messages"][0]["content"]) > 200:
                shown["messages"] = [{"role": "user",
                                      "content": f"'hello ' * {shown['messages'][0]['content'].count('hello')}"}]
            entries.append({"fixture": fname, "target": name, "method": "POST", "path": path, "body": shown,
                            "x_request_id": ex.request.split(b"X-Request-Id: ")[1].split(b"\r\n")[0].decode()
                            if b"X-Request-Id: " in ex.request else None,
                            "status": ex.status, "note": note, "versions": start.versions,
                            "captured": dt.date.today().isoformat()})
            print(f"{fname}: HTTP {ex.status}, {len(ex.raw)} bytes", flush=True)
    finally:
        start.stop()
    return entries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=sorted(CASES), action="append", help="target(s) to capture (default: all)")
    ap.add_argument("--out", type=Path, default=WIRE, help=f"fixture folder (default: {WIRE})")
    args = ap.parse_args(argv)
    if not args.out.is_dir():
        print(f"capture: --out {args.out} is not a directory", file=sys.stderr)
        return 2
    names = args.target or sorted(CASES)
    manifest_path = args.out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else []
    with tempfile.TemporaryDirectory(prefix="interop-capture-") as tmp:
        for name in names:
            try:
                entries = capture(name, args.out, Path(tmp) / name)
            except (FileNotFoundError, RuntimeError) as exc:
                print(f"capture: {name}: {str(exc).splitlines()[0]}", file=sys.stderr)
                return 1
            manifest = [e for e in manifest if e["target"] != name] + entries
    manifest.sort(key=lambda e: e["fixture"])
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
