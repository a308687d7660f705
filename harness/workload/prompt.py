"""One request's input: a text prompt or a chat conversation, with its output budget."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Prompt:
    """A prompt as the workloads produce it and the clients consume it.

    ``text`` feeds TGI native routes and ``/v1/completions``; ``messages`` (OpenAI chat format,
    ``[{"role", "content"}]``) feeds ``/v1/chat/completions``. A client given only one form
    converts it (:meth:`as_text`, :meth:`as_messages`). ``max_new_tokens`` is the output budget
    (None: the client's default); ``input_tokens`` is the client-side input length estimate
    (tokenizer count, or the workload's documented approximation) stored in the record. ``body``:
    extra JSON fields of the request body on OpenAI routes (``tools``, ``tool_choice``,
    ``reasoning_effort``, the simulated server's ``simulate``); ``turn``: the 1-based turn of a
    session's prompt, copied into the record.
    """

    text: str | None = None
    messages: list[dict] | None = None
    max_new_tokens: int | None = None
    input_tokens: int | None = None
    body: dict | None = None
    turn: int | None = None

    def __post_init__(self) -> None:
        if self.text is None and not self.messages:
            raise ValueError("a Prompt needs text or messages")

    def as_text(self) -> str:
        """The prompt as one text: ``text``, else the message contents joined by blank lines."""
        if self.text is not None:
            return self.text
        return "\n\n".join(_content_text(m.get("content")) for m in self.messages or [])

    def as_messages(self) -> list[dict]:
        """The prompt as chat messages: ``messages``, else one user message holding ``text``."""
        if self.messages:
            return self.messages
        return [{"role": "user", "content": self.text or ""}]


def _content_text(content: object) -> str:
    """Text of an OpenAI message content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
