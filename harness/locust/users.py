"""User base classes: stream with the harness client, fire TTFT/E2E events, write every record.

- :class:`StreamingUser` (closed loop): each user sends one request after the other.
- :class:`OpenLoopUser`: dispatches on the shared arrival schedule (harness.locust.dispatcher).
- :class:`SessionUser`: multi-turn conversations with think time between turns.
All three are abstract; scenario files subclass them and set ``scenario`` (the request-event name
and the records' ``scenario`` field) and ``protocol``.

Closed-loop users (:class:`StreamingUser`, :class:`SessionUser`) back off after a failed or refused
request (:class:`FailureBackoff`, ``--failure-backoff``), so a stopped or rejecting target is not
flooded; open-loop users keep their arrival schedule (their load is bounded by ``--rate``).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

from locust import User, constant, task

from harness.client import RetryPolicy, StreamClient, Timeouts, make_client
from harness.locust import clock_sync, dispatcher
from harness.locust.prompts import prompt_source
from harness.locust.run import current
from harness.records import Outcome, RequestRecord
from harness.workload import Prompt, Session

_user_numbers = itertools.count()


@dataclass
class FailureBackoff:
    """Wait of one closed-loop user before its next request, after a failed or refused one, s.

    After the k-th failure in a row (any outcome but ok and cancelled): the server's ``Retry-After``
    when the answer had one (``rec.retry_after_s``, at least ``base_s``), else
    ``min(cap_s, base_s * 2**(k-1))``. An ok request resets k. ``base_s == 0`` disables it.
    This is between requests, like Locust's ``wait_time``; the client's ``RetryPolicy``
    (``--retry-overloaded``) is different: it retries *within* one request, which then counts as one
    attempt whose TTFT includes the retries.
    """

    base_s: float = 0.1
    cap_s: float = 5.0
    failures: int = 0  #: consecutive failed requests

    def after(self, rec: RequestRecord) -> float:
        """Note ``rec``'s outcome; returns the seconds to wait before the next request."""
        if rec.ok:
            self.failures = 0
            return 0.0
        if self.base_s <= 0 or rec.outcome == Outcome.CANCELLED:
            return 0.0
        self.failures += 1
        if rec.retry_after_s is not None:
            return max(self.base_s, rec.retry_after_s)
        return min(self.cap_s, self.base_s * 2.0 ** min(self.failures - 1, 64))


class StreamingUser(User):
    """Closed loop: send a request, read the stream to its end, repeat (``wait_time`` between)."""

    abstract = True
    scenario = "stream"  #: request-event name and records' scenario
    protocol = "tgi"  #: default wire protocol; --protocol overrides
    endpoint: str | None = None  #: default route; --endpoint overrides
    keep_text = False  #: keep the generated text in records
    wait_time = constant(0)

    def on_start(self) -> None:
        self.ctx = current()
        self.opts = self.ctx.opts
        self.user_index = next(_user_numbers)
        self.user_id = f"{self.ctx.node}-u{self.user_index}"
        self.next_prompt = prompt_source(self.opts, self.user_index)
        self.client: StreamClient = self.new_client()
        self._free_clients: list[StreamClient] = []
        self.backoff = FailureBackoff(*self.opts.failure_backoff)
        self._backoff_s = 0.0
        # The backoff joins the user's own wait_time (whatever a scenario set it to) as the larger of
        # the two, so it is slept by Locust between tasks: outside every latency, and a stopping user
        # is not held up by it.
        own_wait = self.wait_time
        self.wait_time = lambda: max(own_wait(), self._take_backoff())  # type: ignore[method-assign]

    def _take_backoff(self) -> float:
        delay, self._backoff_s = self._backoff_s, 0.0
        return delay

    def note_outcome(self, rec: RequestRecord) -> None:
        """Closed loop: schedule the failure backoff (if any) before this user's next request."""
        self._backoff_s = self.backoff.after(rec)

    def on_stop(self) -> None:
        for c in [self.client, *self._free_clients]:
            c.close()

    def new_client(self) -> StreamClient:
        """A client for this user's target, configured from the options."""
        o = self.opts
        t = o.request_timeout
        client = make_client(
            protocol=o.protocol or self.protocol, base_url=self.host, endpoint=o.endpoint or self.endpoint,
            api_key=o.api_key or None, model_name=o.model_name or None,
            timeouts=Timeouts(connect_s=min(10.0, t), read_s=min(60.0, t), total_s=t),
            retry=RetryPolicy(max_retries=o.retry_overloaded),
            request_id_header=o.request_id_header or None,
        )
        client.send_traceparent = not getattr(self.environment.parsed_options, "no_traceparent", False)
        return client

    def send(self, prompt: Prompt, intended_ns: int | None = None,
             client: StreamClient | None = None) -> RequestRecord:
        """Stream one request; fires its events and submits its record, also when cancelled."""
        rec = self.ctx.stamp(RequestRecord(), self.scenario, self.user_id)
        try:
            rec = (client or self.client).stream(prompt, record=rec, intended_ns=intended_ns,
                                                 keep_text=self.keep_text)
        except BaseException:  # GreenletExit at the end of a run: the client marked it cancelled
            if rec.outcome == Outcome.OK:
                rec.outcome, rec.error_text = Outcome.CANCELLED.value, "cancelled by the harness"
                rec.end_ns = rec.end_ns or time.monotonic_ns()
            if rec.intended_ns is None:
                rec.intended_ns = intended_ns
            self._finish(rec)
            raise
        cut = self.ctx.cut_ns
        if cut is not None and rec.ok and (rec.end_ns or 0) > cut:  # ended in the forced stop's first moment
            rec.outcome, rec.error_text = Outcome.CANCELLED.value, "in flight when the run stopped"
        self._finish(rec)
        return rec

    def _finish(self, rec: RequestRecord) -> None:
        """Hand the record on; its events and accounting run off this greenlet (RunContext.submit)."""
        self.ctx.submit(rec, self.scenario)

    @task
    def request(self) -> None:
        self.note_outcome(self.send(self.next_prompt()))


class OpenLoopUser(StreamingUser):
    """Open loop: this user dispatches arrivals of the process's shared schedule (see dispatcher)."""

    abstract = True

    @task
    def request(self) -> None:
        ctx = self.ctx
        if ctx.schedule is None:
            ctx.schedule = dispatcher.Schedule(self.opts, *worker_share(self.environment))
            ctx.schedule.start_ns = clock_sync.schedule_start_ns(self.environment)  # the master's zero, or None
        dispatcher.run(self, ctx.schedule)

    def send_pooled(self, prompt: Prompt, intended_ns: int) -> None:
        """Run one scheduled request on a free client of this user (one client per concurrent stream)."""
        client = self._free_clients.pop() if self._free_clients else self.new_client()
        try:
            self.send(prompt, intended_ns=intended_ns, client=client)
        finally:
            self._free_clients.append(client)

    def record_drop(self, prompt: Prompt, intended_ns: int, reason: str) -> None:
        """Record an arrival the client could not send (pool full)."""
        rec = self.ctx.stamp(RequestRecord(), self.scenario, self.user_id)
        rec.protocol, rec.target = self.client.protocol, self.client.target
        rec.intended_ns, rec.outcome, rec.error_text = intended_ns, Outcome.DROPPED.value, reason
        rec.input_tokens_client = prompt.input_tokens
        self._finish(rec)


def worker_share(environment: Any) -> tuple[int, int]:
    """(number of load-generating processes, this one's index) for splitting the arrival schedule."""
    opts = environment.parsed_options
    n = int(getattr(opts, "harness_workers", 0) or 1)
    index = int(getattr(environment.runner, "worker_index", 0) or 0)
    return n, index


class SessionUser(StreamingUser):
    """Multi-turn conversations: each turn resends the conversation so far; think time between turns.

    A conversation has ``--turns`` user turns drawn from the prompt source; the streamed answer of
    each ok turn joins the history. Think time is exponential with mean ``--think-time`` s. When a
    conversation ends the user starts a new one.
    """

    abstract = True
    protocol = "openai"
    keep_text = True

    def on_start(self) -> None:
        super().on_start()
        self._conversations = itertools.count()
        self.session = self.new_session()

    def new_session(self) -> Session:
        # the first prompt's system message (a --prefix-tokens prefix) and body (--tools) are the session's
        prompts = [self.next_prompt() for _ in range(self.opts.turns)]
        return Session.from_prompts(prompts, think_time_s=self.opts.think_time, think_time_kind="exponential",
                                    seed=self.opts.seed * 1_000_003 + self.user_index * 1009
                                    + next(self._conversations))

    def wait_time(self) -> float:
        return self.session.think_time()

    @task
    def request(self) -> None:
        if self.session.done:
            self.session = self.new_session()
        prompt = self.session.next_prompt()
        if prompt is None:
            return
        rec = self.send(prompt)
        self.note_outcome(rec)
        if rec.ok:
            self.session.add_reply(rec.text or "")


# Locust's metaclass adds every base class's tasks to a subclass's own, so without this an open-loop
# or session user would also run StreamingUser's closed-loop task, chosen at random.
OpenLoopUser.tasks = [OpenLoopUser.request]
SessionUser.tasks = [SessionUser.request]
