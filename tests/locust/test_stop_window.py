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
from gevent import socket
from gevent.monkey import get_original
from gevent.pool import Group
from harness.locust.lifecycle import cut_streams

log = []
pairs = [socket.socketpair() for _ in range(32)]

def stream(i, sock):
    try:
        while True:
            sock.recv(64)  # a stream reading its next token
            log.append(("ran", i))
    except gevent.GreenletExit:
        log.append(("killed", i))
        raise

group = Group()
for i, (a, _) in enumerate(pairs):
    group.spawn(stream, i, a)

def server():
    gevent.sleep(0.04)
    for _, b in pairs:
        b.send(b"x")  # every stream has a token to read...
    get_original("time", "sleep")(0.03)  # ...while the process is busy (blocking): the stop timer expires in the same loop pass

asked, same = [], []

def stop():
    log.append(("stop", -1))
    me = gevent.getcurrent()
    asked.append(cut_streams(SimpleNamespace(user_greenlets=group)))
    same.append(gevent.getcurrent() is me)
    gevent.sleep(0)

gevent.spawn(server)
stopper = gevent.spawn_later(0.05, stop)
stopper.join(timeout=10)
group.join(timeout=10)
k = log.index(("stop", -1))
print(json.dumps({"asked": asked, "same": same, "left": len(group), "after_stop": [kind for kind, _ in log[k + 1:]]}))
"""


def test_cut_streams_kills_every_stream_before_any_reads_again() -> None:
    """Sockets readable in the loop pass where the stop fires: no stream reads after the stop began, every
    stream is killed, the caller is spared. (Outside a Locust process a plain ``gevent.killall(block=False)``
    lets all 32 read first; benchmarks/stop_stall.py measures the difference in a real run.)"""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["asked"] == [32] and r["same"] == [True] and r["left"] == 0, r
    assert r["after_stop"] == ["killed"] * 32, r


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
