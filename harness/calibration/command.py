"""`harness calibrate`: how accurate are the harness's own timings on this machine, up to which load.

For each load level (``--levels``: concurrent streams, optionally ``@tokens/s``) it starts the
simulated server with a ``--trace-file`` on a free loopback port, drives one headless Locust
process (harness/calibration/locustfile.py, the harness client) for ``--duration-per-level``
seconds, and joins each client token arrival with the server's write time of the same token
(request id + token index; harness.calibration.join). It prints the error distribution (p50, p99,
max) of TTFT and ITL per level, finds the largest level whose p99 errors stay within
``--budget-ms`` and writes ``calibration.json`` (machine, Python, package versions, figures) to
``--out``, and installs it where runs find it (harness.analysis.calibration_limit.default_path) unless
``--no-install``. Runs whose load per worker exceeds the limit are stamped client-bound in run.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import time
from pathlib import Path

from harness.analysis.calibration_limit import ENV, FILE, default_path
from harness.calibration import levels as L
from harness.calibration import result
from harness.usage import CliError

DEFAULT_LEVELS = "16,64,128,256,384,512"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget-ms", type=float, default=1.0, help="p99 error budget of TTFT and ITL, ms (default 1)")
    p.add_argument("--out", default="reports/calibration",
                   help="output dir, relative to the current directory (default %(default)s)")
    p.add_argument("--levels", default=DEFAULT_LEVELS,
                   help="load levels, comma separated: STREAMS or STREAMS@TOKENS_PER_S (default %(default)s; "
                        f"without @ a stream offers {L.TOKENS_PER_STREAM_S:g} tokens/s, i.e. 256 -> 10k)")
    p.add_argument("--duration-per-level", type=float, default=12.0, metavar="S",
                   help="seconds of Locust per level, warm-up included (default %(default)s)")
    p.add_argument("--warmup", type=float, default=2.0, metavar="S",
                   help="seconds at the start of each level left out of the join (default %(default)s)")
    p.add_argument("--nice", type=int, default=None, metavar="N",
                   help="run server and Locust in sessions of their own at niceness N, process and autogroup "
                        "(negative N needs privileges; shields the measurement from other load on a shared machine)")
    p.add_argument("--pin", action="store_true", help="server on CPU 0, Locust on CPU 1 (with >= 2 CPUs)")
    p.add_argument("--keep-raw", action="store_true",
                   help="keep each level's trace.jsonl and records.jsonl (tens of MB; default: deleted once joined)")
    p.add_argument("--no-install", action="store_true",
                   help=f"do not copy calibration.json to where runs read it (${ENV} or the XDG cache)")


def run(args: argparse.Namespace) -> int:
    try:
        levels = L.parse_levels(args.levels)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not args.budget_ms > 0:
        raise CliError(f"--budget-ms must be > 0, got {args.budget_ms}")
    if not args.duration_per_level >= 3:
        raise CliError(f"--duration-per-level must be >= 3 s, got {args.duration_per_level}")
    if not 0 <= args.warmup < args.duration_per_level - 1:
        raise CliError(f"--warmup must be >= 0 and leave at least 1 s of the level, got {args.warmup}")
    out = Path(args.out).resolve()
    saved = os.environ.get(ENV)
    os.environ[ENV] = "off"  # the level runs must not judge themselves by an older calibration
    started, t0 = dt.datetime.now().astimezone(), time.monotonic()
    machine = result.machine_info()
    figures = []
    for level in sorted(levels, key=lambda lv: (lv.tokens_per_s, lv.streams)):
        print(f"level {level.label}: {level.streams} streams, ITL {level.itl_ms:.2f} ms ...", flush=True)
        try:
            level_dir = out / f"level-{level.streams}-{level.tokens_per_s:g}"
            fig = L.run_level(level, level_dir, args.duration_per_level, args.warmup, nice=args.nice, pin=args.pin)
        except RuntimeError as exc:
            raise CliError(str(exc)) from None
        if not args.keep_raw:
            for raw in (level_dir / "trace.jsonl", level_dir / "run" / "records.jsonl"):
                raw.unlink(missing_ok=True)
        figures.append(fig)
    settings = {"levels": [lv.label for lv in levels], "duration_per_level_s": args.duration_per_level,
                "warmup_s": args.warmup, "ttft_ms": L.TTFT_MS, "output_tokens": L.OUTPUT_TOKENS,
                "input_tokens": L.INPUT_TOKENS, "jitter_share": L.JITTER_SHARE, "nice": args.nice, "pin": args.pin,
                "scenario": str(L.LOCUSTFILE.name)}
    if saved is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = saved
    doc = result.build(figures, args.budget_ms, settings, started, time.monotonic() - t0, machine)
    path = result.write(doc, out / FILE)
    print(result.table(doc))
    print(f"wrote {path}")
    if not args.no_install:
        target = default_path()
        if target is not None and target.resolve() != path.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            print(f"installed {target} (runs above the limit are stamped client-bound)")
    return 0
