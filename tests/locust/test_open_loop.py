"""Open loop: the target rate is achieved with lag recorded; a saturated client records drops."""

from __future__ import annotations

from locust_helpers import SCENARIOS, headless, start_locust


def test_open_loop_rate_lag_and_drops(sim, tmp_path):
    server = sim(256)
    lf = SCENARIOS / "open_loop.py"
    rate = start_locust(tmp_path, "rate", [*headless(server.url, 1, "5s", "--output-tokens", "fixed:4",
                                                     "--arrival", "constant", "--rate", "40")], lf)
    drops = start_locust(tmp_path, "drops", [*headless(server.url, 1, "3s", "--output-tokens", "fixed:40",
                                                       "--rate", "30", "--max-inflight", "2")], lf)
    assert rate.wait() == 0, rate.log()[-3000:]
    assert drops.wait() == 0, drops.log()[-3000:]

    rows = rate.records()
    sent = sorted(r["send_ns"] for r in rows if r["send_ns"] is not None)
    achieved = (len(sent) - 1) / ((sent[-1] - sent[0]) / 1e9)
    assert abs(achieved - 40.0) <= 0.05 * 40.0, achieved
    assert all(r["intended_ns"] is not None and r["send_ns"] >= r["intended_ns"] for r in rows if r["send_ns"])
    # every request came from the constant schedule (25 ms grid), none from a closed-loop task
    first = min(r["intended_ns"] for r in rows)
    assert all((r["intended_ns"] - first) % 25_000_000 in (0, 1) or (r["intended_ns"] - first) % 25_000_000
               == 24_999_999 for r in rows), sorted((r["intended_ns"] - first) / 1e6 for r in rows)[:8]
    assert {r["outcome"] for r in rows} <= {"ok", "cancelled"}
    assert rate.entry("E2E")["num_requests"] == len(rows)

    drows = drops.records()
    dropped = [r for r in drows if r["outcome"] == "dropped"]
    assert dropped and all(r["send_ns"] is None and r["intended_ns"] for r in dropped)
    meta = drops.run_meta()
    assert meta["client_bound"] is True and any("dropped" in x for x in meta["client_bound_reasons"])
