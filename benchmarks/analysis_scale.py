"""Analysis at scale: `harness report` on N synthetic request records (target: 10M in <= 120 s, <= 2 GB).

Writes a synthetic run (closed loop, 256 streams, token counts uniform in [OUT_MIN, OUT_MAX], 3 %
overloaded, 0.5 % timeouts; about 1.06 KB of JSONL per record) as records.jsonl, then times the full
report (read + per-request metrics + summary + plots + report.html) in a fresh process and reports its
wall and CPU seconds, the peak RSS of its largest process and the peak of the sum over its process
tree (the report process and its reader processes, sampled every 50 ms), with the load average and
CPU pressure it ran under. The reader uses one process per core, so wall time scales with idle cores;
CPU seconds show the work itself. Generating the records is timed apart; with ``--out DIR`` the file is
kept and reused by the next run with the same ``--records``.

    python benchmarks/analysis_scale.py [--records 1000000] [--out DIR] [--json results.json] [--generate-only]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

OUT_MIN, OUT_MAX = 8, 56
TARGET_S = 120.0
TARGET_RSS_MB = 2048.0
GENERATOR = 2  #: bump when the synthetic records change (a kept file of another version is rewritten)
T0_NS = 10**15  #: every time is a 16-digit number (fixed width: token lists are cut from one joined string)


def write_records(path: Path, n: int, seed: int = 0, users: int = 256) -> int:
    """Write ``n`` synthetic records (closed loop over ``users``); returns the file size in bytes.

    Vectorized per chunk: durations first, then each user's sends as a running sum of its own requests'
    durations (+1 us think time), token times as send + TTFT + cumulative gamma gaps; all timestamps
    have 16 digits, so each record's token list is a slice of one comma-joined string."""
    rng = np.random.default_rng(seed)
    chunk = 50_000
    user_clock = np.full(users, T0_NS, dtype=np.int64) + rng.integers(0, 10**9, users)
    ones = ",".join(["1"] * OUT_MAX)
    with open(path, "w", encoding="utf-8") as fh:
        for c0 in range(0, n, chunk):
            k = min(chunk, n - c0)
            u = rng.integers(0, users, k)
            d = rng.random(k)
            over = d < 0.03
            timeout = (d >= 0.03) & (d < 0.035)
            m = np.where(over, 0, rng.integers(OUT_MIN, OUT_MAX + 1, k))
            ttft = rng.lognormal(np.log(80e6), 0.4, k).astype(np.int64)
            g = np.maximum(m - 1, 0)
            gaps = rng.gamma(4.0, 5e6, int(g.sum())).astype(np.int64)
            # per record: offsets of its tokens from its first token (0 then cumulative gaps)
            rel = np.zeros(int(m.sum()), dtype=np.int64)
            tstart = np.concatenate(([0], np.cumsum(m)[:-1]))
            has = m > 0
            pos = np.ones(len(rel), dtype=bool)
            pos[tstart[has]] = False
            rel[pos] = gaps
            cs = np.cumsum(rel)
            rel = cs - np.repeat(cs[tstart[has]], m[has])
            last_rel = np.zeros(k, dtype=np.int64)
            last_rel[has] = rel[tstart[has] + m[has] - 1]
            dur = np.where(over, 2_000_000, ttft + last_rel + 200_000)
            # sends: each user's requests back to back (previous end + 1 us), in record order
            order = np.argsort(u, kind="stable")
            du = dur[order] + 1000
            cu = np.cumsum(du)
            us = u[order]
            first_of_user = np.r_[True, us[1:] != us[:-1]]
            grp_start = np.maximum.accumulate(np.where(first_of_user, np.arange(k), 0))
            before = cu - du - (cu - du)[grp_start]  # this user's earlier durations in the chunk
            send = np.empty(k, dtype=np.int64)
            send[order] = user_clock[us] + before
            last = np.flatnonzero(np.r_[us[1:] != us[:-1], True])
            user_clock[us[last]] += cu[last] - (cu - du)[grp_start[last]]
            end = send + dur
            toks = np.repeat(send + ttft, m) + rel
            s = ",".join(map(str, toks.tolist()))
            w = 17  # 16 digits and a comma
            lines = []
            off = 0
            for j, (sj, ej, mj, ov, to) in enumerate(zip(send.tolist(), end.tolist(), m.tolist(), over.tolist(),
                                                      timeout.tolist(), strict=True)):
                i = c0 + j
                if ov:
                    lines.append(
                        f'{{"run_id":"bench","scenario":"scale","worker":"w0","user":"{u[j]}","request_id":"{i}",'
                        f'"protocol":"tgi","target":"http://127.0.0.1:3000/generate_stream","intended_ns":{sj},'
                        f'"send_ns":{sj},"attempt_send_ns":{sj},"headers_ns":{ej},"token_ns":[],'
                        f'"tokens_per_event":[],"end_ns":{ej},"http_status":429,"outcome":"overloaded",'
                        f'"error_text":"Model is overloaded","output_tokens_events":0}}')
                    continue
                tok = s[off * w: (off + mj) * w - 1]
                off += mj
                lines.append(
                    f'{{"run_id":"bench","scenario":"scale","worker":"w0","user":"{u[j]}","request_id":"{i}",'
                    f'"protocol":"tgi","target":"http://127.0.0.1:3000/generate_stream","intended_ns":{sj},'
                    f'"send_ns":{sj},"attempt_send_ns":{sj},"headers_ns":{sj + 900_000},"token_ns":[{tok}],'
                    f'"tokens_per_event":[{ones[:2 * mj - 1]}],"end_ns":{ej},"http_status":200,'
                    f'"outcome":"{"timeout" if to else "ok"}","finish_reason":"length","input_tokens_server":128,'
                    f'"output_tokens_server":{mj},"output_tokens_events":{mj}}}')
            fh.write("\n".join(lines) + "\n")
    return path.stat().st_size


def _cpu_pressure() -> str:
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "n/a"


def _watch_rss(pid: int, stop: threading.Event, peak: dict) -> None:
    """Sample the report's process tree every 50 ms: the largest process's RSS and the sum over the tree."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            peak["sum"] = max(peak.get("sum", 0), sum(rss))
            peak["max"] = max(peak.get("max", 0), max(rss, default=0))
            peak["procs"] = max(peak.get("procs", 0), len(rss))
        except psutil.Error:
            return
        stop.wait(0.05)


def ensure_records(run_dir: Path, n: int) -> tuple[int, float, bool]:
    """(size, generation seconds, reused): write the records unless a kept file of this size and version exists."""
    path, meta = run_dir / "records.jsonl", run_dir / "records.meta.json"
    want = {"records": n, "generator": GENERATOR}
    if path.exists() and meta.exists():
        try:
            if json.loads(meta.read_text()) == want:
                return path.stat().st_size, 0.0, True
        except ValueError:
            pass
    meta.unlink(missing_ok=True)
    t = time.perf_counter()
    size = write_records(path, n)
    meta.write_text(json.dumps(want))
    return size, time.perf_counter() - t, False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--out", default=None,
                    help="work dir; its records are kept and reused by the next run with the same --records "
                         "(default: a temp dir, removed after)")
    ap.add_argument("--json", default="benchmarks/results/analysis_scale.json")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (printed)")
    ap.add_argument("--generate-only", action="store_true", help="write (or reuse) the records and stop")
    a = ap.parse_args()
    if a.records < 1:
        print("--records must be at least 1", file=sys.stderr)
        return 2
    tmp = tempfile.TemporaryDirectory(prefix="analysis-scale-") if a.out is None else None
    work = Path(a.out or tmp.name)  # type: ignore[union-attr]
    run_dir = work / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    size, gen_s, reused = ensure_records(run_dir, a.records)
    print(f"{'reused' if reused else 'wrote'} {a.records:,} records ({size / 1e6:,.0f} MB)"
          + ("" if reused else f" in {gen_s:.1f} s") + f" under {run_dir}")
    if a.generate_only:
        return 0
    load_before = os.getloadavg()
    psi_before = _cpu_pressure()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "harness", "report", str(run_dir), "--out", str(work / "report")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop, peak = threading.Event(), {}
    watcher = threading.Thread(target=_watch_rss, args=(proc.pid, stop, peak), daemon=True)
    watcher.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    stop.set()
    watcher.join()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (ru.ru_utime - ru0.ru_utime) + (ru.ru_stime - ru0.ru_stime)
    if proc.returncode != 0:
        print(out, err, file=sys.stderr)
        return 1
    summary = json.loads((work / "report" / "summary.json").read_text())
    peak_sum_mb = peak.get("sum", 0) / 2**20
    res = {
        "records": a.records, "jsonl_mb": round(size / 1e6, 1), "generate_s": None if reused else round(gen_s, 1),
        "report_s": round(wall, 2), "cpu_s": round(cpu_s, 1), "mb_per_cpu_s": round(size / 1e6 / cpu_s, 1),
        "peak_rss_largest_mb": round(ru.ru_maxrss / 1024, 1), "peak_rss_sum_mb": round(peak_sum_mb, 1),
        "processes": peak.get("procs"), "target_s": TARGET_S, "target_rss_mb": TARGET_RSS_MB,
        "ratio_to_target": round(wall / TARGET_S, 3), "mean_output_tokens": (OUT_MIN + OUT_MAX) / 2,
        "requests_in_summary": summary.get("requests"), "percentiles": summary.get("percentiles"),
        "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "cpu_pressure_before": psi_before,
        "cpu_pressure_after": _cpu_pressure(), "python": sys.version.split()[0],
    }
    print(f"report: {wall:.1f} s wall (target {TARGET_S:.0f} s, ratio {wall / TARGET_S:.2f}), "
          f"{cpu_s:.1f} s CPU on {os.cpu_count()} cores ({res['mb_per_cpu_s']:.0f} MB of JSONL per CPU second); "
          f"peak RSS largest process {res['peak_rss_largest_mb']:,.0f} MB, sum over "
          f"{res['processes']} processes {peak_sum_mb:,.0f} MB (target {TARGET_RSS_MB:,.0f} MB)")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, after "
          f"{res['loadavg_after'][0]:.2f}; CPU pressure before: {psi_before}; after: {res['cpu_pressure_after']}")
    print(f"percentile methods: {summary.get('percentiles')}")
    out_json = Path(a.json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(res, indent=2))
    print(f"wrote {out_json}")
    if tmp is not None:
        if a.keep:
            print(f"kept {work}")
        else:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
