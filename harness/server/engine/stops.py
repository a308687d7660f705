"""Text-level stop sequences, matched across token boundaries.

The generated text grows by one piece per token; a stop sequence matches when it occurs in the text
and its last character lies in the newest piece (so each occurrence is found exactly once, however
the tokens split it). As in TGI, the matched sequence (and the rest of that token's text) stays in
``generated_text`` and the finish reason is ``stop_sequence``.
"""

from __future__ import annotations


class StopMatcher:
    """Watches the generated text for any of ``stops`` (empty strings are ignored)."""

    __slots__ = ("_stops", "_text", "_longest")

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._text = ""

    def __bool__(self) -> bool:
        return bool(self._stops)

    def feed(self, piece: str) -> str | None:
        """Add ``piece``; return the stop sequence that now matches, else None."""
        if not self._stops or not piece:
            return None
        # Keep only the tail that a match ending in ``piece`` can touch.
        window = (self._text + piece)[-(len(piece) + self._longest - 1):]
        self._text = window[-(self._longest - 1):] if self._longest > 1 else ""
        for stop in self._stops:
            if stop in window:
                return stop
        return None
