"""Side by side: the harness, vLLM `bench serve`, AIPerf and GuideLLM against one scripted simulated server.

Each tool runs alone, in closed loop (``streams`` concurrent requests; each stream sends its next
request when the last one ends), against a fresh reference server (``harness serve --model
simulated``: TTFT 200 ms, ITL 20 ms, 64 token events, no jitter, ``--trace-file``), all on
``/v1/chat/completions`` with 8 prompt tokens. The peers send ``streams x rounds`` requests; the
harness (a headless Locust run of harness/calibration/locustfile.py with ``--protocol openai``)
runs for the time that takes at the script's pace. Per tool and level (benchmarks/peers.py
``figures`` has the formulas): TTFT inflation p50/p99 (joined on the request id where the tool
sends one, else tool TTFT - 200 ms), TPOT error against the server's stamps by the tool's own
formula, |ITL error| where the tool reports every gap, per-token delay (tool arrival stamp -
server write stamp) where its output has absolute monotonic stamps, client CPU per token (the
tool's process tree, psutil, whole run and the middle 60 % of the token span) and the server's
own ITL p50/p99 while the tool ran. Fidelity: the harness client at the top level against this
server and against ``guidellm mock-server`` (same script), client-observed ITL vs the script.
The machine's load average and CPU pressure are printed and stored: on a shared machine the
latency figures are those of a loaded machine.

    .venv/bin/python benchmarks/peer_comparison.py [--quick] [--tools harness,vllm,aiperf,guidellm]
        [--levels 16,256] [--rounds 8] [--out reports/bench] [--work DIR]

Peers are installed on first use (pinned, one venv each; benchmarks/peers.py). See docs/peers.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import peers

from harness.calibration.join import read_trace
from harness.server_process import ServerProcess, free_port

TTFT_MS, ITL_MS, TOKENS = 200.0, 20.0, 64
TOOLS = ("harness", "vllm", "aiperf", "guidellm")
LOCUSTFILE = benchlib.ROOT / "harness" / "calibration" / "locustfile.py"


def tokenizer_dir() -> Path:
    """The default model's converted directory (tokenizer.json + config), used as every tool's tokenizer."""
    from harness.server.models import smollm2

    d = smollm2.converted_dir(smollm2.locate_gguf())
    if not smollm2.is_complete(d):
        raise FileNotFoundError(f"{d} is not there yet: run `harness serve` once (it converts the default model)")
    return d


def server_args(trace: Path, streams: int) -> list[str]:
    return ["--model", "simulated", "--sim-ttft-ms", f"{TTFT_MS:g}", "--sim-itl-ms", f"{ITL_MS:g}",
            "--sim-jitter-ms", "0", "--sim-output-tokens", str(TOKENS), "--trace-file", str(trace),
            "--max-concurrent-requests", str(max(128, 2 * streams)), "--graceful-termination-timeout", "5",
            "--log-level", "warning"]


def harness_command(url: str, streams: int, seconds: float, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", url, "--headless", "-u", str(streams),
            "-r", str(streams), "-t", f"{max(2, round(seconds))}s", "--stop-timeout", "0", "--run-dir", str(run_dir),
            "--only-summary", "--loglevel", "WARNING", "--protocol", "openai", "--model-name", "simulated",
            "--input-tokens", f"fixed:{8}", "--output-tokens", f"fixed:{TOKENS}", "--max-inflight", str(streams)]


def run_tree(cmd: list[str], cwd: Path, log: Path, timeout_s: float) -> tuple[int | None, list[tuple[int, float]]]:
    """Run ``cmd``; sample its process tree's CPU every 0.25 s. Returns (exit code or None on timeout,
    [(monotonic ns, CPU s of the tree so far)]). A process's CPU is its last reading (user + system),
    summed over every process seen, so a short-lived child's last < 0.25 s can be missed."""
    import psutil

    seen: dict[int, float] = {}
    samples: list[tuple[int, float]] = []
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        deadline = time.monotonic() + timeout_s
        rc: int | None = None
        while True:
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        t = p.cpu_times()
                        seen[p.pid] = max(seen.get(p.pid, 0.0), t.user + t.system)
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            samples.append((time.monotonic_ns(), sum(seen.values())))
            if proc.poll() is not None:
                rc = proc.returncode
                break
            if time.monotonic() > deadline:
                for p in [*root.children(recursive=True), root]:
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
                proc.wait()
                break
            time.sleep(0.25)
    return rc, samples


def cpu_figures(samples: list[tuple[int, float]], trace: dict[str, dict[int, int]]) -> dict:
    """Client CPU per token, us: whole run = tree CPU / token events the server wrote; steady = CPU
    between the samples nearest 20 % and 80 % of the token span / events written between them."""
    times = sorted(t for per in trace.values() for t in per.values())
    if not times or not samples:
        return {}
    total_cpu = samples[-1][1]
    out = {"client_cpu_s": round(total_cpu, 3), "server_tokens": len(times),
           "client_us_per_token_whole": round(total_cpu / len(times) * 1e6, 2)}
    lo_t = times[0] + (times[-1] - times[0]) * 0.2
    hi_t = times[0] + (times[-1] - times[0]) * 0.8
    a = min(samples, key=lambda s: abs(s[0] - lo_t))
    b = min(samples, key=lambda s: abs(s[0] - hi_t))
    events = sum(1 for t in times if a[0] <= t <= b[0])
    if b[0] > a[0] and events:
        out["client_us_per_token_steady"] = round((b[1] - a[1]) / events * 1e6, 2)
    return out


def run_one(tool: str, streams: int, rounds: int, work: Path, bins: dict[str, Path], tok: Path) -> dict:
    """One tool at one level against a fresh server; its figures (peers.figures + CPU)."""
    d = work / f"{tool}-{streams}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    trace = d / "trace.jsonl"
    requests = streams * rounds
    cycle_s = (TTFT_MS + (TOKENS - 1) * ITL_MS) / 1000
    server = ServerProcess.serve(server_args(trace, streams), d, 60.0, log_name="server.log")
    t0 = time.monotonic()
    try:
        if tool == "harness":
            cmd = harness_command(server.url, streams, rounds * cycle_s + 3.0, d / "run")  # + start-up and ramp
        else:
            spec = peers.RunSpec(server.url, streams, requests, tok, d)
            cmd = peers.command(tool, bins[tool], spec)
        rc, samples = run_tree(cmd, d, d / "tool.log", timeout_s=180 + rounds * cycle_s * 4)
    finally:
        server.stop()
    wall = time.monotonic() - t0
    if rc != 0:
        tail = "\n".join((d / "tool.log").read_text(errors="replace").splitlines()[-12:])
        raise RuntimeError(f"{tool} at {streams} streams: exit {rc}; see {d / 'tool.log'}:\n{tail}")
    if tool == "harness":
        reqs = peers.read_harness(d / "run" / "records.jsonl")
    elif tool == "vllm":
        reqs = peers.read_vllm(d / "vllm.json")
    elif tool == "aiperf":
        reqs = peers.read_aiperf(d / "aiperf" / "profile_export_raw.jsonl", d / "aiperf" / "profile_export.jsonl")
    else:
        reqs = peers.read_guidellm(d / "guidellm.json")
    tr = read_trace(trace)
    fig = peers.figures(reqs, tr, TTFT_MS, ITL_MS)
    fig.update(cpu_figures(samples, tr))
    fig.update(tool=tool, streams=streams, wall_s=round(wall, 1), loadavg=_loadavg(), cpu_pressure=_psi())
    return fig


def fidelity(streams: int, seconds: float, work: Path, gbin: Path) -> dict:
    """The harness client (openai protocol) at ``streams`` against our simulated server, then against
    ``guidellm mock-server`` with the same script; client-observed ITL and TTFT (ms) of each."""
    out = {}
    for kind in ("reference", "guidellm-mock"):
        d = work / f"fidelity-{kind}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        if kind == "reference":
            server = ServerProcess.serve(server_args(d / "trace.jsonl", streams), d, 60.0, log_name="server.log")
        else:
            port = free_port()
            server = ServerProcess(peers.mock_server_command(gbin, port, TTFT_MS, ITL_MS, TOKENS), port,
                                   d / "server.log", ready_path="/health").start(90.0)
        try:
            rc, _ = run_tree(harness_command(server.url, streams, seconds, d / "run"), d, d / "tool.log",
                             timeout_s=seconds + 120)
        finally:
            server.stop()
        reqs = peers.read_harness(d / "run" / "records.jsonl")
        gaps = peers.client_itl(reqs)
        out[kind] = {"locust_exit": rc, "requests": len(reqs), "client_itl_ms": peers.p50_p99(gaps),
                     "client_ttft_ms": peers.p50_p99(r.ttft_ms for r in reqs),
                     "events_per_request": peers.p50_p99(len(r.token_ns) for r in reqs),
                     "loadavg": _loadavg(), "cpu_pressure": _psi()}
    return {"streams": streams, "seconds": seconds, "script": {"ttft_ms": TTFT_MS, "itl_ms": ITL_MS}, **out}


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _psi() -> str:
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "n/a"


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def table(rows: list[dict], fid: dict | None) -> str:
    """The markdown table of all figures (ms unless marked)."""
    head = ("| tool | streams | TTFT infl. p50 / p99 | TPOT err p50 / p99 | abs ITL err p50 / p99 | "
            "token delay first p99 / every p99 | CPU us/token steady / whole | server ITL p50 / p99 | load |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['tool']} | {r['streams']} | failed: {r['error'][:80]} |||||||")
            continue
        t, p, i = r["ttft_inflation_ms"], r["tpot_error_ms"], r.get("itl_abs_error_ms") or {}
        df, de = r.get("token_delay_first_ms") or {}, r.get("token_delay_every_ms") or {}
        s = r["server_itl_ms"]
        lines.append(
            f"| {r['tool']} | {r['streams']} | {_f(t['p50'])} / {_f(t['p99'])} ({t['method']}) | "
            f"{_f(p.get('p50'), 3)} / {_f(p.get('p99'), 3)} ({p['method']}) | {_f(i.get('p50'), 3)} / {_f(i.get('p99'))} | "
            f"{_f(df.get('p99'))} / {_f(de.get('p99'))} | {_f(r.get('client_us_per_token_steady'), 1)} / "
            f"{_f(r.get('client_us_per_token_whole'), 1)} | {_f(s['p50'])} / {_f(s['p99'])} | {r['loadavg']} |")
    if fid:
        lines += ["", f"Fidelity: harness client at {fid['streams']} streams, script ITL {ITL_MS:g} ms, "
                  f"TTFT {TTFT_MS:g} ms", "", "| server | client ITL p50 / p99 | client TTFT p50 / p99 | requests | load |",
                  "|---|---|---|---|---|"]
        for kind in ("reference", "guidellm-mock"):
            f = fid.get(kind)
            if f:
                lines.append(f"| {kind} | {_f(f['client_itl_ms']['p50'])} / {_f(f['client_itl_ms']['p99'])} | "
                             f"{_f(f['client_ttft_ms']['p50'])} / {_f(f['client_ttft_ms']['p99'])} | {f['requests']} | "
                             f"{f['loadavg']} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, of {', '.join(TOOLS)}")
    ap.add_argument("--levels", type=benchlib.counts, default=[16, 256], help="concurrent streams (default 16,256)")
    ap.add_argument("--rounds", type=int, default=8, help="requests per stream (default 8; --quick: 2)")
    ap.add_argument("--quick", action="store_true", help="2 rounds per stream, a 5 s fidelity check")
    ap.add_argument("--no-fidelity", action="store_true", help="skip the reference vs guidellm mock-server check")
    ap.add_argument("--install-timeout", type=float, default=1200.0, help="seconds per peer install (default 1200)")
    ap.add_argument("--work", default=None, help="keep every run's files here (default: a temporary directory)")
    ap.add_argument("--out", default=None, help="JSON dir (default reports/bench)")
    a = ap.parse_args()
    tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    bad = [t for t in tools if t not in TOOLS]
    if bad or not tools:
        print(f"peer_comparison: unknown tool {bad[0] if bad else ''!r}; expected some of {', '.join(TOOLS)}",
              file=sys.stderr)
        return 2
    if a.rounds < 1:
        print("peer_comparison: --rounds must be >= 1", file=sys.stderr)
        return 2
    rounds = 2 if a.quick else a.rounds
    try:
        tok = tokenizer_dir()
    except FileNotFoundError as exc:
        print(f"peer_comparison: {exc}", file=sys.stderr)
        return 1
    bins: dict[str, Path] = {}
    failures: dict[str, str] = {}
    need = [t for t in tools if t != "harness"] + ([] if a.no_fidelity or "guidellm" in tools else ["guidellm"])
    for name in dict.fromkeys(need):
        try:
            bins[name] = peers.ensure(name, a.install_timeout)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            failures[name] = str(exc).splitlines()[0]
            print(str(exc), file=sys.stderr)
    print(f"peer comparison: script TTFT {TTFT_MS:g} ms, ITL {ITL_MS:g} ms, {TOKENS} tokens; levels {a.levels}; "
          f"{rounds} requests per stream")
    stamp = benchlib.stamp()
    work_ctx = tempfile.TemporaryDirectory(prefix="peer-comparison-") if a.work is None else None
    work = Path(work_ctx.name if work_ctx else a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    fid = None
    try:
        for streams in a.levels:
            for tool in tools:
                if tool in failures:
                    rows.append({"tool": tool, "streams": streams, "error": "install: " + failures[tool]})
                    continue
                print(f"  {tool} at {streams} streams ... (load {_loadavg()})", flush=True)
                try:
                    rows.append(run_one(tool, streams, rounds, work, bins, tok))
                except (RuntimeError, OSError, ValueError, KeyError) as exc:
                    print(f"  {tool} at {streams}: {exc}", file=sys.stderr)
                    rows.append({"tool": tool, "streams": streams, "error": str(exc).splitlines()[0]})
        if not a.no_fidelity and "guidellm" in bins:
            top = max(a.levels)
            print(f"  fidelity at {top} streams: reference vs guidellm mock-server ...", flush=True)
            try:
                fid = fidelity(top, 5.0 if a.quick else 15.0, work, bins["guidellm"])
            except (RuntimeError, OSError) as exc:
                print(f"  fidelity: {exc}", file=sys.stderr)
                fid = {"error": str(exc).splitlines()[0]}
    finally:
        if work_ctx:
            work_ctx.cleanup()
    md = table(rows, fid if fid and "error" not in fid else None)
    print(md)
    doc = {"benchmark": "peer_comparison", **stamp, "script": {"ttft_ms": TTFT_MS, "itl_ms": ITL_MS, "tokens": TOKENS},
           "rounds": rounds, "peers": {n: p.about for n, p in peers.PEERS.items()},
           "install_failures": failures, "runs": rows, "fidelity": fid, "table_md": md,
           "loadavg_end": _loadavg(), "cpu_pressure_end": _psi()}
    print(f"wrote {benchlib.write('peer_comparison', doc, a.out)}")
    return 0 if not failures and all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
