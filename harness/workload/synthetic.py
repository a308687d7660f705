"""Synthetic prompts with input- and output-length distributions; seeded and reproducible.

Each prompt is a random sequence of common English words (:data:`WORDS`) behind a short fixed
instruction, so prompts share no long prefix (no accidental prefix-cache hits) yet stay readable.
Input length is measured with the target's tokenizer when one is given: the word count is
searched (bisection) so the text's token count is the largest not above the drawn target (equal
for any tokenizer that maps these words to at least one token each, up to ties). Without a
tokenizer the documented approximation of :mod:`harness.workload.tokens` is used (1 word = 1.3
tokens) and ``Prompt.input_tokens`` holds the approximate count.

The same ``seed`` (and distributions, and tokenizer) gives the same prompt sequence.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from harness.workload.distributions import Distribution
from harness.workload.prompt import Prompt
from harness.workload.tokens import Tokenizer, count_tokens, words_for_tokens

INSTRUCTION = "Write a story using these words:"

WORDS: tuple[str, ...] = tuple("""
time year people way day man thing woman life child world school state family student group country
problem hand part place case week company system program question work government number night point
home water room mother area money story fact month lot right study book eye job word business issue
side kind head house service friend father power hour game line end member law car city community name
president team minute idea kid body information back parent face others level office door health person
art war history party result change morning reason research girl guy moment air teacher force education
foot boy age policy music market sense nation plan college interest death experience effect class control
care field development role effort rate heart drug show leader light voice wife police mind price report
decision son view relationship town road arm difference value building action model season society tax
director position player record paper space ground form event official matter center couple site project
activity star table need court oil situation cost industry figure street image phone data picture practice
piece land product doctor wall patient worker news test movie north love support technology step baby
computer type attention film tree source organization hair window evidence population truth song river
garden bridge mountain ocean island forest valley desert winter summer spring autumn coffee bread apple
""".split())


class SyntheticPrompts:
    """An endless, seeded stream of synthetic prompts: ``next()`` -> :class:`Prompt`.

    ``input_tokens``/``output_tokens`` are :class:`Distribution` objects or spec strings
    (``"fixed:128"``, ``"uniform:64,256"``...). ``max_new_tokens`` of each prompt is drawn from
    ``output_tokens``. ``chat=True`` also fills ``Prompt.messages`` with one user message.
    """

    def __init__(self, input_tokens: Distribution | str, output_tokens: Distribution | str, seed: int = 0,
                 tokenizer: Tokenizer | None = None, chat: bool = False) -> None:
        self.input_tokens = input_tokens if isinstance(input_tokens, Distribution) else Distribution.parse(input_tokens)
        self.output_tokens = (output_tokens if isinstance(output_tokens, Distribution)
                              else Distribution.parse(output_tokens))
        self.rng = random.Random(seed)
        self.tokenizer = tokenizer
        self.chat = chat

    def next(self) -> Prompt:
        target = self.input_tokens.sample(self.rng)
        out = self.output_tokens.sample(self.rng)
        text, n = self._text_for(target)
        messages = [{"role": "user", "content": text}] if self.chat else None
        return Prompt(text=text, messages=messages, max_new_tokens=out, input_tokens=n)

    def __iter__(self) -> Iterator[Prompt]:
        while True:
            yield self.next()

    def __next__(self) -> Prompt:
        return self.next()

    def _words(self, n: int) -> list[str]:
        choice = self.rng.choice
        return [choice(WORDS) for _ in range(n)]

    def _text_for(self, target: int) -> tuple[str, int]:
        """(text, token count) for a target input length."""
        if self.tokenizer is None:
            n_instr = words_for_tokens(count_tokens(INSTRUCTION))
            k = max(1, words_for_tokens(target) - n_instr)
            text = " ".join([INSTRUCTION, *self._words(k)])
            return text, count_tokens(text)
        # Tokenizer: draw plenty of words, then bisect the prefix length whose count fits the target.
        words = self._words(target + 8)
        tok = self.tokenizer

        def tokens_of(k: int) -> int:
            return count_tokens(" ".join([INSTRUCTION, *words[:k]]), tok)

        lo, hi = 1, len(words)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if tokens_of(mid) <= target:
                lo = mid
            else:
                hi = mid - 1
        text = " ".join([INSTRUCTION, *words[:lo]])
        return text, count_tokens(text, tok)
