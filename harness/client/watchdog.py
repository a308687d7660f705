"""Read timeouts without a timer per socket read: one watchdog per process checks every connection.

A socket timeout costs a timer armed and cancelled around every blocking read (under gevent a
``Timeout`` object and a libev timer per read, i.e. per token event). Instead, a connection's
socket is blocking without a timeout and its reads go through :class:`GuardedSocketIO`, which only
notes when the current read started (``waiting_since``, monotonic ns; 0 when no read waits). One
watchdog (a daemon thread: a greenlet under gevent's monkey-patching) sleeps until the earliest
possible expiry over all registered :class:`Guard` objects,

    expiry = waiting_since + timeout   for a guard whose read is waiting,
    expiry = now + timeout             otherwise (no later read can expire earlier),

re-scans, and for a read that waited ``timeout`` marks its guard expired and shuts the socket down
(this wakes the blocked reader or sender), which then raises :class:`TimeoutError`, exactly as a
socket timeout would. Semantics: each socket read (or send) may wait at most ``timeout`` seconds;
precision is the watchdog's wake-up (well under 1 ms on an idle machine). A guard's timeout may
change at any time (:meth:`Guard.set_timeout`); a shorter one wakes the watchdog.
"""

from __future__ import annotations

import os
import socket
import threading
import time

NEVER = 1 << 62
_clock = time.monotonic_ns


class Guard:
    """Timeout state of one socket: ``timeout_ns`` per read, ``waiting_since`` (0 = no read waits)."""

    __slots__ = ("sock", "timeout_ns", "waiting_since", "expired", "__weakref__")

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        self.sock = sock
        self.timeout_ns = int(timeout_s * 1e9)
        self.waiting_since = 0
        self.expired = False

    def set_timeout(self, seconds: float) -> None:
        """Change the per-read timeout; a shorter one wakes the watchdog so that it is honoured."""
        ns = int(seconds * 1e9)
        if ns != self.timeout_ns:
            shorter = ns < self.timeout_ns
            self.timeout_ns = ns
            if shorter:
                watchdog().poke(self)

    def fire(self) -> None:
        """The current read waited too long: mark it and wake the reader (shutdown -> EOF/EPIPE)."""
        self.expired = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed
            pass


def _cooperative_parts(sock: socket.socket) -> tuple | None:
    """``(raw non-blocking socket, wait, read watcher)`` of a gevent socket, else None.

    gevent's ``recv_into`` tries the raw socket first and, on EAGAIN (an exception), waits on the
    socket's read watcher and tries again: per token event one failed syscall, one exception and a
    Python read loop. A stream's next event is almost never there yet when the previous one has been
    handled, so :class:`GuardedSocketIO` waits first and reads once (``_wait`` and ``_read_event`` are
    gevent's socket internals; any other socket takes the ordinary path).
    """
    if type(sock).__module__ != "gevent._socket3" or hasattr(sock, "cipher"):
        return None  # not gevent's plain socket (a TLS socket's raw socket carries ciphertext)
    raw, wait, event = (getattr(sock, name, None) for name in ("_sock", "_wait", "_read_event"))
    if raw is None or wait is None or event is None or raw.gettimeout() != 0.0:
        return None
    return raw, wait, event


class GuardedSocketIO(socket.SocketIO):
    """``socket.SocketIO`` whose reads are timed by the watchdog (raise TimeoutError when cut)."""

    def __init__(self, sock: socket.socket, guard: Guard) -> None:
        super().__init__(sock, "rb")
        self._guard = guard
        self._coop = _cooperative_parts(sock)

    def readinto(self, b) -> int | None:
        g = self._guard
        if g.expired:
            raise TimeoutError("timed out")
        g.waiting_since = _clock()
        try:
            coop = self._coop
            if coop is None:
                n = super().readinto(b)
            else:
                raw, wait, event = coop
                while True:
                    wait(event)
                    try:
                        n = raw.recv_into(b)
                        break
                    except (BlockingIOError, InterruptedError):  # woken without data: wait again
                        continue
        except OSError as exc:
            if g.expired:
                raise TimeoutError("timed out") from exc
            raise
        finally:
            g.waiting_since = 0
        if not n and g.expired:
            raise TimeoutError("timed out")
        return n


class Watchdog:
    """The process's watchdog thread over the registered guards (see module docstring)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.guards: set[Guard] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.next_ns = NEVER
        self.thread = threading.Thread(target=self._run, name="harness-read-watchdog", daemon=True)
        self.thread.start()

    def register(self, g: Guard) -> None:
        with self.lock:
            self.guards.add(g)
        self.poke(g)

    def unregister(self, g: Guard) -> None:
        with self.lock:
            self.guards.discard(g)

    def poke(self, g: Guard) -> None:
        """Wake the watchdog when ``g`` may expire before its next planned scan."""
        if (g.waiting_since or _clock()) + g.timeout_ns < self.next_ns:
            self.wake.set()

    def scan(self, now: int) -> int:
        """Fire every expired guard; returns the earliest possible next expiry (ns)."""
        with self.lock:
            guards = list(self.guards)
        nxt = NEVER
        for g in guards:
            ws = g.waiting_since
            if ws:
                exp = ws + g.timeout_ns
                if exp <= now:
                    g.fire()
                    continue
            else:
                exp = now + g.timeout_ns
            if exp < nxt:
                nxt = exp
        return nxt

    def _run(self) -> None:
        while True:
            self.next_ns = NEVER  # while scanning, any change pokes (and the wait below returns at once)
            self.wake.clear()
            now = _clock()
            nxt = self.scan(now)
            self.next_ns = nxt
            self.wake.wait(None if nxt >= NEVER else max(nxt - _clock(), 0) / 1e9)


_watchdog: Watchdog | None = None
_create_lock = threading.Lock()


def watchdog() -> Watchdog:
    """The process's watchdog, started on first use (and again in a forked child)."""
    global _watchdog
    w = _watchdog
    if w is None or w.pid != os.getpid():
        with _create_lock:
            w = _watchdog
            if w is None or w.pid != os.getpid():
                w = _watchdog = Watchdog()
    return w
