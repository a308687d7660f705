"""Admission control: TGI's non-blocking semaphore of ``--max-concurrent-requests``.

A request takes a :class:`Permit` with :meth:`Admission.try_acquire` (never waits: no permit means
``Model is overloaded`` at once). The permit is held through queueing and generation and released
exactly once on completion, error or client disconnect (:meth:`Permit.release` is idempotent).
After :meth:`Admission.close` (graceful shutdown) every new request is refused as overloaded.
"""

from __future__ import annotations

from harness.server.infer_errors import Overloaded


class Permit:
    __slots__ = ("_admission", "_held")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission.in_use -= 1


class Admission:
    """``capacity`` permits; ``in_use`` is the number currently held."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self.closed = False

    @property
    def full(self) -> bool:
        """True when a request would be refused now: every permit held, or the server closing."""
        return self.closed or self.in_use >= self.capacity

    def try_acquire(self) -> Permit:
        """A permit, or raise :class:`Overloaded` when all are held or the server is closing."""
        if self.full:
            raise Overloaded()
        self.in_use += 1
        return Permit(self)

    def close(self) -> None:
        self.closed = True
