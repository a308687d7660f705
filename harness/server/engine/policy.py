"""Which waiting requests join the batch before the next decode step (TGI's router rules).

- Nothing runs: take requests FIFO.
- A batch runs: TGI's ``waiting_served_ratio``: join only when at least
  ``floor(batch_size * waiting_served_ratio)`` requests can join at once, unless
  ``max_waiting_tokens`` decode steps have passed since the last join (then any number may join).
- Always: at most ``max_batch_size - batch_size`` requests, and the padded prefill
  (``requests * longest prompt``) within ``max_batch_prefill_tokens``; a single prompt longer than
  the budget is still taken alone (the HTTP layer rejects prompts that are too long).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass
class Policy:
    max_batch_size: int | None = None
    max_batch_prefill_tokens: int = 4096
    waiting_served_ratio: float = 1.2
    max_waiting_tokens: int = 20

    def take(self, queue: deque[Any], batch_size: int, steps_since_join: int) -> list[Any]:
        """Pop and return the requests that join now (possibly none); ``queue`` holds Requests."""
        room = len(queue) if self.max_batch_size is None else max(0, self.max_batch_size - batch_size)
        if room == 0 or not queue:
            return []
        chosen = 0
        longest = 0
        for req in queue:
            if chosen >= room:
                break
            n = max(longest, len(req.input_ids))
            if chosen and n * (chosen + 1) > self.max_batch_prefill_tokens:
                break
            longest, chosen = n, chosen + 1
        if batch_size and steps_since_join < self.max_waiting_tokens:
            if chosen < math.floor(batch_size * self.waiting_served_ratio):
                return []
        return [queue.popleft() for _ in range(chosen)]
