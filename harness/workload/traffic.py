"""Today's traffic shapes on top of any prompt source: shared prefixes, per-user prefixes, cache
busting, tool-call prompts with tool schemas and reasoning prompts. Seeded and reproducible.

A :class:`TrafficSpec` says what to add; :func:`shape` wraps a prompt source (a zero-argument callable
returning :class:`~harness.workload.prompt.Prompt`, e.g. ``SyntheticPrompts(...).next``) for one user:

- **shared prefix** (``prefix_tokens`` L > 0, ``prefixes`` N >= 1): N system prompts of about L tokens
  (seeded words of :data:`~harness.workload.synthetic.WORDS`, the same text in every process for one
  seed); user ``u`` belongs to group ``u % N`` and its requests start with that group's prefix as the
  system message. ``prefix_share`` S: each request carries its group's prefix with probability S,
  else a fresh random prefix of the same length (never cached): the warm/cold mix is S.
- **per-user prefixes** (``prefixes`` 0): every user has its own prefix (seeded by seed and user);
  with the sessions scenario each conversation then grows turn by turn behind it.
- **cache busting** (``cache_bust``): a unique salt word ``[nonce-user-n]`` starts every prompt
  (before the prefix), so no prompt shares a prefix with any other; the nonce is drawn per process
  from the OS (the only non-reproducible part, on purpose: a server's cache outlives a run).
- **tool calls** (``tools`` K > 0): the request carries the first K schemas of :data:`TOOLS` as OpenAI
  ``tools`` (``tool_choice: auto``) and the user message starts with a seeded request for one of them.
- **reasoning** (``reasoning``): the user message starts with a seeded multi-step word problem and an
  instruction to reason step by step; ``reasoning_effort`` (low | medium | high) is sent as
  OpenAI's ``reasoning_effort`` when given.

Lengths are in the client's token approximation (:mod:`harness.workload.tokens`: 1 word = 1.3 tokens);
``Prompt.input_tokens`` counts prefix, salt and body. The base prompt's own text follows the added
instruction, so the input-length distribution keeps its meaning (plus the prefix).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass

from harness.workload.prompt import Prompt
from harness.workload.synthetic import WORDS
from harness.workload.tokens import count_tokens, words_for_tokens

REASONING_EFFORTS = ("low", "medium", "high")

#: OpenAI tool schemas (``{"type": "function", "function": {...}}``), in the order ``tools`` K takes them
TOOLS: tuple[dict, ...] = (
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "city name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Current local time in a time zone",
        "parameters": {"type": "object", "properties": {
            "timezone": {"type": "string", "description": "IANA time zone, e.g. Europe/Paris"}},
            "required": ["timezone"]}}},
    {"type": "function", "function": {
        "name": "search_docs", "description": "Search the documentation and return the best passages",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string"}, "top_k": {"type": "integer", "description": "passages, 1-20"}},
            "required": ["query"]}}},
    {"type": "function", "function": {
        "name": "convert_currency", "description": "Convert an amount between currencies",
        "parameters": {"type": "object", "properties": {
            "amount": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"}},
            "required": ["amount", "from", "to"]}}},
    {"type": "function", "function": {
        "name": "create_event", "description": "Create a calendar event",
        "parameters": {"type": "object", "properties": {
            "title": {"type": "string"}, "day": {"type": "string", "description": "YYYY-MM-DD"},
            "all_day": {"type": "boolean"}}, "required": ["title", "day"]}}},
)

_CITIES = ("Paris", "Lagos", "Osaka", "Lima", "Oslo", "Cairo", "Denver", "Hanoi", "Perth", "Quito")
_TOOL_ASKS: dict[str, Callable[[random.Random], str]] = {
    "get_weather": lambda g: f"What is the weather in {g.choice(_CITIES)} right now?",
    "get_time": lambda g: f"What time is it in {g.choice(_CITIES)}?",
    "search_docs": lambda g: f"Find the documentation about {g.choice(WORDS)} {g.choice(WORDS)}.",
    "convert_currency": lambda g: f"Convert {g.randint(5, 900)} euros to yen.",
    "create_event": lambda g: f"Put a meeting about {g.choice(WORDS)} in my calendar for next Friday.",
}


@dataclass(frozen=True, slots=True)
class TrafficSpec:
    """What :func:`shape` adds to each prompt (module docstring); the defaults add nothing."""

    prefix_tokens: int = 0  #: L: prefix length, tokens (client approximation); 0 = no prefix
    prefixes: int = 1  #: N: distinct shared prefixes (user u uses prefix u % N); 0 = one per user
    prefix_share: float = 1.0  #: S: fraction of requests that carry their group's prefix
    cache_bust: bool = False  #: a unique salt word at the start of every prompt
    tools: int = 0  #: K: tool schemas sent with each request (0 = none)
    reasoning: bool = False  #: reasoning prompts (a word problem, "reason step by step")
    reasoning_effort: str = ""  #: sent as ``reasoning_effort`` when set

    def __post_init__(self) -> None:
        if self.prefix_tokens < 0 or self.prefixes < 0 or self.tools < 0:
            raise ValueError("prefix tokens, prefixes and tools must be >= 0")
        if not 0.0 <= self.prefix_share <= 1.0:
            raise ValueError(f"prefix share must be within [0, 1], got {self.prefix_share}")
        if self.tools > len(TOOLS):
            raise ValueError(f"tools: at most {len(TOOLS)} schemas are built in, got {self.tools}")
        if self.reasoning_effort and self.reasoning_effort not in REASONING_EFFORTS:
            raise ValueError(f"reasoning effort must be one of {', '.join(REASONING_EFFORTS)}")

    @property
    def active(self) -> bool:
        """True when the spec changes prompts at all."""
        return bool(self.prefix_tokens or self.cache_bust or self.tools or self.reasoning or self.reasoning_effort)


def prefix_text(tokens: int, seed: int, key: int | str) -> str:
    """The prefix of group (or user) ``key``: seeded words for about ``tokens`` tokens, one text per
    ``(seed, key)`` in every process (``random.Random`` seeded with a string is stable across runs)."""
    g = random.Random(f"prefix:{seed}:{key}")
    return "You are a helpful assistant. Background: " + " ".join(
        g.choice(WORDS) for _ in range(max(1, words_for_tokens(tokens) - 6)))


def reasoning_question(g: random.Random) -> str:
    """A seeded multi-step arithmetic word problem with an instruction to reason step by step."""
    a, b, c = g.randint(3, 40), g.randint(2, 9), g.randint(2, 30)
    item = g.choice(("apples", "tickets", "books", "boxes", "coins"))
    return (f"Reason step by step, then give the final answer. A shop has {a} {item}, buys {b} crates of "
            f"{c} {item} each and sells half of everything. How many {item} are left?")


def tool_request(g: random.Random, tools: tuple[dict, ...]) -> str:
    """A seeded user request that one of ``tools`` answers."""
    name = g.choice(tools)["function"]["name"]
    return _TOOL_ASKS[name](g)


def shape(source: Callable[[], Prompt], spec: TrafficSpec, seed: int = 0, user: int = 0,
          nonce: str | None = None) -> Callable[[], Prompt]:
    """Prompt source of user ``user``: ``source``'s prompts shaped by ``spec`` (module docstring).

    Seeded by ``(seed, user)``; ``nonce`` (default: drawn from the OS per call) only names the
    cache-busting salts.
    """
    if not spec.active:
        return source
    g = random.Random(f"traffic:{seed}:{user}")
    group = user if spec.prefixes == 0 else user % spec.prefixes
    own = prefix_text(spec.prefix_tokens, seed, f"user{user}" if spec.prefixes == 0 else group) \
        if spec.prefix_tokens else ""
    salt_nonce = nonce if nonce is not None else os.urandom(4).hex()
    tools = TOOLS[:spec.tools]
    body: dict = {}
    if tools:
        body["tools"] = [dict(t) for t in tools]
        body["tool_choice"] = "auto"
    if spec.reasoning_effort:
        body["reasoning_effort"] = spec.reasoning_effort
    count = [0]

    def next_prompt() -> Prompt:
        base = source()
        count[0] += 1
        system = ""
        if spec.prefix_tokens:
            if spec.prefix_share >= 1.0 or g.random() < spec.prefix_share:
                system = own
            else:  # a fresh prefix of the same length, never seen before (seeded per user and request)
                system = prefix_text(spec.prefix_tokens, seed, f"cold:{user}:{count[0]}")
        if spec.cache_bust:
            system = f"[{salt_nonce}-{user}-{count[0]}] " + system
        lead = []
        if spec.reasoning:
            lead.append(reasoning_question(g))
        if tools:
            lead.append(tool_request(g, tools))
        user_text = " ".join([*lead, base.as_text()]) if lead else base.as_text()
        messages = ([{"role": "system", "content": system.rstrip()}] if system else []) + [
            {"role": "user", "content": user_text}]
        text = "\n\n".join(m["content"] for m in messages)
        extra = count_tokens(text) - count_tokens(base.as_text())
        n = base.input_tokens + extra if base.input_tokens is not None else count_tokens(text)
        return Prompt(text=text, messages=messages, max_new_tokens=base.max_new_tokens, input_tokens=n,
                      body={**(base.body or {}), **body} or None)

    return next_prompt
