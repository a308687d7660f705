"""`harness sweep --search users` against a dense grid of 1..N users on the simulated server.

The simulated server's ITL grows with the streams it runs (``--sim-batch-slowdown``: gap =
``itl_ms * (1 + slowdown * (running - 1))``), so an ITL p99 SLO holds up to some number of users.
Both the grid (``--users 1,2,...,N``) and the search (``--search users --search-max N``) run with the
same server, workload, durations and SLO, one after the other, each as a real ``harness sweep``
process; the script prints both boundaries, their wall times and the ratio, and writes ``result.json``
into ``--out``. Exit status 1 when the boundaries differ by more than one probe step (1 user) or the
search took more than half the grid's wall time.

Defaults: cap 24, N = 24, ITL 20 ms, slowdown 1 (ITL = 20 ms x users), SLO ``itl_p90=310`` (the
expected boundary is 15 users: 300 ms; 16 users: 320 ms; a p90, not a p99, so that a few late gaps on
a busy machine do not decide it), 8-token prompts and outputs, 7 s measured after 1 s of warm-up per
point.

    python benchmarks/search_vs_grid.py --out /tmp/search-vs-grid
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _n(x: float | None) -> str:
    return "none" if x is None else f"{x:g}"


def _run(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    return time.monotonic() - t0, r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cap", type=int, default=24, help="server cap (default 24)")
    p.add_argument("--max-users", type=int, default=24, help="N: the grid's 1..N and the search's maximum (default 24)")
    p.add_argument("--itl-ms", type=float, default=20.0, help="simulated ITL, ms (default 20)")
    p.add_argument("--slowdown", type=float, default=1.0, help="--sim-batch-slowdown (default 1)")
    p.add_argument("--slo", default="itl_p90=310", help="SLO (default itl_p90=310)")
    p.add_argument("--duration", type=float, default=7.0, help="measured seconds per point (default 7)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per point (default 1)")
    p.add_argument("--tokens", type=int, default=8, help="prompt and output tokens (default 8)")
    p.add_argument("--out", default=None, help="output directory (default: a new temporary directory)")
    a = p.parse_args(argv)
    if a.max_users < 2 or a.cap < 1:
        print("search_vs_grid: --max-users must be >= 2 and --cap >= 1", file=sys.stderr)
        return 2
    out = Path(a.out or tempfile.mkdtemp(prefix="search-vs-grid-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = [sys.executable, "-m", "harness", "sweep", "--caps", str(a.cap), "--model", "simulated",
              "--server-args", f"--sim-ttft-ms 10 --sim-itl-ms {a.itl_ms:g} --sim-batch-slowdown {a.slowdown:g}",
              "--input-tokens", f"fixed:{a.tokens}", "--output-tokens", f"fixed:{a.tokens}", "--slo", a.slo,
              "--duration", f"{a.duration:g}", "--warmup", f"{a.warmup:g}", "--no-point-reports", "--restart"]
    load_before = _load()
    grid_s, grid = _run([*common, "--users", ",".join(str(u) for u in range(1, a.max_users + 1)),
                         "--out", str(out / "grid")], out)
    if grid.returncode != 0:
        print(f"grid failed ({grid.returncode}): {grid.stderr.strip()[-500:]}", file=sys.stderr)
        return 1
    load_mid = _load()
    search_s, search = _run([*common, "--search", "users", "--search-max", str(a.max_users),
                             "--out", str(out / "search")], out)
    if search.returncode != 0:
        print(f"search failed ({search.returncode}): {search.stderr.strip()[-500:]}", file=sys.stderr)
        return 1
    load_after = _load()
    cap_grid = json.loads((out / "grid" / "sweep.json").read_text())["capacity"][0]
    found = json.loads((out / "search" / "search.json").read_text())["caps"][0]
    g, s = cap_grid["max_load"], found["boundary"]
    agree = g is not None and s is not None and abs(g - s) <= 1
    ratio = search_s / grid_s
    result = {"grid": {"boundary": g, "wall_s": round(grid_s, 1), "points": a.max_users, "limit": cap_grid["limiting"]},
              "search": {"boundary": s, "interval": found["interval"], "wall_s": round(search_s, 1),
                         "probes": [[p["load"], p["verdict"], p["repeated"]] for p in found["probes"]],
                         "cliffs": [c["text"] for c in found["cliffs"]], "limit": found["limiting"]},
              "ratio": round(ratio, 3), "agree_within_one_step": agree,
              "loadavg": {"before": load_before, "between": load_mid, "after": load_after},
              "cpus": os.cpu_count(), "settings": vars(a)}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"grid   1..{a.max_users} users: boundary {_n(g)} users in {grid_s:.0f} s ({a.max_users} points); {cap_grid['limiting']}")
    probes = ", ".join(f"{p['load']:g}{'*' if p['repeated'] else ''}:{p['verdict']}" for p in found["probes"])
    print(f"search: boundary {_n(s)} users, limit in {found['interval']}, in {search_s:.0f} s "
          f"({len(found['probes'])} probes: {probes}; * = repeated)")
    for c in found["cliffs"]:
        print(f"search: {c['text']}")
    print(f"search / grid wall time: {ratio:.0%}; boundaries {'agree' if agree else 'DIFFER'} within one user; "
          f"load average (1/5/15 min) before {load_before}, between {load_mid}, after {load_after} on {os.cpu_count()} CPUs")
    print(f"result: {out / 'result.json'}")
    return 0 if agree and ratio <= 0.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
