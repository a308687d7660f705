"""The interop matrix, per live target and route: `harness run`, token counts vs usage, Locust runs.

Every request must be ``ok`` with TTFT/ITL/TPOT present and positive, and the tokens counted from
events must agree with the server's usage (``harness.metrics.token_mismatch``, EOS rule); where a
target sends no usage in its stream (llama.cpp's server), the same request is asked once more
without streaming and with greedy sampling, and its usage is the reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from interop_checks import SENDS_DONE, USAGE_IN_STREAM, check_ok_record

from harness.client import make_client
from harness.metrics import token_mismatch
from harness.records import RequestRecord

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROUTES = ("/v1/chat/completions", "/v1/completions")
#: prompts that make SmolLM2 write (a bare question on /v1/completions often ends at once on EOS)
PROMPTS = {"/v1/chat/completions": "Tell me about the sea in three sentences.",
           "/v1/completions": "Once upon a time, in a small village by the sea, there lived"}
OUTPUT_TOKENS = 16


@pytest.mark.parametrize("route", ROUTES)
def test_harness_run(target, route):
    """`harness run --protocol openai ... --json` against the live target: ok, timings, tokens, request id."""
    cmd = [str(BIN / "harness"), "run", "--protocol", "openai", "--host", target.url, "--endpoint", route,
           "--model-name", target.model_name, "--prompt", PROMPTS[route], "--max-new-tokens", str(OUTPUT_TOKENS),
           "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:], target.log()[-3000:])
    out = json.loads(p.stdout)
    rec = RequestRecord.from_dict(out["record"])
    check_ok_record(rec, target.name)
    assert rec.output_tokens_events <= OUTPUT_TOKENS
    m = out["metrics"]
    assert m["ttft_ms"] > 0 and m["tpot_ms"] > 0 and m["e2e_ms"] >= m["ttft_ms"]
    assert m["itl_ms"]["count"] == len(rec.token_ns) - 1 and m["itl_ms"]["max"] > 0
    assert rec.target == target.url + route


@pytest.mark.parametrize("route", ROUTES)
def test_token_counts_agree_with_usage(target, route):
    """Greedy request: streamed event count vs usage (in the stream, or of the same request unstreamed)."""
    extra = {"temperature": 0.0, "seed": 7}
    with make_client("openai", target.url, endpoint=route, model_name=target.model_name,
                     max_new_tokens=OUTPUT_TOKENS, extra_body=extra) as client:
        rec = client.stream(PROMPTS[route], keep_text=True)
    check_ok_record(rec, target.name)
    if USAGE_IN_STREAM[target.name]:
        assert token_mismatch(rec) is False
        return
    body = {"model": target.model_name, "max_tokens": OUTPUT_TOKENS, **extra}
    if route.endswith("/chat/completions"):
        body["messages"] = [{"role": "user", "content": PROMPTS[route]}]
    else:
        body["prompt"] = PROMPTS[route]
    r = httpx.post(target.url + route, json=body, timeout=120)
    assert r.status_code == 200, r.text
    twin = r.json()
    choice = twin["choices"][0]
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    assert text == rec.text, "greedy stream and unstreamed twin generated different text"
    assert choice["finish_reason"] == rec.finish_reason
    rec.output_tokens_server = twin["usage"]["completion_tokens"]
    assert token_mismatch(rec) is False, (rec.output_tokens_events, rec.output_tokens_server, rec.finish_reason)


def scenario(name: str) -> Path:
    """A Locust scenario file: ``scenarios/NAME`` in the checkout, else the installed ``harness.scenarios``."""
    p = ROOT / "scenarios" / name
    if p.is_file():
        return p
    import harness.scenarios

    return Path(harness.scenarios.__file__).parent / name


def _locust(tmp_path: Path, name: str, locustfile: Path, target, route: str, *extra: str) -> list[RequestRecord]:
    base = tmp_path / name
    base.mkdir()
    run_dir = base / "run"
    cmd = [str(BIN / "locust"), "-f", str(locustfile), "--host", target.url, "--headless", "--only-summary",
           "--protocol", "openai", "--endpoint", route, "--model-name", target.model_name,
           "--input-tokens", "fixed:32", "--output-tokens", f"fixed:{OUTPUT_TOKENS}", "-t", "12s",
           "--stop-timeout", "60", "--run-dir", str(run_dir), *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=base, timeout=120)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:], target.log()[-3000:])
    lines = (run_dir / "records.jsonl").read_text().splitlines()
    recs = [RequestRecord.from_dict(json.loads(line)) for line in lines if line.strip()]
    assert recs, p.stderr[-3000:]
    return recs


def _check_run(recs: list[RequestRecord], target, route: str) -> None:
    """Every record ok and consistent; at least one with several token events."""
    bad = [(r.outcome, r.error_text) for r in recs if r.outcome != "ok"]
    assert not bad, bad
    for r in recs:
        if not r.token_ns:  # sampling drew EOS first: an ok answer with nothing to time
            assert r.finish_reason == "stop" and r.output_tokens_events == 0, r
            continue
        check_ok_record(r, target.name, min_events=1)
        assert r.output_tokens_events <= OUTPUT_TOKENS and r.target == target.url + route
    assert any(len(r.token_ns) >= 2 for r in recs)
    assert len({r.request_id for r in recs}) == len(recs)
    assert all(r.done_missing is (not SENDS_DONE[target.name]) for r in recs)


@pytest.mark.parametrize("route", ROUTES)
def test_locust_closed_loop(target, route, tmp_path):
    """`locust -f scenarios/openai_chat.py`, 2 closed-loop users for 12 s: every request ok."""
    recs = _locust(tmp_path, "closed", scenario("openai_chat.py"), target, route, "-u", "2", "-r", "2")
    _check_run(recs, target, route)
    assert {r.user for r in recs} and len({r.user for r in recs}) <= 2


@pytest.mark.parametrize("route", ROUTES)
def test_locust_open_loop(target, route, tmp_path):
    """`locust -f scenarios/open_loop.py --protocol openai`, 1 user at 0.5 requests/s for 12 s: every request ok."""
    recs = _locust(tmp_path, "open", scenario("open_loop.py"), target, route, "-u", "1", "-r", "1",
                   "--rate", "0.5", "--arrival", "constant")
    _check_run(recs, target, route)
    assert all(r.intended_ns is not None and r.send_ns >= r.intended_ns for r in recs)
