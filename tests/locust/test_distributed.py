"""--processes 2 and master + 1 worker: one merged records file, nothing missing at the end."""

from __future__ import annotations

from locust_helpers import SCENARIOS, free_port, headless, server_metrics, start_locust


def _check(run, expected_workers: int) -> None:
    rows = run.records()
    assert len(rows) == run.entry("E2E")["num_requests"] > 0
    assert len({r["request_id"] for r in rows}) == len(rows)
    assert len({r["worker"] for r in rows}) == expected_workers
    assert len({r["run_id"] for r in rows}) == 1
    # streams outlive the stop (1.5 s each): the final batches arrive after Locust's 0.5 s wait
    assert {r["outcome"] for r in rows} == {"ok"}
    assert run.run_meta()["complete"] is True


def test_processes_and_master_worker_merge_everything(sim, tmp_path):
    s1, s2 = sim(64), sim(64)
    args = ("--output-tokens", "fixed:100")
    procs = start_locust(tmp_path, "procs", [*headless(s1.url, 4, "3s", *args), "--processes", "2"],
                         SCENARIOS / "chat_stream.py")
    port = free_port()
    master = start_locust(tmp_path, "master", [*headless(s2.url, 3, "3s", *args), "--master",
                                               "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                                               "--expect-workers", "1"], SCENARIOS / "chat_stream.py")
    worker = start_locust(tmp_path, "worker", ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                          SCENARIOS / "chat_stream.py")
    assert procs.wait(90) == 0, procs.log()[-3000:]
    assert master.wait(90) == 0, master.log()[-3000:]
    worker.wait(30)
    _check(procs, 2)
    _check(master, 1)
    assert len(procs.records()) == server_metrics(s1.url)["tgi_request_count"]
    assert len(master.records()) == server_metrics(s2.url)["tgi_request_count"]
