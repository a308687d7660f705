"""Counting tokens on the client side: the target's tokenizer when given, else an approximation.

The approximation (used when no tokenizer is given): **1 word = 1.3 tokens** for English text,
i.e. ``tokens ~= round(1.3 * words)`` and ``words = max(1, round(tokens / 1.3))`` (the common
"0.75 words per token" rule for BPE tokenizers of English). Synthetic prompts are built from a
fixed list of common English words, for which real tokenizers land close to one token per word
plus punctuation; use a tokenizer when exact lengths matter.

A tokenizer is any callable ``text -> ids`` (a list), or an object with ``encode(text)`` (for
example a ``transformers`` tokenizer loaded by the user); ``BatchEncoding``-like results with an
``input_ids`` key are accepted too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

TOKENS_PER_WORD = 1.3

Tokenizer = Callable[[str], Sequence[int]] | Any


def approx_tokens(text: str) -> int:
    """Approximate token count of ``text``: ``round(1.3 * words)`` (at least 1 for non-empty text)."""
    words = len(text.split())
    return max(1 if text.strip() else 0, int(round(TOKENS_PER_WORD * words)))


def words_for_tokens(tokens: int) -> int:
    """Words needed for about ``tokens`` tokens under the approximation: ``max(1, round(tokens / 1.3))``."""
    return max(1, int(round(tokens / TOKENS_PER_WORD)))


def count_tokens(text: str, tokenizer: Tokenizer | None = None) -> int:
    """Token count of ``text`` with ``tokenizer`` (no special tokens added when it allows), else approximated."""
    if tokenizer is None:
        return approx_tokens(text)
    return len(encode(text, tokenizer))


def encode(text: str, tokenizer: Tokenizer) -> Sequence[int]:
    """Ids of ``text`` from a callable or an object with ``encode`` (transformers-style)."""
    enc = getattr(tokenizer, "encode", None)
    if enc is not None:
        try:
            ids = enc(text, add_special_tokens=False)
        except TypeError:
            ids = enc(text)
    else:
        ids = tokenizer(text)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return ids
