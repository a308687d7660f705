"""Incremental detokenization that never emits half a UTF-8 character.

The offsets method of TGI and vLLM: for the generated ids, ``prefix`` marks where the last emitted
window began and ``read`` where it ended. After each token, ``decode(ids[prefix:])`` is compared with
``decode(ids[prefix:read])``; the difference is emitted only when the new text does not end in U+FFFD
(an incomplete byte sequence). At the end, :meth:`finish` emits whatever the full decode has beyond
the emitted text, so that the concatenation of all emitted pieces equals the final text exactly.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Per-request text state for the generated (non-special) token ids."""

    __slots__ = ("_tok", "ids", "_prefix", "_read", "emitted")

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0
        self.emitted: list[str] = []

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token_id: int) -> str:
        """Append ``token_id``; return the text it completes ("" while a character is incomplete)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self._prefix:self._read]) if self._read > self._prefix else ""
        after = self._decode(self.ids[self._prefix:])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            piece = after[len(before):]
            self._prefix, self._read = self._read, len(self.ids)
            self.emitted.append(piece)
            return piece
        return ""

    @property
    def text(self) -> str:
        """All text emitted so far."""
        return "".join(self.emitted)

    def finish(self) -> str:
        """The remaining text at the end of generation (held-back bytes decode as U+FFFD here)."""
        emitted = self.text
        final = self._decode(self.ids)
        tail = final[len(emitted):] if final.startswith(emitted) else ""
        if tail:
            self.emitted.append(tail)
        return tail
