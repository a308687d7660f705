"""Multi-turn sessions: a conversation that grows turn by turn, with think time between turns.

>>> s = Session(["Hi, who are you?", "Tell me more."], think_time_s=2.0)
>>> p = s.next_prompt()          # messages: [user turn 1]
>>> s.add_reply("I am a model.")  # the streamed answer joins the history
>>> p = s.next_prompt()          # messages: [user 1, assistant 1, user 2]

Each prompt carries the whole history (what a chat client resends), so input length grows turn
by turn, like real chats (and prefix caches see the shared prefix). ``think_time()`` draws the
pause a user takes before the next turn: ``think_time_s`` exactly, or exponential with that mean
when ``think_time_kind="exponential"`` (seeded). Each prompt carries its 1-based ``turn`` (the
records' ``turn``, for TTFT by turn) and the session's request ``body`` (tools, ...).
:meth:`Session.from_prompts` builds a session from shaped prompts (:mod:`harness.workload.traffic`):
the first prompt's system message (a shared or per-user prefix) starts the conversation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from harness.workload.prompt import Prompt
from harness.workload.tokens import Tokenizer, count_tokens


class Session:
    """One simulated user's conversation; not thread-safe (one per user)."""

    def __init__(self, turns: Sequence[str], system: str | None = None, max_new_tokens: int | None = None,
                 think_time_s: float = 0.0, think_time_kind: str = "constant", seed: int = 0,
                 tokenizer: Tokenizer | None = None, body: dict | None = None) -> None:
        if not turns:
            raise ValueError("a session needs at least one user turn")
        if think_time_s < 0:
            raise ValueError("think_time_s must be >= 0")
        if think_time_kind not in ("constant", "exponential"):
            raise ValueError("think_time_kind must be 'constant' or 'exponential'")
        self.turns = list(turns)
        self.max_new_tokens = max_new_tokens
        self.think_time_s = think_time_s
        self.think_time_kind = think_time_kind
        self.tokenizer = tokenizer
        self.body = body
        self.rng = random.Random(seed)
        self.history: list[dict] = [{"role": "system", "content": system}] if system else []
        self.turn = 0  #: user turns sent so far
        self._awaiting_reply = False

    @classmethod
    def from_conversation(cls, messages: Sequence[dict], **kw) -> Session:
        """A session replaying a recorded conversation's user turns (assistant turns come live)."""
        system = next((m["content"] for m in messages if m.get("role") == "system"), None)
        turns = [m["content"] for m in messages if m.get("role") == "user"]
        return cls(turns, system=kw.pop("system", system), **kw)

    @classmethod
    def from_prompts(cls, prompts: Sequence[Prompt], **kw) -> Session:
        """A session whose user turns are ``prompts`` without their system messages (as text); the first
        prompt's system message and ``body`` are the session's."""
        if not prompts:
            raise ValueError("a session needs at least one user turn")
        first = prompts[0].as_messages()
        system = next((m["content"] for m in first if m.get("role") == "system"), None)
        turns = []
        for p in prompts:
            rest = [m for m in p.as_messages() if m.get("role") != "system"]
            turns.append(Prompt(messages=rest).as_text() if rest and len(rest) < len(p.as_messages())
                         else p.as_text())
        kw.setdefault("max_new_tokens", prompts[0].max_new_tokens)
        kw.setdefault("body", prompts[0].body)
        return cls(turns, system=system, **kw)

    @property
    def done(self) -> bool:
        """True when every user turn has been sent."""
        return self.turn >= len(self.turns)

    def next_prompt(self) -> Prompt | None:
        """The next turn's prompt (history + the next user turn), or None when the session is over.

        If the previous turn got no :meth:`add_reply` (the request failed), an empty assistant
        turn is not invented: the next user turn simply follows.
        """
        if self.done:
            return None
        self.history.append({"role": "user", "content": self.turns[self.turn]})
        self.turn += 1
        self._awaiting_reply = True
        msgs = [dict(m) for m in self.history]
        text = "\n\n".join(m["content"] for m in msgs)
        return Prompt(text=text, messages=msgs, max_new_tokens=self.max_new_tokens,
                      input_tokens=count_tokens(text, self.tokenizer), body=self.body, turn=self.turn)

    def add_reply(self, text: str) -> None:
        """Append the assistant's answer to the conversation."""
        if not self._awaiting_reply:
            raise ValueError("add_reply() without a pending turn")
        self.history.append({"role": "assistant", "content": text})
        self._awaiting_reply = False

    def think_time(self) -> float:
        """Seconds to wait before the next turn."""
        if self.think_time_kind == "exponential" and self.think_time_s > 0:
            return self.rng.expovariate(1.0 / self.think_time_s)
        return self.think_time_s
