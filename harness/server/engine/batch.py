"""The running batch: one left-padded KV cache, a 2-D attention mask and per-row positions.

Row ``i`` of the cache holds that request's real tokens right-aligned, zero padding in front (a row
prefilled after a cached prefix also has padding between the prefix and the rest of its prompt, see
:func:`prefill`). The mask has a 1 for every real column, and only the mask says which are real. ``positions[i]`` is the number of real tokens of row ``i`` in the
cache, i.e. the position id of the token fed next; explicit per-row position ids are what make a
request's tokens independent of where it sits in the batch (a merged row's real positions differ
from its cache column indices). ``last[i]`` is the token chosen last, not yet in the cache.

- :func:`prefill` runs new prompts (left-padded together) with ``logits_to_keep=1``;
- :meth:`Batch.step` feeds ``last`` for every row (one decode step);
- :meth:`Batch.merge` joins a prefilled batch; :meth:`Batch.keep` lets rows leave and drops the
  leading columns that became padding in every row.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.server.engine.kv_cache import BatchCache


class Batch:
    """Model-side state of the running requests (the request objects live in ``rows``)."""

    def __init__(self, rows: list[Any], cache: BatchCache, mask: torch.Tensor, positions: torch.Tensor) -> None:
        self.rows = rows
        self.cache = cache
        self.mask = mask
        self.positions = positions
        self.last = torch.zeros(len(rows), dtype=torch.long, device=mask.device)

    def __len__(self) -> int:
        return len(self.rows)

    def set_last(self, ids: list[int]) -> None:
        self.last = torch.tensor(ids, dtype=torch.long, device=self.mask.device)

    def step(self, model: Any) -> torch.Tensor:
        """One decode step over all rows; returns the next-token logits [B, V]."""
        ones = torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = model(input_ids=self.last[:, None], attention_mask=self.mask,
                    position_ids=self.positions[:, None], past_key_values=self.cache, use_cache=True)
        self.positions = self.positions + 1
        return out.logits[:, -1]

    def keep(self, indices: list[int]) -> None:
        """Keep only the rows at ``indices`` (in order)."""
        if len(indices) == len(self.rows):
            return
        index = torch.tensor(indices, dtype=torch.long, device=self.mask.device)
        self.rows = [self.rows[i] for i in indices]
        self.cache.select_rows(indices)
        self.mask = self.mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        self.last = self.last.index_select(0, index)
        real_cols = self.mask.any(dim=0).nonzero()
        lead = int(real_cols[0]) if real_cols.numel() else self.mask.shape[1]
        if lead:
            self.mask = self.mask[:, lead:]
            self.cache.trim_left(lead)

    def merge(self, other: Batch) -> None:
        """Append ``other``'s rows (left-padding the shorter side's mask and cache)."""
        length = max(self.mask.shape[1], other.mask.shape[1])
        self.cache.merge(other.cache)
        self.mask = torch.cat([_pad_mask(self.mask, length), _pad_mask(other.mask, length)])
        self.positions = torch.cat([self.positions, other.positions])
        self.last = torch.cat([self.last, other.last])
        self.rows = self.rows + other.rows

    @property
    def columns(self) -> int:
        return int(self.mask.shape[1])


def _pad_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    pad = length - mask.shape[1]
    if pad == 0:
        return mask
    return torch.cat([torch.zeros((mask.shape[0], pad), dtype=mask.dtype, device=mask.device), mask], dim=1)


def prefill(model: Any, rows: list[Any], prompts: list[list[int]], device: torch.device,
            prefixes: list[torch.Tensor | None] | None = None) -> tuple[Batch, torch.Tensor]:
    """Run ``prompts`` (left-padded together) through the model; returns the batch and logits [n, V].

    ``prefixes[i]``: the KV of the first ``c_i`` tokens of prompt ``i`` from the prefix cache
    (``[layers, 2, heads, c_i, dim]``) or None. Then only the rests ``prompt[c_i:]`` are run: the
    cache starts with ``P = max c_i`` columns (each prefix right-aligned, zeros in front) and the
    rests follow, left-padded to the longest rest ``S``: row ``i`` is
    ``[pad P-c_i][prefix c_i][pad S-s_i][rest s_i]``, the mask has 1 on the prefix and the rest,
    position ids run ``c_i .. len-1`` over the rest. The padding between prefix and rest holds
    finite values (computed from pad tokens) and is masked like any padding."""
    if prefixes is not None and any(p is not None for p in prefixes):
        return _prefill_after_prefixes(model, rows, prompts, prefixes, device)
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = BatchCache(model.config.num_hidden_layers)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)
    return Batch(list(rows), cache, mask, lengths), out.logits[:, -1]


def _prefill_after_prefixes(model: Any, rows: list[Any], prompts: list[list[int]],
                            prefixes: list[torch.Tensor | None], device: torch.device) -> tuple[Batch, torch.Tensor]:
    cached = [0 if kv is None else int(kv.shape[3]) for kv in prefixes]
    width = max(cached)
    rests = [p[c:] for p, c in zip(prompts, cached, strict=True)]
    extra = max(len(r) for r in rests)
    ids = torch.zeros((len(prompts), extra), dtype=torch.long)
    mask = torch.zeros((len(prompts), width + extra), dtype=torch.long)
    position_ids = torch.zeros((len(prompts), extra), dtype=torch.long)
    for i, (rest, c) in enumerate(zip(rests, cached, strict=True)):
        ids[i, extra - len(rest):] = torch.tensor(rest, dtype=torch.long)
        mask[i, width - c:width] = 1
        mask[i, width + extra - len(rest):] = 1
        position_ids[i, extra - len(rest):] = torch.arange(c, c + len(rest))
    ids, mask, position_ids = ids.to(device), mask.to(device), position_ids.to(device)
    cache = BatchCache(model.config.num_hidden_layers)
    cache.preload(width, extra, prefixes)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)
    return Batch(list(rows), cache, mask, lengths), out.logits[:, -1]
