"""`harness run`: stream one request, print the answer as it arrives, then its TTFT, ITL and tokens.

Exit status: 0 when the request ended ok, 1 when it failed (the outcome is printed), 2 for bad
input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from harness.client import PROTOCOLS, REQUEST_ID_HEADER, RetryPolicy, Timeouts, make_client
from harness.metrics import EOS_FINISH_REASONS, distribution, e2e_ms, itl_ms, ttfb_ms, ttft_ms
from harness.metrics import tpot_ms as tpot
from harness.records import RequestRecord
from harness.usage import CliError
from harness.workload import Prompt, count_tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="tgi",
                        help="wire protocol (default: tgi)")
    parser.add_argument("--host", default="http://127.0.0.1:3000",
                        help="server base URL (default: http://127.0.0.1:3000)")
    parser.add_argument("--endpoint", default=None,
                        help="route; default /generate_stream (tgi) or /v1/chat/completions (openai); "
                             "also / (tgi) and /v1/completions (openai)")
    parser.add_argument("--prompt", required=True, help="the prompt text")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="output token budget (default: 64)")
    parser.add_argument("--model-name", default=None, help="OpenAI 'model' field (default: not sent)")
    parser.add_argument("--api-key", default=os.environ.get("HARNESS_API_KEY"),
                        help="sent as 'Authorization: Bearer KEY' (default: $HARNESS_API_KEY)")
    parser.add_argument("--timeout", type=float, default=600.0, help="total timeout, s (default: 600)")
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="connect timeout, s (default: 10)")
    parser.add_argument("--read-timeout", type=float, default=60.0,
                        help="timeout between tokens, s (default: 60)")
    parser.add_argument("--retries", type=int, default=0,
                        help="retries of overloaded answers (429/503), honouring Retry-After (default: 0)")
    parser.add_argument("--request-id-header", default=REQUEST_ID_HEADER,
                        help=f"header that carries the request's UUID; '' sends none (default: {REQUEST_ID_HEADER})")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (record and metrics) instead of the streamed text")


def _base_url(host: str) -> str:
    host = host.strip()
    if "://" not in host:
        host = "http://" + host
    if not host.startswith(("http://", "https://")):
        raise CliError(f"--host must be an http(s) URL, got {host!r}")
    return host


def _metrics(rec: RequestRecord) -> dict:
    return {
        "ttft_ms": ttft_ms(rec),
        "ttfb_ms": ttfb_ms(rec),
        "itl_ms": distribution(itl_ms(rec)),
        "tpot_ms": tpot(rec),
        "e2e_ms": e2e_ms(rec),
    }


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


#: finish reasons that mean the model emitted its end-of-sequence token (TGI, OpenAI)
EOS_REASONS = frozenset({"eos_token", "stop"})


def token_note(rec: RequestRecord) -> str:
    """The ``tokens`` line's counts explained (harness.metrics' token rules), indented under it."""
    parts = []
    srv = rec.output_tokens_server
    if srv is not None and srv == rec.output_tokens_events + 1 and rec.finish_reason in EOS_FINISH_REASONS:
        parts.append("the server's count includes the end-of-sequence token, which sends no visible event")
    elif srv is not None and srv != rec.output_tokens_events:
        parts.append("server and client output counts differ (a token mismatch)")
    if rec.input_tokens_server is not None:
        parts.append("input per server: the prompt as the server tokenized it (chat template and special tokens included)")
    if rec.input_tokens_client is not None:
        parts.append("~estimated = 1.3 tokens per word of the prompt text, client-side and approximate")
    return "         (" + "; ".join(parts) + ")" if parts else ""


def ended_at_once(rec: RequestRecord, protocol: str, endpoint: str | None) -> str | None:
    """A hint when an ok request ended with EOS after at most one token (an empty answer), else None.

    TGI's ``/generate_stream`` and ``/`` and OpenAI's ``/v1/completions`` send the prompt as raw text,
    without the model's chat template; an instruction-tuned model (the bundled SmolLM2-Instruct) then
    often emits EOS at once. The chat route applies the template.
    """
    tokens = rec.output_tokens_server if rec.output_tokens_server is not None else rec.output_tokens_events
    if not rec.ok or rec.finish_reason not in EOS_REASONS or tokens > 1:
        return None
    ep = (endpoint or "").rstrip("/")
    raw = protocol != "openai" or (ep.endswith("/completions") and not ep.endswith("/chat/completions"))
    if raw:
        return (f"note: the model ended at once (EOS after {tokens} token{'s' if tokens != 1 else ''}): this route "
                "sends the prompt as raw text without a chat template, and instruction-tuned models need it; "
                "try --protocol openai (the chat route, /v1/chat/completions)")
    return f"note: the model ended at once (EOS after {tokens} token{'s' if tokens != 1 else ''})"


def run(args: argparse.Namespace) -> int:
    if not args.prompt:
        raise CliError("--prompt must not be empty")
    if args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.retries < 0:
        raise CliError(f"--retries must be >= 0, got {args.retries}")
    try:
        timeouts = Timeouts(args.connect_timeout, args.read_timeout, args.timeout)
        client = make_client(args.protocol, _base_url(args.host), endpoint=args.endpoint, api_key=args.api_key,
                             model_name=args.model_name, timeouts=timeouts,
                             retry=RetryPolicy(max_retries=args.retries), max_new_tokens=args.max_new_tokens,
                             request_id_header=args.request_id_header)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    prompt = Prompt(text=args.prompt, input_tokens=count_tokens(args.prompt))

    def echo(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    with client:
        rec = client.stream(prompt, keep_text=True, on_text=None if args.json else echo)
    m = _metrics(rec)
    hint = ended_at_once(rec, args.protocol, args.endpoint)
    if args.json:
        print(json.dumps({"record": asdict(rec), "metrics": m}, indent=2, ensure_ascii=False))
        if hint:
            print(hint, file=sys.stderr)
        return 0 if rec.ok else 1
    if rec.text:
        print()
    print()
    itl = m["itl_ms"]
    status = f"HTTP {rec.http_status}" if rec.http_status is not None else "no HTTP response"
    print(f"outcome  {rec.outcome} ({status}, finish_reason {rec.finish_reason or '-'}"
          f"{f', retries {rec.retries}' if rec.retries else ''})")
    if rec.error_text:
        print(f"error    {rec.error_text}")
    print(f"TTFT     {_fmt(m['ttft_ms'])}   (TTFB {_fmt(m['ttfb_ms'])})")
    if itl.get("count"):
        print(f"ITL      p50 {itl['p50']:.1f} ms  p90 {itl['p90']:.1f} ms  p99 {itl['p99']:.1f} ms  "
              f"mean {itl['mean']:.1f} ms  ({itl['count']} gaps)")
    else:
        print("ITL      -")
    print(f"TPOT     {_fmt(m['tpot_ms'])}")
    print(f"E2E      {_fmt(m['e2e_ms'])}")
    server = "-" if rec.output_tokens_server is None else str(rec.output_tokens_server)
    inp = "-" if rec.input_tokens_server is None else str(rec.input_tokens_server)
    print(f"tokens   {rec.output_tokens_events} in {len(rec.token_ns)} events, {server} per server"
          f"{f', {rec.reasoning_events} reasoning events' if rec.reasoning_events else ''}; "
          f"input {inp} per server, ~{rec.input_tokens_client} estimated")
    if note := token_note(rec):
        print(note)
    if hint:
        print(hint)
    return 0 if rec.ok else 1
