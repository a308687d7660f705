"""`harness serve`: the reference streaming server (TGI protocol + OpenAI routes).

Options use TGI's launcher names and defaults; each can also come from TGI's environment
variable (``MAX_CONCURRENT_REQUESTS=64``, ``MODEL_ID=...``, see :data:`ENV`); a command-line
option wins over the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading

from harness.usage import CliError

#: option dest -> environment variable (TGI's names)
ENV = {
    "model": "MODEL_ID", "max_concurrent_requests": "MAX_CONCURRENT_REQUESTS",
    "max_batch_size": "MAX_BATCH_SIZE", "max_batch_prefill_tokens": "MAX_BATCH_PREFILL_TOKENS",
    "waiting_served_ratio": "WAITING_SERVED_RATIO", "max_waiting_tokens": "MAX_WAITING_TOKENS",
    "max_input_tokens": "MAX_INPUT_TOKENS", "max_total_tokens": "MAX_TOTAL_TOKENS",
    "max_stop_sequences": "MAX_STOP_SEQUENCES", "max_top_n_tokens": "MAX_TOP_N_TOKENS",
    "max_best_of": "MAX_BEST_OF", "max_client_batch_size": "MAX_CLIENT_BATCH_SIZE",
    "api_key": "API_KEY", "payload_limit": "PAYLOAD_LIMIT", "dtype": "DTYPE",
    "graceful_termination_timeout": "GRACEFUL_TERMINATION_TIMEOUT",
}
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _count(min_value: int) -> callable:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < min_value:
            raise argparse.ArgumentTypeError(f"must be >= {min_value}, got {v}")
        return v
    parse.__name__ = "integer"
    return parse


def _real(min_value: float = 0.0) -> callable:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not v >= min_value:
            raise argparse.ArgumentTypeError(f"must be >= {min_value}, got {text}")
        return v
    parse.__name__ = "number"
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `harness serve` options."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default="smollm2", help="smollm2 (embedded SmolLM2-135M-Instruct), tiny "
                   "(random 2-layer Llama, for tests), simulated (no model), a hub id, a local dir or a "
                   ".gguf file (default: %(default)s)")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights' dtype; auto: the model's own, float32 on CPU")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    g.add_argument("--port", "-p", type=_count(0), default=3000,
                   help="listen port, checked before the model loads (default: %(default)s)")
    g.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on POST routes")
    g.add_argument("--payload-limit", type=_count(1), default=2_000_000, help="max body bytes (413 above)")
    g.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS, help="log verbosity")
    g.add_argument("--graceful-termination-timeout", type=_real(0), default=90.0,
                   help="seconds in-flight requests may take after SIGTERM (default: %(default)s)")
    g.add_argument("--trace-file", default=None, metavar="PATH",
                   help="JSONL: CLOCK_MONOTONIC ns at which each token event was written")
    g = p.add_argument_group("limits (TGI)")
    g.add_argument("--max-concurrent-requests", type=_count(1), default=128,
                   help="requests admitted at once (streaming or queued); more are answered 429 overloaded")
    g.add_argument("--max-input-tokens", type=_count(1), default=None,
                   help="longest prompt in tokens, 422 above (default: the model's context - 1)")
    g.add_argument("--max-total-tokens", type=_count(2), default=None,
                   help="prompt + max_new_tokens limit, 422 above (default: the model's context)")
    g.add_argument("--max-stop-sequences", type=_count(0), default=4, help="stop sequences per request")
    g.add_argument("--max-top-n-tokens", type=_count(0), default=5, help="largest top_n_tokens per request")
    g.add_argument("--max-best-of", type=_count(1), default=2, help="largest best_of per request")
    g.add_argument("--max-client-batch-size", type=_count(1), default=4,
                   help="most inputs in one request (batched routes)")
    g = p.add_argument_group("batching (transformers backend)")
    g.add_argument("--max-batch-size", type=_count(1), default=None,
                   help="most requests decoded together (default: no limit beyond admission)")
    g.add_argument("--max-batch-prefill-tokens", type=_count(1), default=4096,
                   help="padded prefill budget of one join (requests x longest prompt, tokens)")
    g.add_argument("--waiting-served-ratio", type=_real(0), default=1.2,
                   help="while a batch runs, waiting requests join only when at least floor(batch size x "
                        "ratio) can join at once (TGI's rule)")
    g.add_argument("--max-waiting-tokens", type=_count(0), default=20,
                   help="decode steps after which waiting requests join regardless of the ratio")
    g.add_argument("--prefix-cache", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse the KV of prompt prefixes across requests in blocks of 16 tokens (as vLLM "
                        "and TGI do by default; outputs are unchanged); usage reports "
                        "prompt_tokens_details.cached_tokens (default: on)")
    g.add_argument("--prefix-cache-mb", type=_real(0), default=512.0,
                   help="KV memory the prefix cache may hold, MiB; least recently used blocks are "
                        "evicted beyond it (default: %(default)s)")
    g = p.add_argument_group("simulated backend (--model simulated)")
    g.add_argument("--sim-ttft-ms", type=_real(0), default=50.0, help="base time to first token")
    g.add_argument("--sim-ttft-per-input-token-ms", type=_real(0), default=0.0,
                   help="added to TTFT per input token not found in the emulated prefix cache")
    g.add_argument("--sim-itl-ms", type=_real(0), default=20.0, help="inter-token latency")
    g.add_argument("--sim-jitter-ms", type=_real(0), default=0.0, help="uniform +-jitter on each gap")
    g.add_argument("--sim-batch-slowdown", type=_real(0), default=0.0,
                   help="ITL x (1 + s * (running streams - 1))")
    g.add_argument("--sim-output-tokens", type=_count(0), default=64,
                   help="natural output length incl. EOS (0: until max_new_tokens)")
    g.add_argument("--sim-seed", type=_count(0), default=0, help="seed of the jitter")
    g.add_argument("--sim-reasoning-tokens", type=_count(0), default=0,
                   help="reasoning tokens before the answer (OpenAI chat: delta.reasoning_content; "
                        "usage.completion_tokens_details.reasoning_tokens); per request: "
                        '"simulate": {"reasoning_tokens": N}, or 0 with '
                        '"chat_template_kwargs": {"enable_thinking": false} (default: %(default)s)')
    g.add_argument("--sim-tool-calls", type=_count(1), default=1,
                   help="tool calls per response when the chat request carries tools (tool_choice "
                        "auto/required/a name; none: a text answer); each is one name token then "
                        "--sim-tool-call-fragments argument tokens, then EOS; finish_reason tool_calls "
                        "(default: %(default)s)")
    g.add_argument("--sim-tool-call-fragments", type=_count(1), default=8,
                   help="argument fragments (delta.tool_calls[].function.arguments pieces) per tool "
                        "call (default: %(default)s)")
    g.add_argument("--sim-prefix-cache-blocks", type=_count(0), default=0,
                   help="emulated prefix cache: LRU capacity in blocks; TTFT costs "
                        "--sim-ttft-per-input-token-ms only for uncached tokens and usage reports "
                        "cached_tokens (0: off; default: %(default)s)")
    g.add_argument("--sim-prefix-block-tokens", type=_count(1), default=16,
                   help="emulated prefix cache block size in tokens (words): cached_tokens is a "
                        "multiple of it (default: %(default)s)")
    # Environment variables (TGI names) become defaults; they are checked like the options.
    for action in p._actions:
        env = ENV.get(action.dest)
        if env and os.environ.get(env):
            try:
                action.default = action.type(os.environ[env]) if action.type else os.environ[env]
            except argparse.ArgumentTypeError as exc:
                raise SystemExit(f"harness serve: error: {env}: {exc}") from None


def build_config(args: argparse.Namespace):
    """The :class:`ServerConfig` of the parsed options (cross-option checks raise CliError)."""
    from harness.server.config import ServerConfig

    if args.max_input_tokens is not None and args.max_total_tokens is not None \
            and args.max_input_tokens >= args.max_total_tokens:
        raise CliError(f"--max-input-tokens ({args.max_input_tokens}) must be < --max-total-tokens "
                       f"({args.max_total_tokens})")
    return ServerConfig(
        model_id=args.model, max_concurrent_requests=args.max_concurrent_requests,
        max_best_of=args.max_best_of, max_stop_sequences=args.max_stop_sequences,
        max_top_n_tokens=args.max_top_n_tokens, max_client_batch_size=args.max_client_batch_size,
        max_input_tokens=args.max_input_tokens, max_total_tokens=args.max_total_tokens,
        api_key=args.api_key, payload_limit=args.payload_limit, trace_file=args.trace_file)


def check_port(host: str, port: int) -> None:
    """CliError (one line) when ``host:port`` cannot be bound, e.g. another process listens there.

    Binds a throwaway socket with the options uvicorn uses (SO_REUSEADDR, so a port in TIME_WAIT
    passes as it would for uvicorn) and closes it; port 0 (any free port) is not checked.
    """
    import errno
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CliError(f"port {port} on {host} is already in use (another server?); "
                           f"choose another with --port") from None
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _graceful_server_class():
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn's server, but SIGTERM/SIGINT end with exit status 0 (uvicorn re-raises the
        signal after shutdown) and first close admission (new requests: overloaded) while
        in-flight requests finish within ``--graceful-termination-timeout``."""

        on_exit = staticmethod(lambda: None)

        def handle_exit(self, sig, frame) -> None:  # noqa: ANN001 - signal handler signature
            self.on_exit()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):  # noqa: ANN201
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return GracefulServer


def run(args: argparse.Namespace) -> int:
    """Build the backend and app, serve until SIGTERM/SIGINT (graceful), return 0."""
    import uvicorn

    from harness.server.app import create_app
    from harness.server.backends import create_backend
    from harness.server.lean_http import protocol_class

    _GracefulServer = _graceful_server_class()
    cfg = build_config(args)
    check_port(args.host, args.port)  # before the model loads (minutes for a large one)
    level = "debug" if args.log_level == "trace" else args.log_level
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        backend = create_backend(args)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise CliError(f"--model {args.model}: {exc}") from None
    app = create_app(backend, cfg)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=level, access_log=False,
                            loop=os.environ.get("HARNESS_LOOP", "uvloop"), http=protocol_class(app), lifespan="on",
                            timeout_graceful_shutdown=args.graceful_termination_timeout or None,
                            timeout_keep_alive=30, backlog=4096)
    server = _GracefulServer(config)
    server.on_exit = lambda: app.state.service.admission.close()
    server.run()
    if not server.started:
        raise CliError(f"could not start the server on {args.host}:{args.port} (see the log above)")
    return 0
