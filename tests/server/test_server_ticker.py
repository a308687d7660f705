"""The simulated backend's Ticker: callbacks and waiters run in due order, never more than EARLY_S
before their due time, on the timerfd where Linux has one and on loop timers otherwise."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from harness.server.backends import simulated
from harness.server.backends.simulated import EARLY_S, Ticker


async def _run(ticker_kind: str) -> list[tuple[float, float, int]]:
    loop = asyncio.get_running_loop()
    ticker = Ticker(loop)
    if ticker_kind == "loop timers" and ticker._tfd is not None:
        ticker._tfd.close()
        ticker._tfd = None
    assert (ticker._tfd is not None) == (ticker_kind == "timerfd")
    start = time.monotonic() + 0.01
    ran: list[tuple[float, float, int]] = []
    done = loop.create_future()
    n = 60

    def make(i: int, due: float):
        def cb() -> None:
            ran.append((due, time.monotonic(), i))
            if len(ran) == n:
                done.set_result(None)
        return cb

    for i in range(n // 2):  # callbacks, registered out of due order
        due = start + ((i * 7) % (n // 2)) * 0.0013
        ticker.call_at(due, make(i, due))
    waits = []
    for i in range(n // 2, n):
        due = start + (i - n // 2) * 0.0011 + 0.0004
        waits.append((due, i, ticker.wait_until(due)))
    for due, i, fut in waits:
        fut.add_done_callback(lambda _f, due=due, i=i: make(i, due)())
    await asyncio.wait_for(done, 10)
    ticker.close()
    return ran


@pytest.mark.parametrize("kind", ["timerfd", "loop timers"])
def test_ticker_never_early_and_in_due_order(kind: str) -> None:
    if kind == "timerfd" and not sys.platform.startswith("linux"):
        pytest.skip("timerfd is Linux")
    ran = asyncio.run(_run(kind))
    assert all(t >= due - EARLY_S for due, t, _ in ran)
    callbacks = [due for due, _, i in ran if i < 30]
    assert callbacks == sorted(callbacks)  # one firing runs what is due in due order


def test_timerfd_missing_falls_back(monkeypatch) -> None:
    async def make() -> bool:
        monkeypatch.setattr(simulated._TimerFd, "_libc", None)
        monkeypatch.setattr(simulated.ctypes, "CDLL", lambda *a, **k: object())  # no timerfd_create
        t = Ticker(asyncio.get_running_loop())
        fut = t.wait_until(time.monotonic() + 0.002)
        await asyncio.wait_for(fut, 5)
        t.close()
        return t._tfd is None

    assert asyncio.run(make())
