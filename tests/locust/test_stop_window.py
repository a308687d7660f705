"""The stop at the run time limit spoils no timing: with ``--stop-timeout 0`` every stream in flight is
cut in one event-loop callback when the stop begins (harness.locust.lifecycle), before Locust's own stop
work; no request ending after ``stopping_ns`` (run.json) counts as ok.
Ordering and logic only (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from locust_helpers import SCENARIOS, start_locust

# In a subprocess: importing Locust monkey-patches the process with gevent.
PROBE = """
import json
from types import SimpleNamespace
import gevent
from gevent.pool import Group
from harness.locust.lifecycle import cut_streams

log = []

def stream(i):
    try:
        while True:
            gevent.sleep(0)  # a stream reading its next token
            log.append(("ran", i))
    except gevent.GreenletExit:
        log.append(("killed", i))
        raise

group = Group()
for i in range(32):
    group.spawn(stream, i)
gevent.sleep(0.01)
ran_before = sorted({i for kind, i in log if kind == "ran"})
me = gevent.getcurrent()
asked = cut_streams(SimpleNamespace(user_greenlets=group))
same = gevent.getcurrent() is me
group.join(timeout=5)
first = next(k for k, (kind, _) in enumerate(log) if kind == "killed")
print(json.dumps({"ran_before": ran_before, "asked": asked, "same": same, "left": len(group),
                  "after_first_kill": [kind for kind, _ in log[first:]]}))
"""


def test_cut_streams_kills_every_stream_before_any_runs_again() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["ran_before"] == list(range(32)) and r["asked"] == 32 and r["same"] and r["left"] == 0
    assert r["after_first_kill"] == ["killed"] * 32, r  # no stream ran between two kills


WARM_PROBE = """
import inspect, json, linecache, sys
import locust.main, locust.runners
from harness.locust.lifecycle import warm_stop_path

warm_stop_path()
print(json.dumps({"lines": [m.__file__ in linecache.cache for m in (locust.runners, locust.main)],
                  "unmapped": [n for n, m in sys.modules.copy().items()
                               if getattr(m, "__file__", None) and n not in inspect._filesbymodname]}))
"""


def test_stop_path_caches_are_warm_after_test_start() -> None:
    """What Locust's Runner.stop reads through inspect.stack() (module map, source lines) is cached."""
    out = subprocess.run([sys.executable, "-c", WARM_PROBE], capture_output=True, text=True, timeout=60, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r == {"lines": [True, True], "unmapped": []}, r


def test_forced_stop_at_time_limit_stamps_no_token_after_the_stop(sim, tmp_path: Path) -> None:
    server = sim(64, "--sim-output-tokens", "0")  # a stream lasts 40 ms + 100 x 15 ms: some end, some are cut
    run = start_locust(tmp_path, "stop", ["--host", server.url, "--headless", "-u", "6", "-r", "6", "-t", "3s",
                                          "--stop-timeout", "0", "--only-summary", "--output-tokens", "fixed:100"],
                       locustfile=SCENARIOS / "chat_stream.py")
    rc = run.wait(90)
    meta, records = run.run_meta(), run.records()
    assert rc == 0 and meta["complete"] is True, run.log()[-3000:]
    stop_ns = meta["stopping_ns"]
    ok = [r for r in records if r["outcome"] == "ok"]
    cut = [r for r in records if r["end_ns"] is not None and r["end_ns"] > stop_ns]
    assert ok and cut, records  # requests both ended before the stop and were in flight at it
    assert all(r["outcome"] == "cancelled" for r in cut)
    assert all(r["end_ns"] <= stop_ns for r in ok)
    # tokens read in the loop pass before the kill ran may be stamped after the stop: cancelled requests only
    assert all(r["outcome"] == "cancelled" for r in records if any(t > stop_ns for t in r["token_ns"]))
    assert any(r["token_ns"] for r in cut)  # the cut streams keep the tokens they read before the stop
