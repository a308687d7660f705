"""Our server vs ``transformers serve --continuous-batching``: same checkpoint, same dtype, same client.

Both servers run the converted SmolLM2-135M-Instruct directory (``harness.server.models.smollm2``) on
the CPU (``--device``), per dtype (``--dtypes``, default float32 and bfloat16). transformers serve
runs from the interop venv (``tests/interop/targets.py``, target ``tserve``: transformers[serving]
5.23.0 with the CPU torch), which is built when missing. Each server gets one warm-up request, then
for ``--repeats`` rounds the servers take turns (ours, theirs, ours, ...) at each stream count
(``--streams``, default 1, 16, 32): S concurrent OpenAI chat streams (``/v1/chat/completions``,
``stream: true``, greedy, ``max_tokens`` = ``--new-tokens``) started together.

Per load: tokens/s = all content chunks received / (last chunk - first send) (end to end, prefill
included; one chunk is one token on both servers); decode tokens/s = chunks between the moment
every stream has its first chunk and the moment the first stream ends, over that window; TTFT =
first content chunk - send (median over the streams). Interference from other processes only slows
a server down, so each figure is the best of its rounds (all samples are in the JSON); the ratio is
ours / theirs of the best tokens/s, TTFT ratio ours / theirs of the best median TTFT.

``--baseline-src DIR`` adds a third server: ``harness serve`` from another checkout (e.g. a
``git worktree`` of an older commit), measured in the same rotation, for before/after figures.

    python benchmarks/server_vs_transformers_serve.py [--dtypes float32,bfloat16] [--streams 1,16,32]
        [--repeats 3] [--new-tokens 64] [--baseline-src DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from benchlib import ROOT, counts, machine_info, stamp, write

from harness.server.models import smollm2
from harness.server_process import ServerProcess, free_port

PROMPT = ("Write a detailed essay about the history of computing, from the abacus and mechanical "
          "calculators to transistors, integrated circuits, personal computers, the internet and "
          "machine learning. Cover the people, the machines and why each step mattered.")
DTYPES = ("float32", "bfloat16")
#: transformers serve sizes its paged KV cache from free memory (13.7 GB RSS in bf16 here); pages hold
#: 256 tokens, so 128 blocks (one prompt + 64 tokens fits one page) bound it without limiting 32 streams
TSERVE_BLOCKS = 128


def dtypes(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in DTYPES]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"expected dtypes from {', '.join(DTYPES)}, got {text!r}")
    return values


class Server:
    """One server process; ``model`` is what requests name."""

    def __init__(self, name: str, url: str, model: str, stop) -> None:
        self.name, self.url, self.model, self.stop = name, url, model, stop


def start_ours(name: str, dtype: str, device: str, log_dir: Path, max_batch: int, src: Path | None = None) -> Server:
    args = ["--model", "smollm2", "--dtype", dtype, "--device", device, "--max-batch-size", str(max_batch),
            "--max-concurrent-requests", str(max(128, max_batch + 4))]
    env = {"PYTHONPATH": str(src)} if src is not None else None
    try:
        s = ServerProcess.serve(args, log_dir, 300, env=env, log_name=f"{name}-{dtype}.log")
    except RuntimeError as exc:
        raise SystemExit(f"{name}: {exc}") from None
    return Server(name, s.url, "smollm2", s.stop)


def start_theirs(dtype: str, device: str, log_dir: Path) -> Server:
    sys.path.insert(0, str(ROOT / "tests" / "interop"))
    import targets  # tests/interop/targets.py: the venv of transformers serve

    targets.ensure("tserve")
    model_dir = str(smollm2.ensure_converted())
    port = free_port()
    hub = log_dir / "hf-hub-empty"
    hub.mkdir(parents=True, exist_ok=True)
    cmd = [str(targets.python("tserve").with_name("transformers")), "serve", "--continuous-batching",
           "--device", device, "--dtype", dtype, "--host", "127.0.0.1", "--port", str(port),
           "--cb-num-blocks", str(TSERVE_BLOCKS), "--log-level", "warning", model_dir]
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(hub),
           "HF_HUB_DISABLE_TELEMETRY": "1", "NO_COLOR": "1"}
    s = ServerProcess(cmd, port, log_dir / f"tserve-{dtype}.log", env, cwd=log_dir)
    try:
        s.start(300)
    except RuntimeError as exc:
        raise SystemExit(f"transformers serve: {exc}") from None
    return Server("transformers_serve", s.url, model_dir, s.stop)


async def one_stream(client: httpx.AsyncClient, srv: Server, new_tokens: int) -> dict:
    body = {"model": srv.model, "messages": [{"role": "user", "content": PROMPT}], "stream": True,
            "max_tokens": new_tokens, "temperature": 0.0}
    send = time.perf_counter()
    stamps: list[float] = []
    async with client.stream("POST", srv.url + "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{srv.name}: HTTP {resp.status_code}: {(await resp.aread())[:300]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            if "error" in event:
                raise RuntimeError(f"{srv.name}: {event}")
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content") is not None:
                    stamps.append(time.perf_counter())
    if not stamps:
        raise RuntimeError(f"{srv.name}: a stream without content")
    return {"send": send, "stamps": stamps}


async def load(srv: Server, streams: int, new_tokens: int) -> dict:
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        runs = await asyncio.gather(*[one_stream(client, srv, new_tokens) for _ in range(streams)])
    firsts = [r["stamps"][0] for r in runs]
    all_first, first_end = max(firsts), min(r["stamps"][-1] for r in runs)
    in_window = sum(1 for r in runs for s in r["stamps"] if all_first < s <= first_end)
    total = sum(len(r["stamps"]) for r in runs)
    start, end = min(r["send"] for r in runs), max(r["stamps"][-1] for r in runs)
    return {"streams": streams, "tokens": total, "tok_s": total / (end - start),
            "decode_tok_s": in_window / (first_end - all_first) if first_end > all_first else float("nan"),
            "ttft_median_s": statistics.median(f - r["send"] for f, r in zip(firsts, runs, strict=True))}


def loadavg() -> str:
    """Load average (1/5/15 min) and CPU pressure (PSI some avg10) now."""
    psi = machine_info()["cpu_pressure_some_avg10"]
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) + f", PSI {psi}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", type=dtypes, default=list(DTYPES), help="float32,bfloat16 (default both)")
    ap.add_argument("--streams", type=counts, default=[1, 16, 32], help="stream counts (default 1,16,32)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="rounds, servers alternating (best of)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="also run `harness serve` from this checkout (before/after in one run)")
    ap.add_argument("--out", default=None, help="output directory (default reports/bench)")
    ap.add_argument("--log-dir", type=Path, default=None, help="server logs (default: a temporary directory)")
    args = ap.parse_args()
    if args.new_tokens < 2 or args.repeats < 1:
        ap.error("--new-tokens must be >= 2 and --repeats >= 1")
    if args.baseline_src is not None and not (args.baseline_src / "harness" / "server").is_dir():
        ap.error(f"--baseline-src {args.baseline_src}: no harness/server there")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers get stopped too
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="server_vs_tserve-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    info = stamp()
    result: dict = {**info, "new_tokens": args.new_tokens, "repeats": args.repeats, "streams": args.streams,
                    "device": args.device, "baseline_src": str(args.baseline_src or ""), "dtypes": {}}
    n, top = args.new_tokens, max(args.streams)
    for dtype in args.dtypes:
        servers: list[Server] = []
        try:
            servers.append(start_ours("ours", dtype, args.device, log_dir, top))
            if args.baseline_src is not None:
                servers.append(start_ours("baseline", dtype, args.device, log_dir, top, args.baseline_src.resolve()))
            servers.append(start_theirs(dtype, args.device, log_dir))
            for srv in servers:  # warm-up: first request (and first batch) costs extra on both
                asyncio.run(load(srv, 1, 8))
                asyncio.run(load(srv, 2, 8))
            samples: dict[str, dict[int, list[dict]]] = {s.name: {k: [] for k in args.streams} for s in servers}
            loads: list[str] = []
            for r in range(args.repeats):
                loads.append(loadavg())
                for k in args.streams:
                    order = servers if r % 2 == 0 else servers[::-1]
                    for srv in order:
                        samples[srv.name][k].append(asyncio.run(load(srv, k, n)))
                print(f"  {dtype} round {r + 1}/{args.repeats} done (load average {loads[-1]})", flush=True)
        finally:
            for srv in servers:
                srv.stop()
        best = {name: {k: {"tok_s": max(x["tok_s"] for x in v), "decode_tok_s": max(x["decode_tok_s"] for x in v),
                           "ttft_median_s": min(x["ttft_median_s"] for x in v)} for k, v in per.items()}
                for name, per in samples.items()}
        theirs = best["transformers_serve"]
        ratios = {name: {k: {"tok_s": b[k]["tok_s"] / theirs[k]["tok_s"],
                             "ttft": b[k]["ttft_median_s"] / theirs[k]["ttft_median_s"]} for k in args.streams}
                  for name, b in best.items() if name != "transformers_serve"}
        result["dtypes"][dtype] = {"best": best, "ratios": ratios, "samples": samples, "loadavg_per_round": loads}
        print(f"{dtype}: best of {args.repeats}, {n} tokens per stream, load average per round: {'; '.join(loads)}")
        print(f"  {'streams':>7} {'server':<20} {'tok/s':>8} {'decode':>8} {'TTFT ms':>8} {'x tok/s':>8} {'x TTFT':>7}")
        for k in args.streams:
            for name, b in best.items():
                rt = ratios.get(name, {}).get(k)
                extra = f" {rt['tok_s']:8.2f} {rt['ttft']:7.2f}" if rt else ""
                print(f"  {k:>7} {name:<20} {b[k]['tok_s']:8.1f} {b[k]['decode_tok_s']:8.1f} "
                      f"{b[k]['ttft_median_s'] * 1000:8.0f}{extra}")
    print(f"wrote {write('server_vs_transformers_serve', result, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
