"""Prompt files: jsonl prompts and ShareGPT conversations.

Formats (detected per record, so one loader reads both):

- jsonl, one object per line: ``{"prompt": "...", "max_new_tokens": 128}`` (``max_new_tokens``
  optional; ``max_tokens`` and ``output_tokens`` accepted as aliases), or ``{"messages": [...]}``
  in OpenAI chat format;
- ShareGPT: a ``.json`` list of conversations, or ``.jsonl`` with one per line, each
  ``{"conversations": [{"from": "human"|"gpt"|"system", "value": "..."}]}`` (``"messages"`` with
  ``role``/``content`` also accepted). The first human turn is the prompt; the first reply after it
  (when present) sets ``max_new_tokens`` to its token count (tokenizer when given, else the
  approximation of :mod:`harness.workload.tokens`), as serving benchmarks do. Conversations
  without a human turn are skipped. :func:`load_conversations` keeps the whole conversation for
  multi-turn sessions.

Bad input raises ``ValueError("<path>: line N: ...")`` (``item N`` for a JSON list).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.workload.prompt import Prompt
from harness.workload.tokens import Tokenizer, count_tokens

_HUMAN = {"human", "user"}
_ASSISTANT = {"gpt", "assistant", "chatgpt", "bard", "model"}
_ROLE = {"human": "user", "user": "user", "system": "system"} | {a: "assistant" for a in _ASSISTANT}
_MNT_KEYS = ("max_new_tokens", "max_tokens", "output_tokens")


def _records(path: Path) -> list[tuple[str, Any]]:
    """``(location, decoded object)`` for each record of a .json list or a .jsonl file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text: {exc}") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
        return [(f"item {i}", obj) for i, obj in enumerate(data, 1)]
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((f"line {i}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {i}: invalid JSON: {exc.msg}") from None
    return out


def _turns(obj: dict, where: str) -> list[dict] | None:
    """Conversation turns as OpenAI messages, or None when the record is not a conversation."""
    conv = obj.get("conversations", obj.get("conversation"))
    if conv is None and "prompt" not in obj:
        conv = obj.get("messages")
    if conv is None:
        return None
    if not isinstance(conv, list):
        raise ValueError(f"{where}: 'conversations' must be a list")
    msgs = []
    for j, turn in enumerate(conv, 1):
        if not isinstance(turn, dict):
            raise ValueError(f"{where}: turn {j} is not an object")
        who = str(turn.get("from", turn.get("role", ""))).lower()
        content = turn.get("value", turn.get("content"))
        if who not in _ROLE or not isinstance(content, str):
            raise ValueError(f"{where}: turn {j} needs from/role in {sorted(_ROLE)} and a string value/content")
        msgs.append({"role": _ROLE[who], "content": content})
    return msgs


def _max_new_tokens(obj: dict, where: str) -> int | None:
    for k in _MNT_KEYS:
        if obj.get(k) is not None:
            v = obj[k]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{where}: {k} must be a positive integer, got {v!r}")
            return v
    return None


def load_prompt_file(path: str | Path, tokenizer: Tokenizer | None = None) -> list[Prompt]:
    """Prompts from a jsonl or ShareGPT file (see the module docstring); ValueError on bad input."""
    p = Path(path)
    prompts: list[Prompt] = []
    for loc, obj in _records(p):
        where = f"{p}: {loc}"
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        msgs = _turns(obj, where)
        if msgs is None:
            text = obj.get("prompt", obj.get("text"))
            if not isinstance(text, str) or not text:
                raise ValueError(f"{where}: needs a non-empty string 'prompt' (or ShareGPT 'conversations')")
            prompts.append(Prompt(text=text, max_new_tokens=_max_new_tokens(obj, where),
                                  input_tokens=count_tokens(text, tokenizer)))
            continue
        first = next((i for i, m in enumerate(msgs) if m["role"] == "user"), None)
        if first is None:
            continue
        system = [m for m in msgs[:first] if m["role"] == "system"]
        human = msgs[first]["content"]
        reply = next((m["content"] for m in msgs[first + 1 :] if m["role"] == "assistant"), None)
        mnt = _max_new_tokens(obj, where)
        if mnt is None and reply:
            mnt = max(1, count_tokens(reply, tokenizer))
        prompts.append(Prompt(text=human, messages=[*system, {"role": "user", "content": human}],
                              max_new_tokens=mnt, input_tokens=count_tokens(human, tokenizer)))
    if not prompts:
        raise ValueError(f"{p}: no prompts found")
    return prompts


def load_conversations(path: str | Path) -> list[list[dict]]:
    """Whole conversations (OpenAI messages) from a ShareGPT file, for multi-turn sessions.

    jsonl prompt records become one-turn conversations. ValueError on bad input.
    """
    p = Path(path)
    out: list[list[dict]] = []
    for loc, obj in _records(p):
        where = f"{p}: {loc}"
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        msgs = _turns(obj, where)
        if msgs is None:
            text = obj.get("prompt")
            if not isinstance(text, str) or not text:
                raise ValueError(f"{where}: needs a non-empty string 'prompt' (or ShareGPT 'conversations')")
            msgs = [{"role": "user", "content": text}]
        if any(m["role"] == "user" for m in msgs):
            out.append(msgs)
    if not out:
        raise ValueError(f"{p}: no conversations found")
    return out


SAMPLE_DIR = Path(__file__).parent / "data"


def sample_path(name: str = "prompts.jsonl") -> Path:
    """Path of a bundled sample file (``prompts.jsonl`` or ``sharegpt_sample.json``)."""
    return SAMPLE_DIR / name
