"""Clock sync on loopback (no root needed), with workers whose clock is skewed by the test-only
``HARNESS_TEST_CLOCK_SKEW_S``: the merged run is on the master's clock within the reported uncertainty;
the reports (console, summary.md, `harness report`'s report.html) show offset, uncertainty and the
warning past ``--clock-warn-ms``; open-loop workers split one schedule with one time zero. The
four-host version is test_multihost_netns.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from itertools import islice

from locust_helpers import SCENARIOS, free_port, headless, start_locust

from harness.workload import arrival_times

SKEW_ENV = "HARNESS_TEST_CLOCK_SKEW_S"  # harness.locust.clock_sync.SKEW_ENV (importing it would load Locust here)
SKEW_S = 2.5


def test_skewed_worker_is_mapped_onto_the_master_clock_and_reported(sim, tmp_path):
    server = sim(64)
    port = free_port()
    # a threshold of 0.1 ns: every measured uncertainty (>= 1 ns) exceeds it, so the warning must show
    master = start_locust(tmp_path, "master", [*headless(server.url, 2, "3s", "--output-tokens", "fixed:8"),
                                               "--master", "--master-bind-host", "127.0.0.1",
                                               "--master-bind-port", str(port), "--expect-workers", "1",
                                               "--clock-warn-ms", "1e-7"], SCENARIOS / "chat_stream.py")
    worker = start_locust(tmp_path, "worker", ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                          SCENARIOS / "chat_stream.py", env={SKEW_ENV: str(SKEW_S)})
    assert master.wait(90) == 0, master.log()[-3000:]
    worker.wait(30)
    end_ns = time.monotonic_ns()
    assert f"test clock skew of +{SKEW_S:.3f} s" in worker.log()

    meta = master.run_meta()
    clock = meta["clock_sync"]
    (node, w), = clock["workers"].items()
    u = w["uncertainty_ns"]
    assert w["aligned"] and not w["exact"] and w["records"] == len(master.records()) > 0
    assert abs(w["offset_ns"] - (-SKEW_S * 1e9)) <= u, w
    assert clock["max_uncertainty_ns"] == u and any("exceeds" in x for x in clock["warnings"])
    for r in master.records():  # on the master's (= this test's) clock, not 2.5 s ahead of it
        assert meta["mono_anchor_ns"] - u <= r["send_ns"] <= r["end_ns"] <= end_ns + u

    # the reports show the offset and its uncertainty, and warn past the threshold
    offset_s = f"{w['offset_ns'] / 1e9:+.6f}"
    assert f"{node} offset {offset_s} s +- {u / 1e6:.3f} ms" in master.log() and "WARNING clocks" in master.log()
    md = (master.run_dir / "summary.md").read_text()
    assert "Clock alignment" in md and offset_s in md and "**Warning:" in md
    out = subprocess.run([sys.executable, "-m", "harness", "report", str(master.run_dir), "--out",
                          str(tmp_path / "report")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Clock alignment" in html and offset_s in html and "Clock warning" in html
    assert "Clock alignment" in (tmp_path / "report" / "summary.md").read_text()


def test_open_loop_workers_share_one_schedule_zero(sim, tmp_path):
    """Two workers (one skewed) split one Poisson schedule: on the merged timeline each worker's
    arrivals are its share of the global schedule, counted from the master's one schedule zero."""
    server = sim(64)
    port = free_port()
    rate, seed = 20.0, 7
    master = start_locust(tmp_path, "master", [*headless(server.url, 2, "3s", "--output-tokens", "fixed:4",
                                                         "--rate", str(rate), "--seed", str(seed)),
                                               "--master", "--master-bind-host", "127.0.0.1",
                                               "--master-bind-port", str(port), "--expect-workers", "2"],
                          SCENARIOS / "open_loop.py")
    workers = [start_locust(tmp_path, f"worker{i}", ["--worker", "--master-host", "127.0.0.1",
                                                      "--master-port", str(port)], SCENARIOS / "open_loop.py",
                            env={SKEW_ENV: "-1.5"} if i else None) for i in range(2)]
    assert master.wait(90) == 0, master.log()[-3000:]
    for w in workers:
        w.wait(30)

    clock = master.run_meta()["clock_sync"]
    zero = clock["schedule_start_ns"]
    offsets_ns = [int(o * 1e9) for o in islice(arrival_times("poisson", rate, seed=seed), 400)]
    rows = master.records()
    assert rows and {r["worker"] for r in rows} == set(clock["workers"]) and len(clock["workers"]) == 2
    shares = set()
    for node, c in clock["workers"].items():
        # error bound: the schedule start's estimate and the records' estimates, each within its uncertainty
        tol = (c["schedule_uncertainty_ns"] or 0) + (c["uncertainty_ns"] or 0)
        rel = sorted(r["intended_ns"] - zero for r in rows if r["worker"] == node)
        fits = [k for k in range(2) if all(abs(t - offsets_ns[k + 2 * j]) <= tol for j, t in enumerate(rel))]
        assert len(fits) == 1, (node, c, rel[:5], offsets_ns[:10])
        shares.add(fits[0])
    assert shares == {0, 1}
    exact = [c for c in clock["workers"].values() if c["exact"]]
    assert len(exact) == 1 and exact[0]["schedule_uncertainty_ns"] == 0  # the unskewed worker: same clock
