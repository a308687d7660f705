"""Analysis at scale: `harness report` on 1M synthetic request records (target: <= 30 s).

Writes a synthetic run (closed loop, 256 streams, token counts uniform in [OUT_MIN, OUT_MAX], 3 %
overloaded, 0.5 % timeouts) as records.jsonl, then times the full report (read + per-request metrics
+ summary + plots + report.html) in a fresh process and reports its wall and CPU seconds and peak RSS
(of the largest process: the report process or one of its reader processes). The reader uses one
process per core, so wall time scales with idle cores; CPU seconds show the work itself.

    python benchmarks/analysis_scale.py [--records 1000000] [--out DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT_MIN, OUT_MAX = 8, 56
TARGET_S = 30.0


def write_records(path: Path, n: int, seed: int = 0, users: int = 256) -> int:
    """Write ``n`` synthetic records; returns the file size in bytes."""
    rng = np.random.default_rng(seed)
    t0 = 10**15
    chunk = 20_000
    user_clock = np.full(users, t0, dtype=np.int64) + rng.integers(0, 10**9, users)
    with open(path, "w", encoding="utf-8") as fh:
        for c0 in range(0, n, chunk):
            k = min(chunk, n - c0)
            u = rng.integers(0, users, k)
            outcome_draw = rng.random(k)
            n_out = rng.integers(OUT_MIN, OUT_MAX + 1, k)
            ttft = rng.lognormal(np.log(80e6), 0.4, k).astype(np.int64)
            lines = []
            for j in range(k):
                user = int(u[j])
                send = int(user_clock[user])
                i = c0 + j
                d = outcome_draw[j]
                if d < 0.03:
                    end = send + 2_000_000
                    user_clock[user] = end + 1000
                    lines.append(
                        f'{{"run_id":"bench","scenario":"scale","worker":"w0","user":"{user}","request_id":"{i}",'
                        f'"protocol":"tgi","target":"http://127.0.0.1:3000/generate_stream","intended_ns":{send},'
                        f'"send_ns":{send},"attempt_send_ns":{send},"headers_ns":{end},"token_ns":[],'
                        f'"tokens_per_event":[],"end_ns":{end},"http_status":429,"outcome":"overloaded",'
                        f'"error_text":"Model is overloaded","output_tokens_events":0}}')
                    continue
                m = int(n_out[j])
                gaps = rng.gamma(4.0, 5e6, m - 1).astype(np.int64)
                first = send + int(ttft[j])
                toks = np.concatenate(([first], first + np.cumsum(gaps))).tolist()
                timeout = d < 0.035
                end = toks[-1] + 200_000
                user_clock[user] = end + 1000
                outcome = "timeout" if timeout else "ok"
                tok = ",".join(map(str, toks))
                ones = ",".join(["1"] * m)
                lines.append(
                    f'{{"run_id":"bench","scenario":"scale","worker":"w0","user":"{user}","request_id":"{i}",'
                    f'"protocol":"tgi","target":"http://127.0.0.1:3000/generate_stream","intended_ns":{send},'
                    f'"send_ns":{send},"attempt_send_ns":{send},"headers_ns":{send + 900_000},"token_ns":[{tok}],'
                    f'"tokens_per_event":[{ones}],"end_ns":{end},"http_status":200,"outcome":"{outcome}",'
                    f'"finish_reason":"length","input_tokens_server":128,"output_tokens_server":{m},'
                    f'"output_tokens_events":{m}}}')
            fh.write("\n".join(lines) + "\n")
    return path.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--out", default=None, help="work dir (default: a temp dir, removed after)")
    ap.add_argument("--json", default="benchmarks/results/analysis_scale.json")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="analysis-scale-") if a.out is None else None
    work = Path(a.out or tmp.name)  # type: ignore[union-attr]
    run_dir = work / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    size = write_records(run_dir / "records.jsonl", a.records)
    gen_s = time.perf_counter() - t
    print(f"wrote {a.records:,} records ({size / 1e6:,.0f} MB) in {gen_s:.1f} s")
    load_before = os.getloadavg()[0]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "report", str(run_dir), "--out", str(work / "report")],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = ru.ru_maxrss
    cpu_s = (ru.ru_utime - ru0.ru_utime) + (ru.ru_stime - ru0.ru_stime)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        return 1
    summary = json.loads((work / "report" / "summary.json").read_text())
    res = {
        "records": a.records, "jsonl_mb": round(size / 1e6, 1), "report_s": round(wall, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1), "target_s": TARGET_S, "ratio_to_target": round(wall / TARGET_S, 3),
        "mean_output_tokens": (OUT_MIN + OUT_MAX) / 2, "requests_in_summary": summary.get("requests"),
        "cpu_s": round(cpu_s, 1), "cpus": os.cpu_count(), "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2), "python": sys.version.split()[0],
    }
    print(f"report: {wall:.1f} s wall (target {TARGET_S:.0f} s, ratio {wall / TARGET_S:.2f}), "
          f"{cpu_s:.1f} s CPU on {os.cpu_count()} cores (load average {load_before:.1f} before), "
          f"peak RSS {res['peak_rss_mb']:,.0f} MB")
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    if tmp is not None and not a.keep:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
