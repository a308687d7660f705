"""`harness probe --host URL`: a ~10-second check of an endpoint, and the commands to run next.

Prints one line per finding (model, each route: streams or why not, tokens per event, where
``usage`` arrives, ``[DONE]``, TTFT and ITL of one request; whether the request-id header is
accepted), then a Locust command per usable route and a sweep command for the preferred one.

Exit status: 0 usable, 1 not usable (one line on stderr saying why), 2 bad options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from harness.client import REQUEST_ID_HEADER
from harness.probe import commands
from harness.probe.detect import ProbeResult, RouteResult, Unreachable, probe
from harness.usage import CliError

__all__ = ["add_arguments", "findings", "next_commands", "probe", "run", "unusable_reason"]

_USAGE = {
    "last_chunk": "usage on the last content chunk",
    "separate_chunk": "usage in a separate `choices: []` chunk",
    "final_event": "token count in the last event's details",
    "absent": "no usage (token counts from events only)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=os.environ.get(commands.KEY_ENV),
                        help=f"sent as 'Authorization: Bearer KEY' (default: ${commands.KEY_ENV})")
    parser.add_argument("--model-name", default=None,
                        help="model name for OpenAI routes (default: the first of /v1/models, else /info)")
    parser.add_argument("--timeout", type=float, default=10.0, help="time budget of the whole probe, s (default: 10)")
    parser.add_argument("--max-tokens", type=int, default=16, help="output tokens asked per request (default: 16)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text")


def _base_url(host: str) -> str:
    host = host.strip().rstrip("/")
    if "://" not in host:
        host = "http://" + host
    if not host.startswith(("http://", "https://")) or len(host.split("://", 1)[1]) == 0:
        raise CliError(f"--host must be an http(s) URL, got {host!r}")
    return host


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def _route_line(r: RouteResult, has_key: bool) -> str:
    head = f"{r.label:<19} POST {r.endpoint}: "
    if r.status == "absent":
        return head + f"not offered (HTTP {r.http_status})"
    if r.status == "auth":
        return head + f"HTTP {r.http_status}: " + ("API key rejected" if has_key else "needs --api-key")
    if r.status == "not_sse":
        return head + f"does not stream: {r.error}"
    if r.status == "skipped":
        return head + (r.error or "not checked")
    if r.status == "failed":
        return head + f"fails: {r.outcome}: {r.error}"
    parts = [f"streams; {r.events} token events, {r.tokens_server if r.tokens_server is not None else r.tokens_events}"
             f" tokens ({r.tokens_per_event or 0:.2g} per event)"]
    if r.token_mismatch:
        parts.append(f"server counts {r.tokens_server}, events carry {r.tokens_events}")
    if r.usage:
        parts.append(_USAGE[r.usage])
    if r.done is True:
        parts.append("[DONE] sent")
    elif r.done is False:
        parts.append("no [DONE]: the stream ends after its finish_reason (tolerated)")
    itl = r.itl_ms
    timing = f"TTFT {_ms(r.ttft_ms)}"
    if itl.get("count"):
        timing += f", ITL p50 {itl['p50']:.1f} ms max {itl['max']:.1f} ms"
    parts.append(timing)
    return head + "; ".join(parts)


def findings(res: ProbeResult, has_key: bool) -> list[str]:
    """One line per finding, in the order printed."""
    out = [f"host                {res.host} (probed in {res.elapsed_s:.1f} s)"]
    if res.info:
        server = " ".join(str(x) for x in (res.info.get("router"), res.info.get("version")) if x) or "unnamed"
        out.append(f"server              {server} (/info), model_id {res.info.get('model_id')}")
    if res.model_name:
        src = res.model_source
        extra = ""
        if src == "/v1/models" and len(res.models) > 1:
            extra = f"; first of {len(res.models)} listed ({', '.join(res.models[:5])}): choose with --model-name"
        out.append(f"model               {res.model_name} (from {src}{extra})")
    else:
        out.append("model               unknown (no /v1/models or /info): OpenAI requests carry no model name")
    out += [_route_line(r, has_key) for r in res.routes]
    if res.request_id_accepted is True:
        out.append(f"request id          {REQUEST_ID_HEADER} (UUID) accepted")
    elif res.request_id_accepted is False:
        out.append(f"request id          server rejects {REQUEST_ID_HEADER}: {res.request_id_error}; "
                   "the commands below send none (--request-id-header '')")
    return out


def preferred(res: ProbeResult) -> RouteResult | None:
    """The route the sweep command uses: the first usable one in :data:`~harness.probe.detect.ROUTES` order."""
    return next(iter(res.usable), None)


def next_commands(res: ProbeResult, has_key: bool) -> dict:
    """``{"locust": [one per usable route], "sweep": str | None}``."""
    no_rid = res.request_id_accepted is False
    loc = [commands.locust_command(res.host, r.protocol, r.endpoint, res.model_name, api_key=has_key,
                                   no_request_id=no_rid) for r in res.usable]
    best = preferred(res)
    sweep = None if best is None else commands.sweep_command(res.host, best.protocol, best.endpoint, res.model_name,
                                                             api_key=has_key, no_request_id=no_rid)
    return {"locust": loc, "sweep": sweep}


def unusable_reason(res: ProbeResult, has_key: bool) -> str | None:
    """None when a route streams; else one line saying why the endpoint can't be used."""
    if res.usable:
        return None
    by = {s: [r for r in res.routes if r.status == s] for s in ("auth", "not_sse", "failed", "absent", "skipped")}
    if by["auth"]:
        r = by["auth"][0]
        if has_key:
            return f"the server rejects the API key (HTTP {r.http_status} on {r.endpoint}): check --api-key"
        return f"the server requires an API key (HTTP {r.http_status} on {r.endpoint}): needs --api-key"
    if by["not_sse"]:
        r = by["not_sse"][0]
        return f"no streaming: {r.endpoint} answered {r.error}"
    if by["failed"]:
        text = "; ".join(f"{r.endpoint}: {r.error}" for r in by["failed"])
        hint = ""
        if not res.model_name and any("model" in (r.error or "").lower() for r in by["failed"]):
            hint = " (pass --model-name)"
        elif any(r.outcome == "timeout" for r in by["failed"]):
            hint = " (a server that loads its model on first use may need a longer --timeout, e.g. 60)"
        return f"no route streamed: {text}{hint}"
    if by["absent"] and not by["skipped"]:
        hint = " (is --host the server's base URL?)"
        if res.auth_hint and not has_key:
            hint = " and /v1/models needs a key: needs --api-key"
        return ("no streaming route: " + ", ".join(r.endpoint for r in by["absent"])
                + f" all answered {'/'.join(sorted({str(r.http_status) for r in by['absent']}))}{hint}")
    return f"nothing streamed within the {res.elapsed_s:.0f} s budget"


def run(args: argparse.Namespace) -> int:
    base = _base_url(args.host)
    if not args.timeout > 0:
        raise CliError(f"--timeout must be > 0, got {args.timeout}")
    if args.max_tokens < 1:
        raise CliError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    has_key = bool(args.api_key)
    try:
        res = probe(base, api_key=args.api_key or None, model_name=args.model_name or None,
                    budget_s=args.timeout, max_tokens=args.max_tokens)
    except ValueError as exc:  # a URL the transport refuses
        raise CliError(str(exc)) from None
    except Unreachable as exc:
        res, reason = None, f"cannot reach it: {exc}"
    else:
        reason = unusable_reason(res, has_key)
    if args.json:
        out: dict = {"host": base, "usable": reason is None, "reason": reason}
        if res is not None:
            out.update(findings=findings(res, has_key), commands=next_commands(res, has_key),
                       probe=asdict(res))
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0 if reason is None else 1
    if reason is not None:
        print(f"harness probe: {base} is not usable: {reason}", file=sys.stderr)
        return 1
    assert res is not None
    for line in findings(res, has_key):
        print(line)
    if has_key and os.environ.get(commands.KEY_ENV) != args.api_key:
        print(f"api key             the commands read it from ${commands.KEY_ENV}: export it first")
    cmds = next_commands(res, has_key)
    print("\nnext: a 1-minute Locust run" + (" (one per usable route)" if len(cmds["locust"]) > 1 else ""))
    for c in cmds["locust"]:
        print(f"  {c}")
    best = preferred(res)
    print(f"then: a capacity sweep over 1, 4 and 16 users on {best.endpoint if best else '-'}")
    print(f"  {cmds['sweep']}")
    return 0
