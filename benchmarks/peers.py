"""Peer load generators for benchmarks/peer_comparison.py: pinned installs, commands, output readers, figures.

Each peer gets a venv of its own under ``${XDG_CACHE_HOME:-~/.cache}/stream-harness/peers/<name>-<hash>``
(``<hash>``: first 10 hex digits of the SHA-256 of its install steps and the interpreter version;
the same scheme as tests/interop/targets.py). torch is pinned (``torch==2.13.0``, the CPU build) in
every pip call that could pull it, so no CUDA build is ever installed. vLLM is installed with
``--no-deps`` plus only what ``vllm.benchmarks.serve`` imports, and run through that module
(``add_cli_args`` + ``main``): the ``vllm`` CLI entry imports the engine, which needs the full
dependency set and a CUDA build.

Every peer's output is read into :class:`ToolRequest` rows; the figures (:func:`figures`) are
computed the same way for every tool, joining with the reference server's ``--trace-file``
(``{"request_id", "index", "t_ns"}``, CLOCK_MONOTONIC ns, index from 1) when the tool sent the
request id as ``x-request-id`` and its stamps are on CLOCK_MONOTONIC.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "interop"))
from targets import Target, build_venv, cache_root  # noqa: E402 - the pinned-venv builder of make interop

TORCH = "torch==2.13.0"
#: what ``import vllm.benchmarks.serve`` needs (found by importing it in a --no-deps venv)
VLLM_BENCH_DEPS = ("aiohttp", "numpy", "tqdm", "transformers>=5.16.1,<5.21.0", "tokenizers", "regex", "cachetools",
                   "psutil", "pydantic", "requests", "huggingface_hub", "safetensors", "pybase64", "pillow", "msgspec",
                   "cbor2", "pyzmq", "oss-harmony>=0.0.11", "openai>=2.25.0", "cloudpickle", "uvloop", "py-cpuinfo",
                   "prometheus_client", "xgrammar==0.2.8", "fastapi>=0.133.0,<0.137.0", "partial-json-parser",
                   "llguidance>=1.7.0,<1.8.0", "einops")
VLLM_RUNNER = ("import argparse, sys\n"
               "from vllm.benchmarks.serve import add_cli_args, main\n"
               "p = argparse.ArgumentParser(prog='vllm bench serve')\n"
               "add_cli_args(p)\n"
               "main(p.parse_args(sys.argv[1:]))\n")


PEERS: dict[str, Target] = {p.name: p for p in (
    Target("vllm", ((TORCH, *VLLM_BENCH_DEPS), ("--no-deps", "vllm==0.33.0")),
           "vLLM 0.33.0 `bench serve` (vllm.benchmarks.serve, installed --no-deps)"),
    Target("aiperf", (("aiperf==0.13.*", TORCH),), "AIPerf 0.13 `aiperf profile`"),
    Target("guidellm", (("guidellm==0.8.1", TORCH),), "GuideLLM 0.8.1 `guidellm run` and `guidellm mock-server`"),
)}


def venv_dir(name: str) -> Path:
    """The venv directory of peer ``name`` (whether built or not)."""
    p = PEERS[name]
    return cache_root("peers") / f"{p.name}-{p.key}"


def ensure(name: str, timeout_s: float = 1200.0, out=sys.stdout) -> Path:
    """Build peer ``name``'s venv unless it is built (tests/interop/targets.py's :func:`build_venv`, every
    pip call bounded by what is left of ``timeout_s``); returns its ``bin`` directory. RuntimeError (the
    step and the tail of ``<venv>/install.log``) when a step fails or runs out of time."""
    return build_venv(PEERS[name], venv_dir(name), f"peers: {name}", out, timeout_s) / "bin"


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class RunSpec:
    """One closed-loop run: ``streams`` concurrent requests, ``requests`` in all, 8 prompt / 64 output tokens."""

    url: str
    streams: int
    requests: int
    tokenizer: Path
    out_dir: Path
    model: str = "simulated"
    input_tokens: int = 8
    output_tokens: int = 64


def command(name: str, bin_dir: Path, s: RunSpec) -> list[str]:
    """The command line of peer ``name`` for run ``s`` (chat completions, streaming, closed loop)."""
    if name == "vllm":
        return [str(bin_dir / "python"), "-c", VLLM_RUNNER, "--backend", "openai-chat", "--base-url", s.url,
                "--endpoint", "/v1/chat/completions", "--model", s.model, "--tokenizer", str(s.tokenizer),
                "--dataset-name", "random", "--random-input-len", str(s.input_tokens),
                "--random-output-len", str(s.output_tokens), "--num-prompts", str(s.requests),
                "--max-concurrency", str(s.streams), "--request-rate", "inf", "--save-result", "--save-detailed",
                "--result-dir", str(s.out_dir), "--result-filename", "vllm.json", "--request-id-prefix", "pv-",
                "--disable-tqdm", "--percentile-metrics", "ttft,tpot,itl", "--num-warmups", "0"]
    if name == "aiperf":
        return [str(bin_dir / "aiperf"), "profile", "-m", s.model, "--url", s.url, "--endpoint-type", "chat",
                "--streaming", "--tokenizer", str(s.tokenizer), "--concurrency", str(s.streams),
                "--request-count", str(s.requests), "--prompt-input-tokens-mean", str(s.input_tokens),
                "--prompt-output-tokens-mean", str(s.output_tokens), "--ui-type", "none",
                "--output-artifact-dir", str(s.out_dir / "aiperf"), "--export-level", "raw",
                "--no-server-metrics", "--no-gpu-telemetry"]
    if name == "guidellm":
        return [str(bin_dir / "guidellm"), "run", "--backend", f"kind=openai_http,target={s.url},model={s.model}",
                "--profile", f"kind=concurrent,streams={s.streams}",
                "--constraint", f"kind=max_requests,count={s.requests}",
                "--tokenizer", f"kind=hf_auto,model={s.tokenizer}",
                "--data", f"kind=synthetic_text,prompt_tokens={s.input_tokens},output_tokens={s.output_tokens}",
                "--output", f"kind=json,path={s.out_dir / 'guidellm.json'}", "--disable-console-interactive"]
    raise KeyError(name)


def mock_server_command(bin_dir: Path, port: int, ttft_ms: float, itl_ms: float, tokens: int) -> list[str]:
    """``guidellm mock-server`` on 127.0.0.1:``port`` with the same script (no jitter, one worker).

    No ``--processor``: 0.8.1 loads it with the slow ``PreTrainedTokenizer`` base class, which fails on
    a tokenizer.json-only directory (NotImplementedError in get_vocab); its own mock tokenizer is used.
    """
    return [str(bin_dir / "guidellm"), "mock-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--model", "simulated", "--ttft-ms", f"{ttft_ms:g}", "--ttft-ms-std", "0",
            "--itl-ms", f"{itl_ms:g}", "--itl-ms-std", "0", "--output-tokens", str(tokens), "--output-tokens-std", "0"]


# --------------------------------------------------------------------------- reading tool outputs


@dataclass
class ToolRequest:
    """One completed request as a tool reported it (times in ms unless ``_ns``).

    ``token_ns``: CLOCK_MONOTONIC arrival of each streamed chunk that carried ``choices``, in order
    (chunk ``i`` is the server's trace index ``i + 1``); empty when the tool keeps no absolute
    monotonic stamps. ``itl_ms``: the gaps the tool reports (chunk ``i`` - chunk ``i-1``), None when
    it reports none per request. ``tpot_ms``: the tool's own per-request TPOT; ``tpot_span``:
    the trace indices ``(a, b)`` and divisor ``k`` of the tool's TPOT formula, so the server's value
    by the same formula is ``(t_b - t_a) / k``.
    """

    request_id: str | None
    ttft_ms: float
    send_ns: int | None = None
    token_ns: list[int] = field(default_factory=list)
    itl_ms: list[float] | None = None
    tpot_ms: float | None = None
    tpot_span: tuple[int, int, int] | None = None


def read_vllm(path: Path) -> list[ToolRequest]:
    """vLLM ``bench serve --save-detailed`` JSON: per request ``start_times`` (``time.perf_counter()``
    seconds, CLOCK_MONOTONIC on Linux), ``ttfts`` (s), ``itls`` (s, every chunk with ``choices``
    after the first), ``latencies`` (s, to the last such chunk), ``output_lens`` (usage tokens).
    Request ``i`` had id ``pv-<i>`` (``--request-id-prefix pv-``; results are kept in request
    order). TPOT = (latency - ttft) / (output_len - 1)."""
    d = json.loads(Path(path).read_text())
    out = []
    errors = d.get("errors") or [""] * len(d["ttfts"])
    cols = (d["start_times"], d["ttfts"], d["itls"], d["latencies"], d["output_lens"], errors)
    for i, (st, ttft, itl, lat, n, err) in enumerate(zip(*cols, strict=True)):
        if err or not ttft:
            continue
        send = round(st * 1e9)
        t = send + round(ttft * 1e9)
        tokens = [t]
        for g in itl:
            t += round(g * 1e9)
            tokens.append(t)
        tpot = (lat - ttft) / (n - 1) * 1e3 if n and n > 1 else None
        out.append(ToolRequest(f"pv-{i}", ttft * 1e3, send, tokens, [g * 1e3 for g in itl], tpot,
                               (1, len(tokens), n - 1) if tpot is not None else None))
    return out


def read_aiperf(raw_path: Path, records_path: Path) -> list[ToolRequest]:
    """AIPerf ``--export-level raw``: ``profile_export_raw.jsonl`` holds per request ``start_perf_ns``
    (``time.perf_counter_ns()``) and every response's ``perf_ns``; the id it sent as X-Request-ID is
    ``metadata.x_request_id``. ``profile_export.jsonl`` holds its metrics: ``time_to_first_token``,
    ``inter_chunk_latency`` (ms, every gap), ``inter_token_latency`` = (request_latency - TTFT) /
    (output tokens - 1) with request_latency to the last response (AIPerf's TPOT)."""
    metrics: dict[str, dict] = {}
    for line in Path(records_path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            metrics[r["metadata"]["x_request_id"]] = r.get("metrics") or {}
    out = []
    for line in Path(raw_path).read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        rid = r["metadata"]["x_request_id"]
        m = metrics.get(rid, {})
        if r.get("status") != 200 or "time_to_first_token" not in m:
            continue
        tokens = [resp["perf_ns"] for resp in r.get("responses", []) if _has_choices(resp)]
        tpot = m.get("inter_token_latency", {}).get("value")
        n = m.get("output_token_count", {}).get("value") or len(tokens)
        itl = m.get("inter_chunk_latency", {}).get("value")
        # its request latency ends at the last chunk with content (the empty final chunk is left out):
        # trace index 1 + the number of gaps it reports
        last = 1 + len(itl) if isinstance(itl, list) else len(tokens)
        out.append(ToolRequest(rid, m["time_to_first_token"]["value"], r.get("start_perf_ns"), tokens,
                               list(itl) if isinstance(itl, list) else None, tpot,
                               (1, last, n - 1) if tpot is not None and n > 1 else None))
    return out


def _has_choices(resp: dict) -> bool:
    for p in resp.get("packets", []):
        v = p.get("value", "")
        if v.startswith("{"):
            try:
                return bool(json.loads(v).get("choices"))
            except ValueError:
                return False
    return False


def read_guidellm(path: Path) -> list[ToolRequest]:
    """GuideLLM ``--output kind=json``: ``benchmarks[0].requests.successful[*].info.timings`` holds
    ``request_start``, ``first_token_iteration``, ``last_token_iteration`` (``time.time()`` seconds,
    wall clock) and ``token_iterations`` (chunks with text; the empty final chunk is not one).
    Its request ids are its own and are not sent. TTFT = first - start; TPOT (its
    ``time_per_output_token``) = (last - first) / (output tokens - 1), taken here over the chunks
    it saw: the server's index 1 .. ``token_iterations``."""
    d = json.loads(Path(path).read_text())
    out = []
    for b in d["benchmarks"]:
        for r in b["requests"]["successful"]:
            t = r["info"]["timings"]
            if t.get("first_token_iteration") is None:
                continue
            n = int(t.get("token_iterations") or 0)
            outn = (r.get("output_metrics") or {}).get("text_tokens") or n
            ttft = (t["first_token_iteration"] - t["request_start"]) * 1e3
            tpot = ((t["last_token_iteration"] - t["first_token_iteration"]) / (outn - 1) * 1e3
                    if outn and outn > 1 else None)
            out.append(ToolRequest(None, ttft, None, [], None, tpot, (1, n, outn - 1) if tpot is not None else None))
    return out


def read_harness(records_path: Path) -> list[ToolRequest]:
    """The harness's ``records.jsonl``: ``send_ns`` and ``token_ns`` on CLOCK_MONOTONIC, its request id sent as
    X-Request-Id. TTFT and TPOT are its own (harness.metrics.ttft_ms, tpot_ms: (last event - first
    event) / (output tokens - 1)); ITL: every gap between token events."""
    from harness import metrics
    from harness.records import iter_records

    out = []
    for r in iter_records(records_path):
        if r.send_ns is None or not r.token_ns or r.outcome != "ok":
            continue
        tok = list(r.token_ns)
        tpot = metrics.tpot_ms(r)
        k = metrics.output_tokens(r) - 1
        out.append(ToolRequest(r.request_id, metrics.ttft_ms(r), r.send_ns, tok, metrics.itl_ms(r), tpot,
                               (1, len(tok), k) if tpot is not None else None))
    return out


# --------------------------------------------------------------------------- figures


def pct(values: Iterable[float], p: float) -> float | None:
    """The ``p``-th percentile (0-100) by linear interpolation; None for no values."""
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def p50_p99(values: Iterable[float]) -> dict:
    v = list(values)
    return {"count": len(v), "p50": _r(pct(v, 50)), "p99": _r(pct(v, 99)), "max": _r(max(v) if v else None)}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def server_gaps_ms(trace: dict[str, dict[int, int]]) -> list[float]:
    """Every gap between consecutive token writes of one request in the trace, ms (the server's own ITL)."""
    gaps = []
    for per in trace.values():
        idx = sorted(per)
        gaps.extend((per[b] - per[a]) / 1e6 for a, b in itertools.pairwise(idx) if b == a + 1)
    return gaps


def figures(reqs: list[ToolRequest], trace: dict[str, dict[int, int]], script_ttft_ms: float,
            script_itl_ms: float) -> dict:
    """One tool run's figures (ms) against the server trace.

    - ``ttft_inflation_ms``: with a joinable request id and a monotonic send stamp ("join"): tool
      TTFT - (server write of token 1 - tool send) = the first token's delay; otherwise ("script"):
      tool TTFT - ``script_ttft_ms`` (it then includes the server's own lateness).
    - ``tpot_error_ms``: tool TPOT - the server's TPOT by the tool's formula on the same request's
      stamps ("join"); without ids: tool TPOT percentile - the server's percentile by that formula
      over all traced requests ("distribution").
    - ``itl_error_ms``: |tool gap - server gap| for the same request and index (tools that report
      every gap and can be joined).
    - ``token_delay_ms``: tool arrival stamp - server write stamp, first token and every token
      (absolute monotonic stamps and ids needed).
    - ``server_itl_ms``: the server's own gaps during the run (its scheduling under this client's load).
    """
    joinable = [r for r in reqs if r.request_id is not None and r.request_id in trace]
    fig: dict = {"requests": len(reqs), "joined_requests": len(joinable)}
    if joinable and all(r.send_ns is not None for r in joinable):
        infl = [r.ttft_ms - (trace[r.request_id][1] - r.send_ns) / 1e6 for r in joinable if 1 in trace[r.request_id]]
        fig["ttft_inflation_ms"] = {"method": "join", **p50_p99(infl)}
    else:
        fig["ttft_inflation_ms"] = {"method": "script", **p50_p99(r.ttft_ms - script_ttft_ms for r in reqs)}
    if joinable:
        err = []
        for r in joinable:
            per = trace[r.request_id]
            if r.tpot_ms is not None and r.tpot_span and r.tpot_span[0] in per and r.tpot_span[1] in per:
                a, b, k = r.tpot_span
                err.append(r.tpot_ms - (per[b] - per[a]) / 1e6 / k)
        fig["tpot_error_ms"] = {"method": "join", **p50_p99(err)}
    else:
        tool = [r.tpot_ms for r in reqs if r.tpot_ms is not None]
        spans = [r.tpot_span for r in reqs if r.tpot_span]
        a, b, k = max(set(spans), key=spans.count) if spans else (1, 2, 1)
        srv = [(per[b] - per[a]) / 1e6 / k for per in trace.values() if a in per and b in per]
        d = {"method": "distribution", "count": len(tool)}
        for p in (50, 99):
            tp, sp = pct(tool, p), pct(srv, p)
            d[f"p{p}"] = _r(tp - sp) if tp is not None and sp is not None else None
        fig["tpot_error_ms"] = d
    itl_err, first, every = [], [], []
    for r in joinable:
        per = trace[r.request_id]
        if r.token_ns:
            for i, t in enumerate(r.token_ns):
                if i + 1 in per:
                    every.append((t - per[i + 1]) / 1e6)
                    if i == 0:
                        first.append(every[-1])
        if r.itl_ms:
            for i, g in enumerate(r.itl_ms):  # gap i is chunk i+1 - chunk i = trace index i+2 - (i+1)
                if i + 1 in per and i + 2 in per:
                    itl_err.append(abs(g - (per[i + 2] - per[i + 1]) / 1e6))
    fig["itl_abs_error_ms"] = p50_p99(itl_err) if itl_err else None
    fig["token_delay_first_ms"] = p50_p99(first) if first else None
    fig["token_delay_every_ms"] = p50_p99(every) if every else None
    fig["server_itl_ms"] = p50_p99(server_gaps_ms(trace))
    fig["script"] = {"ttft_ms": script_ttft_ms, "itl_ms": script_itl_ms}
    return fig


def client_itl(reqs: list[ToolRequest]) -> list[float]:
    """Every gap a client observed, ms (from ``itl_ms``)."""
    return [g for r in reqs for g in (r.itl_ms or [])]
