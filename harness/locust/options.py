"""The harness's Locust options, registered on Locust's own parser.

Registered through ``events.init_command_line_parser``, so every option works on the command line,
in the web UI's start form, in ``locust.conf``, in ``[tool.locust]`` of pyproject.toml and as a
``LOCUST_<NAME>`` environment variable, and is copied from the master to every worker.
:func:`resolve` turns the parsed namespace into a validated :class:`HarnessOptions`; bad values
raise :class:`OptionError` with a one-line message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from harness.analysis.rules import parse_rule
from harness.client import PROTOCOLS
from harness.workload import ARRIVALS, Distribution

#: --failure-backoff default: BASE,CAP seconds
DEFAULT_FAILURE_BACKOFF = "0.1,5"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110 field-name)


class OptionError(ValueError):
    """A harness option has a bad value; the message names the option."""


def register(parser: Any) -> None:
    """Add the harness options to Locust's argument parser (an ``init_command_line_parser`` listener)."""
    group = parser.add_argument_group("stream-harness", "token-streaming load test options")

    class _G:  # argument groups lack Locust's web-UI keywords: set the attributes Locust reads
        @staticmethod
        def add_argument(*args: Any, is_secret: bool = False, **kwargs: Any) -> Any:
            kwargs.setdefault("env_var", "LOCUST_" + args[0].lstrip("-").replace("-", "_").upper())
            action = group.add_argument(*args, **kwargs)
            action.include_in_web_ui, action.is_secret = True, is_secret
            action.is_required, action.is_multiple = False, False
            return action

    g = _G()
    g.add_argument("--protocol", choices=("", *PROTOCOLS), default="",
                   help=f"wire protocol: {' | '.join(PROTOCOLS)} (default: the scenario's own)")
    g.add_argument("--endpoint", default="",
                   help="route on --host, e.g. /generate_stream, /, /v1/chat/completions, /v1/completions "
                        "(default: the protocol's streaming route)")
    g.add_argument("--model-name", default="", help="model name sent on OpenAI routes")
    g.add_argument("--api-key", default="", is_secret=True, help="bearer token sent as Authorization")
    g.add_argument("--input-tokens", default="fixed:128",
                   help="prompt length distribution: fixed:N | uniform:A,B | normal:mean=M,sd=S | lognormal:mean=M,sd=S")
    g.add_argument("--output-tokens", default="fixed:64", help="max_new_tokens distribution (same forms)")
    g.add_argument("--prompt-file", default="",
                   help="prompts from a jsonl {prompt[,max_new_tokens]} or ShareGPT file instead of synthetic ones")
    g.add_argument("--seed", type=int, default=0, help="seed of prompts and arrivals")
    g.add_argument("--run-dir", default="",
                   help="where records.jsonl and run.json go (default reports/runs/<timestamp>-<scenario>)")
    g.add_argument("--arrival", choices=tuple(ARRIVALS), default="poisson",
                   help=f"open loop arrival process: {' | '.join(ARRIVALS)}")
    g.add_argument("--rate", type=float, default=1.0, help="open loop: total arrival rate, requests/s")
    g.add_argument("--arrival-cv", type=float, default=1.0, help="gamma arrivals: coefficient of variation")
    g.add_argument("--trace-file", default="", help="trace arrivals: file of arrival offsets in seconds")
    g.add_argument("--max-inflight", type=int, default=256,
                   help="open loop: streams in flight per worker; an arrival beyond it is recorded as dropped")
    g.add_argument("--retry-overloaded", type=int, default=0,
                   help="retries after an overloaded answer (honouring retry-after, capped backoff)")
    g.add_argument("--failure-backoff", default=DEFAULT_FAILURE_BACKOFF,
                   help="closed loop: wait after a failed or refused request before the next one, "
                        "BASE[,CAP] seconds: the server's Retry-After when given (at least BASE), else "
                        "min(CAP, BASE * 2**(k-1)) after k failures in a row; reset by an ok request. "
                        "0 = no wait (default 0.1,5)")
    g.add_argument("--request-id-header", default="X-Request-Id",
                   help="header carrying each request's UUID (empty = send none)")
    g.add_argument("--request-timeout", type=float, default=600.0,
                   help="total seconds per request (the per-token read timeout is min(60, this))")
    g.add_argument("--slo-ttft-ms", type=float, default=0.0, help="TTFT objective for goodput, ms (0 = none)")
    g.add_argument("--slo-itl-ms", type=float, default=0.0,
                   help="ITL objective for goodput (largest gap of a request), ms (0 = none)")
    g.add_argument("--fail-on", default="",
                   help="CI rules over the run summary, comma separated, e.g. 'ttft_p95_ms>500,overload_rate>0.05': "
                        "exit code 3 when any holds")
    g.add_argument("--scrape-metrics", action="store_true", default=False,
                   help="scrape the server's /metrics every second into RUN_DIR/server_metrics.jsonl")
    g.add_argument("--steps", default="",
                   help="step load: comma separated user counts, one step each (e.g. 4,8,16,32); "
                        "empty = the usual -u/-r/-t")
    g.add_argument("--step-time", type=float, default=10.0, help="step load: seconds per step")
    g.add_argument("--think-time", type=float, default=1.0, help="sessions: think time between turns, s (mean)")
    g.add_argument("--turns", type=int, default=4, help="sessions: turns per conversation")
    g.add_argument("--prefix-tokens", type=int, default=0,
                   help="shared prefix: a system prompt of about N tokens before every prompt (0 = none)")
    g.add_argument("--prefixes", type=int, default=1,
                   help="shared prefix: distinct prefixes; user k uses prefix k mod N; 0 = one per user")
    g.add_argument("--prefix-share", type=float, default=1.0,
                   help="shared prefix: fraction of requests that carry their group's prefix (others: a fresh one)")
    g.add_argument("--cache-bust", action="store_true", default=False,
                   help="a unique salt at the start of every prompt (no prefix-cache hits)")
    g.add_argument("--tools", type=int, default=0,
                   help="tool-call prompts: send N built-in OpenAI tool schemas with each request (0 = none)")
    g.add_argument("--reasoning-prompts", action="store_true", default=False,
                   help="reasoning prompts: a multi-step word problem with 'reason step by step' before each prompt")
    g.add_argument("--reasoning-effort", default="", choices=("", "low", "medium", "high"),
                   help="sent as OpenAI's reasoning_effort (empty = not sent)")


@dataclass(frozen=True)
class HarnessOptions:
    """Validated harness options (see :func:`register` for each one's meaning and unit)."""

    protocol: str = ""
    endpoint: str = ""
    model_name: str = ""
    api_key: str = ""
    input_tokens: str = "fixed:128"
    output_tokens: str = "fixed:64"
    prompt_file: str = ""
    seed: int = 0
    run_dir: str = ""
    arrival: str = "poisson"
    rate: float = 1.0
    arrival_cv: float = 1.0
    trace_file: str = ""
    max_inflight: int = 256
    retry_overloaded: int = 0
    failure_backoff: tuple[float, float] = (0.1, 5.0)  #: (BASE, CAP) s; (0, 0) = no wait
    request_id_header: str = "X-Request-Id"
    request_timeout: float = 600.0
    slo_ttft_ms: float = 0.0
    slo_itl_ms: float = 0.0
    fail_on: tuple[str, ...] = ()
    scrape_metrics: bool = False
    steps: tuple[int, ...] = ()
    step_time: float = 10.0
    think_time: float = 1.0
    turns: int = 4
    prefix_tokens: int = 0
    prefixes: int = 1
    prefix_share: float = 1.0
    cache_bust: bool = False
    tools: int = 0
    reasoning_prompts: bool = False
    reasoning_effort: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The options for run.json (the API key masked)."""
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        out["fail_on"] = list(self.fail_on)
        out["steps"] = list(self.steps)
        out["failure_backoff"] = list(self.failure_backoff)
        if out["api_key"]:
            out["api_key"] = "***"
        return out


def split_rules(text: str) -> tuple[str, ...]:
    """``"a>1, b<2; c>=3"`` -> ``("a>1", "b<2", "c>=3")`` (commas or semicolons separate rules)."""
    return tuple(p.strip() for p in re.split(r"[;,]", text or "") if p.strip())


def parse_steps(text: str) -> tuple[int, ...]:
    """``"4,8,16"`` -> ``(4, 8, 16)``; raises :class:`OptionError` on anything but positive integers."""
    out = []
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise OptionError(f"--steps: {part!r} is not a positive user count (expected e.g. 4,8,16)")
        out.append(int(part))
    return tuple(out)


def parse_backoff(text: str) -> tuple[float, float]:
    """``"0.1,5"`` -> ``(0.1, 5.0)``; ``"0.2"`` -> ``(0.2, max(5, 0.2))``; ``"0"`` -> ``(0.0, 0.0)`` (no wait).

    Raises :class:`OptionError` on anything but BASE[,CAP] with 0 <= BASE <= CAP.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise OptionError(f"--failure-backoff: {text!r} is not BASE[,CAP] seconds (e.g. 0.1,5; 0 = no wait)")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise OptionError(f"--failure-backoff: {text!r} is not BASE[,CAP] seconds (e.g. 0.1,5; 0 = no wait)") from None
    if not all(v == v and v >= 0 and v != float("inf") for v in values):
        raise OptionError(f"--failure-backoff: {text!r}: seconds must be finite and >= 0")
    base = values[0]
    if base == 0:
        return (0.0, 0.0)
    cap = values[1] if len(values) == 2 else max(float(DEFAULT_FAILURE_BACKOFF.split(",")[1]), base)
    if cap < base:
        raise OptionError(f"--failure-backoff: CAP {cap:g} is below BASE {base:g}")
    return (base, cap)


def resolve(ns: Any) -> HarnessOptions:
    """Validate Locust's parsed options namespace into :class:`HarnessOptions`.

    Distributions, the prompt file and ``--fail-on`` rules are parsed here once, so a typo stops
    the run before any request with a one-line :class:`OptionError`.
    """
    get = lambda name, default: getattr(ns, name, default) if ns is not None else default  # noqa: E731
    base = HarnessOptions()
    special = ("fail_on", "steps", "failure_backoff", "extra")
    values = {k: get(k, getattr(base, k)) for k in base.__dict__ if k not in special}
    for name in ("protocol", "endpoint", "model_name", "api_key", "input_tokens", "output_tokens",
                 "prompt_file", "run_dir", "trace_file", "request_id_header", "reasoning_effort"):
        values[name] = (values[name] or "").strip() if isinstance(values[name], str) else values[name] or ""
    opts = HarnessOptions(**values, fail_on=split_rules(get("fail_on", "")), steps=parse_steps(get("steps", "")),
                          failure_backoff=parse_backoff(get("failure_backoff", DEFAULT_FAILURE_BACKOFF)))
    _validate(opts)
    return opts


def _validate(o: HarnessOptions) -> None:
    if o.protocol and o.protocol not in PROTOCOLS:
        raise OptionError(f"--protocol: {o.protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if o.arrival not in ARRIVALS:
        raise OptionError(f"--arrival: {o.arrival!r} is not one of {', '.join(ARRIVALS)}")
    if o.endpoint and not o.endpoint.startswith("/"):
        raise OptionError(f"--endpoint: {o.endpoint!r} must start with '/'")
    for name, value in (("--rate", o.rate), ("--request-timeout", o.request_timeout),
                        ("--step-time", o.step_time), ("--arrival-cv", o.arrival_cv)):
        if not value > 0:
            raise OptionError(f"{name}: must be > 0, got {value}")
    for name, value in (("--max-inflight", o.max_inflight), ("--turns", o.turns)):
        if value < 1:
            raise OptionError(f"{name}: must be >= 1, got {value}")
    for name, value in (("--retry-overloaded", o.retry_overloaded), ("--slo-ttft-ms", o.slo_ttft_ms),
                        ("--slo-itl-ms", o.slo_itl_ms), ("--think-time", o.think_time)):
        if value < 0:
            raise OptionError(f"{name}: must be >= 0, got {value}")
    if o.request_id_header and not _HEADER_NAME.match(o.request_id_header):
        raise OptionError(f"--request-id-header: {o.request_id_header!r} is not an HTTP header name")
    if o.arrival == "trace" and not o.trace_file:
        raise OptionError("--arrival trace needs --trace-file")
    for name, spec in (("--input-tokens", o.input_tokens), ("--output-tokens", o.output_tokens)):
        try:
            Distribution.parse(spec)
        except ValueError as exc:
            raise OptionError(f"{name}: {exc}") from None
    for name, value in (("--prefix-tokens", o.prefix_tokens), ("--prefixes", o.prefixes), ("--tools", o.tools)):
        if value < 0:
            raise OptionError(f"{name}: must be >= 0, got {value}")
    if not 0.0 <= o.prefix_share <= 1.0:
        raise OptionError(f"--prefix-share: must be within [0, 1], got {o.prefix_share}")
    from harness.workload.traffic import REASONING_EFFORTS, TOOLS

    if o.tools > len(TOOLS):
        raise OptionError(f"--tools: at most {len(TOOLS)} built-in tool schemas, got {o.tools}")
    if o.reasoning_effort and o.reasoning_effort not in REASONING_EFFORTS:
        raise OptionError(f"--reasoning-effort: {o.reasoning_effort!r} is not one of {', '.join(REASONING_EFFORTS)}")
    if o.fail_on:
        for rule in o.fail_on:
            try:
                parse_rule(rule)
            except ValueError as exc:
                raise OptionError(f"--fail-on: {exc}") from None
