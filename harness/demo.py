"""`harness demo` (`make demo`): the bundled server on SmolLM2 streams one answer to the terminal, then a
short capacity sweep (caps 2 and 8 x 1, 4 and 16 users) ends with the path of its HTML report.

    harness demo [--model smollm2|simulated|...] [--caps 2,8] [--users 1,4,16] [--duration 20] [--out DIR]

Everything it writes goes under ``--out`` (default ``./reports/demo/<timestamp>``, under the current
directory). Needs the ``[server]`` extra.

Finishes in about 5 minutes on a 2-core CPU with the default model; ``--model simulated`` in about 3.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from harness.server_process import ServerProcess
from harness.sweep import add_arguments as sweep_arguments
from harness.sweep import make_plan, run_sweep

PROMPT = "In two sentences, why does time-to-first-token matter for a chat assistant?"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2",
                   help="model of the bundled server: smollm2, simulated, ... (default: %(default)s)")
    p.add_argument("--caps", default="2,8",
                   help="server caps (--max-concurrent-requests) to sweep, comma separated (default: %(default)s)")
    p.add_argument("--users", default="1,4,16",
                   help="concurrent users per point, comma separated (default: %(default)s)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per point (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=5.0, help="warm-up seconds per point (default: %(default)s)")
    p.add_argument("--output-tokens", default="fixed:32",
                   help="max_new_tokens distribution of the sweep's requests (default: %(default)s)")
    p.add_argument("--input-tokens", default="fixed:32",
                   help="prompt length distribution, tokens (default: %(default)s)")
    p.add_argument("--slo", default="ttft_p95=4000,itl_p99=1000",
                   help="SLO the recommendation is judged by, ms (default: %(default)s)")
    p.add_argument("--out", default=None, help="sweep dir (default: ./reports/demo/<timestamp>)")
    p.add_argument("--retry-overloaded", type=int, default=2,
                   help="users retry an overloaded answer this often with capped backoff, so rejected users "
                        "do not spin on the 2 cores the server needs (default: %(default)s)")
    p.add_argument("--skip-stream", action="store_true", help="skip the single streamed answer")


def parse(argv: list[str] | None) -> argparse.Namespace:
    intro = __doc__.split("\n\n")[0].replace("\n", " ")  # the first paragraph, whole
    p = argparse.ArgumentParser(prog="python -m harness.demo", description=intro)
    add_arguments(p)
    return p.parse_args(argv)


def stream_one(model: str, out: Path) -> None:
    """Start the server, stream one chat answer token by token via `harness run`, stop the server."""
    print(f"starting the bundled server ({model}) ...", flush=True)
    t = time.monotonic()
    server = ServerProcess.serve(["--model", model, "--graceful-termination-timeout", "5"], out, 600,
                                 log_name="stream-server.log")
    print(f"ready in {time.monotonic() - t:.1f} s; streaming one answer:\n", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "harness", "run", "--host", server.url, "--protocol", "openai",
                        "--prompt", PROMPT, "--max-new-tokens", "64"], cwd=out, timeout=300, check=False)
    finally:
        server.stop()
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    return run(parse(argv))


def run(a: argparse.Namespace) -> int:
    """The demo (module docstring); 0 when the sweep finished, 2 on bad input, 130 when interrupted."""
    out = Path(a.out or Path("reports") / "demo" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        if not a.skip_stream:
            stream_one(a.model, out)
        sp = argparse.ArgumentParser()
        sweep_arguments(sp)
        args = sp.parse_args(["--caps", a.caps, "--users", a.users, "--duration", str(a.duration),
                              "--warmup", str(a.warmup), "--model", a.model, "--slo", a.slo,
                              "--input-tokens", a.input_tokens, "--output-tokens", a.output_tokens,
                              "--out", str(out), "--locust-args", f"--retry-overloaded {a.retry_overloaded}",
                              # a 20 s point at 1 user on a CPU holds about 20 requests: judge from 10, and
                              # rerun a point once when it still has too few
                              "--min-requests", "10", "--extend-inconclusive"])
        plan = make_plan(args)
        print(f"capacity sweep: caps {a.caps} x users {a.users}, {a.warmup:g}+{a.duration:g} s per point", flush=True)
        data = run_sweep(args, plan)
    except (ValueError, RuntimeError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; rerun the same command with --out {out} to resume", file=sys.stderr)
        return 130
    rec = data["recommended"]
    print(f"\nrecommended cap: {rec['cap'] if rec['cap'] is not None else 'none'}\n  {rec['reason']}")
    print(f"\ndemo finished in {time.monotonic() - t0:.0f} s")
    print(f"HTML report: {out / 'sweep.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
