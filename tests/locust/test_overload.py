"""Users above the server's concurrency cap: the overload rate matches the server's own counter."""

from __future__ import annotations

from locust_helpers import SCENARIOS, headless, server_metrics, start_locust


def test_overload_rate_matches_server_counter_and_fail_on(sim, tmp_path):
    server = sim(2)
    run = start_locust(tmp_path, "over", [*headless(server.url, 5, "3s", "--output-tokens", "fixed:8",
                                                    "--scrape-metrics", "--fail-on", "ttft_p50_ms>10000")],
                       SCENARIOS / "chat_stream.py")
    assert run.wait() == 0, run.log()[-3000:]  # expected overloads alone do not fail the run
    rows = run.records()
    overloaded = sum(r["outcome"] == "overloaded" for r in rows)
    assert overloaded > 0
    assert {r["outcome"] for r in rows} <= {"ok", "overloaded"}
    metrics = server_metrics(server.url)
    assert overloaded == metrics['tgi_request_failure{err="overloaded"}']
    assert len(rows) == metrics["tgi_request_count"]
    meta = run.run_meta()
    assert meta["fail_on"][0]["triggered"] is False
    assert (run.run_dir / "server_metrics.jsonl").stat().st_size > 0
    # the failure key in Locust's stats is stable
    assert run.entry("E2E")["num_failures"] == overloaded

    # the same load with a rule that holds -> exit code 3
    run2 = start_locust(tmp_path, "over2", [*headless(server.url, 5, "2s", "--output-tokens", "fixed:8",
                                                     "--fail-on", "overload_rate>0.05")],
                        SCENARIOS / "chat_stream.py")
    assert run2.wait() == 3, run2.log()[-3000:]
    assert run2.run_meta()["fail_on"][0]["triggered"] is True
