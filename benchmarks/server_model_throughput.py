"""Server with a real model vs the raw batched forward loop of the same model, in one run.

Phases (nothing else runs in this process meanwhile):
1. raw: the model in-process; prefill of the prompt at batch 1 (``logits_to_keep=1``, best of 3 per
   round), then greedy decode loops at batch B (``--raw-batches``, default 1 and 32) feeding
   ``past_key_values`` back, with transformers' ``DynamicCache`` and with the engine's in-place cache.
   raw tokens/s = B * steps / decode time; the ratios use the faster raw variant. The raw loop runs
   the model as ``load_model`` returns it to the server (its CPU kernels included,
   ``harness.server.models.cpu_kernels``), so both sides run the same forward in the same dtype.
2. server: ``python -m harness serve --model M`` as a subprocess, driven over HTTP (``/generate_stream``,
   greedy, ``max_new_tokens`` fixed) at S concurrent streams started together (``--streams``, default
   1, 16 and 32; ``--max-batch-size`` = the largest S).
   decode tokens/s (steady state) = tokens received between the moment every stream has its first
   token and the moment the first stream ends, divided by that window; end-to-end tokens/s = all
   tokens / (last token - first send). TTFT = first token event - send, per stream.

Figures: server/raw decode tokens/s at 32 (target >= 0.8; ``ratios_server_raw`` holds it for every
count in both lists, the check uses 32 or else the largest such count) and unloaded TTFT (1 stream)
over raw prefill (target <= 1.2); tokens/s of one stream, aggregate tokens/s and median TTFT of
16 streams x 64 tokens. Prints them and writes JSON. The comparison with ``transformers serve`` in the
same dtype and the same run is benchmarks/server_vs_transformers_serve.py.

Raw and server measurements alternate (``--repeats`` rounds) so that load from other processes on a
shared machine hits both alike; since interference only slows things down, each figure is the best
of its samples (all samples are in the JSON).

    python benchmarks/server_model_throughput.py [--model smollm2] [--repeats 3] [--out DIR]
    python benchmarks/server_model_throughput.py --device cuda --dtype bfloat16 --streams 1,8,32,128 \
        --raw-batches 1,8,32,128     # on a GPU (benchmarks/gpu_check.py runs this)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from benchlib import check, counts, stamp, write

from harness.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
PROMPT = ("Write a detailed essay about the history of computing, from the abacus and mechanical "
          "calculators to transistors, integrated circuits, personal computers, the internet and "
          "machine learning. Cover the people, the machines and why each step mattered.")


def chat_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                              return_dict=False))


class Raw:
    """The model in this process: raw prefill and raw greedy decode loops."""

    def __init__(self, model_name: str, dtype: str, device: str = "auto") -> None:
        from harness.server.models import load_model

        self.lm = load_model(model_name, dtype=dtype, device=device)
        self.ids = chat_ids(self.lm.tokenizer, PROMPT)
        self.prompt_text = self.lm.tokenizer.decode(self.ids, skip_special_tokens=False)

    def _sync(self) -> None:
        import torch

        if self.lm.device.type == "cuda":
            torch.cuda.synchronize(self.lm.device)

    def prefill_s(self) -> float:
        """One B=1 prefill of the prompt with ``logits_to_keep=1`` (seconds)."""
        import torch
        from transformers import DynamicCache

        model = self.lm.model
        with torch.inference_mode():
            x = torch.tensor([self.ids], device=self.lm.device)
            t = time.perf_counter()
            model(input_ids=x, past_key_values=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1)
            self._sync()
            return time.perf_counter() - t

    def decode_tok_s(self, batch: int, steps: int, cache_kind: str) -> float:
        """Greedy decode tokens/s at ``batch`` (prefill excluded), ``cache_kind`` dynamic | inplace."""
        import torch
        from transformers import DynamicCache

        from harness.server.engine.kv_cache import BatchCache

        model, dev = self.lm.model, self.lm.device
        cache = (DynamicCache(config=model.config) if cache_kind == "dynamic"
                 else BatchCache(model.config.num_hidden_layers))
        with torch.inference_mode():
            xb = torch.tensor([self.ids], device=dev).expand(batch, -1).contiguous()
            mask = torch.ones_like(xb)
            out = model(input_ids=xb, attention_mask=mask, past_key_values=cache, use_cache=True, logits_to_keep=1)
            tok = out.logits[:, -1].argmax(-1)
            pos = len(self.ids)
            self._sync()
            t = time.perf_counter()
            for _ in range(steps):
                mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=dev)], 1)
                out = model(input_ids=tok[:, None], attention_mask=mask,
                            position_ids=torch.full((batch, 1), pos, device=dev),
                            past_key_values=cache, use_cache=True)
                tok = out.logits[:, -1].argmax(-1)
                pos += 1
            self._sync()
            return batch * steps / (time.perf_counter() - t)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_stream(client: httpx.AsyncClient, url: str, prompt: str, new_tokens: int) -> dict:
    body = {"inputs": prompt, "parameters": {"max_new_tokens": new_tokens, "do_sample": False}}
    send = time.perf_counter()
    stamps: list[float] = []
    async with client.stream("POST", url + "/generate_stream", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if "error" in event:
                    raise RuntimeError(event)
                if event.get("token") is not None:
                    stamps.append(time.perf_counter())
    return {"send": send, "stamps": stamps}


async def server_load(url: str, prompt: str, streams: int, new_tokens: int) -> dict:
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        runs = await asyncio.gather(*[one_stream(client, url, prompt, new_tokens) for _ in range(streams)])
    firsts = [r["stamps"][0] for r in runs]
    all_first = max(firsts)
    first_end = min(r["stamps"][-1] for r in runs)
    in_window = sum(1 for r in runs for s in r["stamps"] if all_first < s <= first_end)
    total = sum(len(r["stamps"]) for r in runs)
    start = min(r["send"] for r in runs)
    end = max(r["stamps"][-1] for r in runs)
    return {
        "streams": streams,
        "tokens": total,
        "decode_tok_s": in_window / (first_end - all_first) if first_end > all_first else float("nan"),
        "e2e_tok_s": total / (end - start),
        "ttft_median_s": statistics.median(f - r["send"] for f, r in zip(firsts, runs, strict=True)),
        "per_stream_tok_s": statistics.median((len(r["stamps"]) - 1) / (r["stamps"][-1] - r["stamps"][0])
                                              if len(r["stamps"]) > 1 else float("nan") for r in runs),
    }


def start_server(model: str, dtype: str, port: int, log: Path, device: str = "auto",
                 max_batch: int = 32) -> subprocess.Popen:
    args = ["--model", model, "--dtype", dtype, "--device", device, "--max-batch-size", str(max_batch),
            "--max-concurrent-requests", str(max(128, max_batch + 4))]
    try:
        s = ServerProcess.serve(args, log.parent, 300, port=port, log_name=log.name)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    assert s.proc is not None
    return s.proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (raw model and server)")
    ap.add_argument("--streams", type=counts, default=[1, 16, 32], help="server stream counts (default 1,16,32)")
    ap.add_argument("--raw-batches", type=counts, default=[1, 32], help="raw decode batch sizes (default 1,32)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="alternating raw/server rounds (best of)")
    ap.add_argument("--out", default=None, help="output directory (default reports/bench)")
    ap.add_argument("--server-log", default=None, help="server output (default $TMPDIR/server_model_throughput-PORT.log)")
    args = ap.parse_args()
    if args.new_tokens < 2 or args.repeats < 1:
        ap.error("--new-tokens must be >= 2 and --repeats >= 1")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server subprocess is stopped too
    raw = Raw(args.model, args.dtype, args.device)
    batches, streams = args.raw_batches, args.streams
    for b in batches:  # kernel warm-up (oneDNN primitives / CUDA kernels for these shapes)
        for kind in ("dynamic", "inplace"):
            raw.decode_tok_s(b, 4, kind)
    port = free_port()
    log = Path(args.server_log) if args.server_log else \
        Path(os.environ.get("TMPDIR", "/tmp")) / f"server_model_throughput-{port}.log"
    # the server gets the resolved device and dtype, so both sides run the same thing
    proc = start_server(args.model, raw.lm.dtype_name, port, log, str(raw.lm.device), max(streams))
    url = f"http://127.0.0.1:{port}"
    n = args.new_tokens
    samples: dict[str, list] = {k: [] for k in ["raw_prefill_s", "ttft_s"]
                                + [f"raw_{kind}_b{b}" for b in batches for kind in ("dynamic", "inplace")]
                                + [f"s{s}" for s in streams]}
    try:
        asyncio.run(server_load(url, raw.prompt_text, 2, 8))  # warm the HTTP path
        raw.prefill_s()
        # Raw and server measurements alternate, so that load from elsewhere hits both alike;
        # interference only slows things down, so each figure is the best of its samples.
        for _ in range(args.repeats):
            for _ in range(3):
                samples["raw_prefill_s"].append(raw.prefill_s())
                samples["ttft_s"].append(asyncio.run(server_load(url, raw.prompt_text, 1, 1))["ttft_median_s"])
            for b in batches:
                for kind in ("dynamic", "inplace"):
                    samples[f"raw_{kind}_b{b}"].append(raw.decode_tok_s(b, n, kind))
            for s in streams:
                samples[f"s{s}"].append(asyncio.run(server_load(url, raw.prompt_text, s, n)))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    best = {k: max(v) for k, v in samples.items() if k.startswith("raw_") and k != "raw_prefill_s"}
    raw_tok_s = {b: max(best[f"raw_dynamic_b{b}"], best[f"raw_inplace_b{b}"]) for b in batches}
    # best sample; a round without a decode window (NaN: a stream ended before the last joined) never wins
    srv = {s: max(samples[f"s{s}"], key=lambda r: -math.inf if math.isnan(r["decode_tok_s"]) else r["decode_tok_s"])
           for s in streams}
    ratios = {b: srv[b]["decode_tok_s"] / raw_tok_s[b] for b in batches if b in srv}
    prefill = min(samples["raw_prefill_s"])
    ttft = min(samples["ttft_s"])
    result = {
        **stamp(),
        "model": args.model, "dtype": raw.lm.dtype_name, "device": str(raw.lm.device),
        "cpus": f"{platform.machine()} {os.cpu_count()} cpus", "prompt_tokens": len(raw.ids), "new_tokens": n,
        "repeats": args.repeats, "streams": streams, "raw_batches": batches,
        "raw_prefill_s": prefill, **{f"raw_b{b}_tok_s": v for b, v in raw_tok_s.items()}, **best,
        **{f"server_{s}": r for s, r in srv.items()}, "server_ttft_unloaded_s": ttft,
        "ratios_server_raw": {str(b): r for b, r in ratios.items()},
        **{f"ratio_server_raw_{b}": r for b, r in ratios.items() if b == 32},
        "ratio_ttft_raw_prefill": ttft / prefill,
        "samples": samples,
    }
    print(f"model {args.model} ({result['dtype']}, {result['device']}), prompt {len(raw.ids)} tokens, "
          f"{n} new tokens, {result['cpus']}, best of {args.repeats} alternating rounds")
    print(f"raw prefill (B=1):           {prefill * 1000:8.1f} ms")
    for b, v in raw_tok_s.items():
        print(f"raw decode B={b:<3}:            {v:8.1f} tok/s  (DynamicCache {best[f'raw_dynamic_b{b}']:.1f}, "
              f"in-place {best[f'raw_inplace_b{b}']:.1f})")
    for s in srv.values():
        print(f"server {s['streams']:>3} streams:          {s['decode_tok_s']:8.1f} tok/s decode, "
              f"{s['e2e_tok_s']:.1f} end-to-end, {s['per_stream_tok_s']:.1f}/stream, "
              f"median TTFT {s['ttft_median_s'] * 1000:.0f} ms")
    print(f"server unloaded TTFT:        {ttft * 1000:8.1f} ms")
    result["checks"] = []
    if ratios:
        at = 32 if 32 in ratios else max(ratios)
        result["checks"].append(check(f"server/raw decode tokens/s at {at}", ratios[at], 0.8, ">=", "x"))
    result["checks"].append(check("unloaded TTFT / raw prefill", result["ratio_ttft_raw_prefill"], 1.2, "<=", "x"))
    print(f"wrote {write('server_model_throughput', result, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
