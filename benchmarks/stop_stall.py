"""Stop stall: are token events stamped late because the run is stopping (Locust's ``-t`` limit)?

Runs the calibration level (simulated server with ``--trace-file``, one Locust process, closed
loop, ``--stop-timeout 0``) ``--runs`` times and splits every joined token by when the client stamped
it: before or after the stop began (``test_stopping``, stamped by benchmarks/locustfiles/stop_marker.py).
Per side: tokens, tokens more than ``--late-ms`` late (client stamp - server write stamp,
harness.calibration.join's delay), the largest delay; and after the stop: requests that ended ok
after the stop began (they count in a report's latency metrics).

    .venv/bin/python benchmarks/stop_stall.py [--streams 256] [--tokens-per-s 10000] [--duration 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import benchlib

from harness.calibration.join import read_trace
from harness.calibration.levels import Level, run_level
from harness.records import iter_records

LOCUSTFILE = Path(__file__).with_name("locustfiles") / "stop_marker.py"


def split_late(records: list, trace: dict, stop_ns: int, late_ms: float, t_from_ns: int) -> dict:
    """Token counts before/after ``stop_ns`` (by client stamp) and how many were > ``late_ms`` late.

    delay = (client token_ns[i] - server t_ns[i+1]) / 1e6 ms; tokens the server wrote before
    ``t_from_ns`` (warm-up) are skipped.
    """
    out = {"before": {"tokens": 0, "late": 0, "max_ms": 0.0}, "after": {"tokens": 0, "late": 0, "max_ms": 0.0}}
    ok_after = 0
    for rec in records:
        server = trace.get(rec.request_id) or {}
        if rec.ok and rec.end_ns is not None and rec.end_ns > stop_ns:
            ok_after += 1
        for i, t in enumerate(rec.token_ns):
            ts = server.get(i + 1)
            if ts is None or ts < t_from_ns:
                continue
            side = out["after" if t > stop_ns else "before"]
            d = (t - ts) / 1e6
            side["tokens"] += 1
            side["late"] += d > late_ms
            side["max_ms"] = round(max(side["max_ms"], d), 3)
    out["ok_requests_ending_after_stop"] = ok_after
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=256)
    ap.add_argument("--tokens-per-s", type=float, default=10_000)
    ap.add_argument("--duration", type=float, default=8.0, help="Locust -t per run, s (default 8)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--late-ms", type=float, default=10.0)
    ap.add_argument("--out", default=None, help="JSON dir (default reports/bench)")
    a = ap.parse_args()
    if a.runs < 1 or a.streams < 1 or a.duration < 2:
        ap.error("--runs and --streams must be >= 1 and --duration >= 2")
    level = Level(a.streams, a.tokens_per_s)
    st = benchlib.stamp()
    runs = []
    with tempfile.TemporaryDirectory(prefix="stop-stall-") as tmp:
        for k in range(a.runs):
            d = Path(tmp) / f"run{k}"
            d.mkdir()
            marker = d / "stop_ns"
            fig = run_level(level, d, a.duration, a.warmup, locustfile=LOCUSTFILE,
                            env={"STOP_MARKER_FILE": str(marker)})
            if not marker.exists():
                raise SystemExit(f"stop_stall: run {k}: no stop marker (see {d / 'locust.log'})")
            records = list(iter_records(Path(fig["run_dir"]) / "records.jsonl"))
            t_from = min(r.send_ns for r in records if r.send_ns is not None) + int(a.warmup * 1e9)
            r = split_late(records, read_trace(d / "trace.jsonl"), int(marker.read_text()), a.late_ms, t_from)
            r["load_avg_1m"] = os.getloadavg()[0]
            runs.append(r)
            print(f"  run {k}: before the stop {r['before']['late']} of {r['before']['tokens']} tokens > "
                  f"{a.late_ms:g} ms late (max {r['before']['max_ms']:.1f} ms); after: {r['after']['late']} of "
                  f"{r['after']['tokens']} (max {r['after']['max_ms']:.1f} ms); ok requests ending after the stop "
                  f"{r['ok_requests_ending_after_stop']}; load {r['load_avg_1m']:.1f}")
    doc = {"benchmark": "stop_stall", **st, "level": level.label, "duration_s": a.duration, "late_ms": a.late_ms,
           "runs": runs}
    print(f"wrote {benchlib.write('stop_stall', doc, a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
