"""Prefix caching: the KV of prompt prefixes kept in blocks and reused by later requests.

Layout: a sequence is cut into blocks of :data:`BLOCK` tokens. Block ``j`` is keyed by
``(hash of block j-1's key, token ids of block j)`` (a hash chain, as vLLM's): two sequences share
a key only if they agree on every token up to the end of that block (the tokens are compared, the
parent only by its hash). A block holds one tensor ``[layers, 2 (K, V), kv_heads, BLOCK, head_dim]``
(its own copy: nothing is shared with a running batch, so a batch never writes into it).

- :meth:`PrefixCache.match` finds the longest run of cached blocks from the start of a prompt,
  over at most ``floor((len - 1) / BLOCK)`` blocks (at least one prompt token is always computed:
  its logits choose the first output token), and marks them most recently used;
- :meth:`PrefixCache.store` copies a row's blocks out of the running batch's cache: the prompt's
  full blocks right after its prefill, and at the end of a request the blocks its generated tokens
  completed (so a next turn that repeats the answer finds it);
- memory is bounded by ``capacity_bytes``: storing evicts the least recently used blocks of other
  sequences first; a chain's deeper blocks are always older than its start (blocks are touched
  deepest first), so a shared system prompt outlives the per-request tails that hang off it, and
  a sequence larger than the whole cache keeps its first blocks.

All calls run on the scheduler thread. Counters and gauges: :class:`PrefixCacheStats`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from harness.server.backends.base import PrefixCacheStats

#: tokens per block (vLLM's default block size)
BLOCK = 16

Key = tuple[int, tuple[int, ...]]


def block_keys(ids: list[int], n_blocks: int, block: int = BLOCK) -> list[Key]:
    """The chain keys of the first ``n_blocks`` blocks of ``ids``."""
    keys: list[Key] = []
    parent = 0
    for j in range(n_blocks):
        key = (parent, tuple(ids[j * block:(j + 1) * block]))
        keys.append(key)
        parent = hash(key)
    return keys


class PrefixCache:
    """A bounded LRU of KV blocks (module docstring)."""

    def __init__(self, capacity_bytes: int, block: int = BLOCK) -> None:
        self.block = block
        self._lru: OrderedDict[Key, torch.Tensor] = OrderedDict()
        self.stats = PrefixCacheStats(capacity_bytes=int(capacity_bytes))

    def __len__(self) -> int:
        return len(self._lru)

    def match(self, ids: list[int]) -> tuple[int, torch.Tensor | None]:
        """(cached tokens, their KV ``[layers, 2, kv_heads, tokens, head_dim]`` or None) for a prompt."""
        hit: list[Key] = []
        for key in block_keys(ids, max(len(ids) - 1, 0) // self.block, self.block):
            if key not in self._lru:
                break
            hit.append(key)
        for key in reversed(hit):
            self._lru.move_to_end(key)
        st = self.stats
        st.requests += 1
        st.queries += len(ids)
        st.hits += len(hit) * self.block
        st.hit_requests += bool(hit)
        if not hit:
            return 0, None
        return len(hit) * self.block, torch.cat([self._lru[k] for k in hit], dim=3)

    def store(self, ids: list[int], layers: list[tuple[torch.Tensor, torch.Tensor]], columns: torch.Tensor,
              first_block: int = 0) -> None:
        """Cache the full blocks of ``ids`` from ``first_block`` on that are not cached yet.

        ``layers``: each layer's ``(keys, values)`` of ONE row, ``[kv_heads, columns, head_dim]``;
        ``columns[j]``: the column holding token ``j`` of ``ids``. Room is made by evicting the least
        recently used blocks of other sequences; when the sequence alone exceeds the capacity, its
        first blocks are kept. Afterwards the sequence's blocks are the most recently used, its start
        the newest."""
        b, lru, st = self.block, self._lru, self.stats
        n_blocks = len(ids) // b
        if n_blocks <= first_block:
            return
        keys = block_keys(ids, n_blocks, b)
        chain = set(keys)
        missing = [j for j in range(first_block, n_blocks) if keys[j] not in lru]
        if missing:
            lo, hi = missing[0] * b, (missing[-1] + 1) * b
            cols = columns[lo:hi]
            kv = torch.stack([torch.stack((k.index_select(1, cols), v.index_select(1, cols)))
                              for k, v in layers])  # [layers, 2, heads, hi - lo, dim]
            size = kv[:, :, :, :b].numel() * kv.element_size()
            present = sum(1 for key in keys if key in lru)
            missing = missing[:max(0, st.capacity_bytes // size - present)]
            while lru and st.bytes + len(missing) * size > st.capacity_bytes:
                oldest = next(iter(lru))
                if oldest in chain:  # reordered below
                    lru.move_to_end(oldest)
                else:
                    self._evict()
            for j in reversed(missing):
                lru[keys[j]] = kv[:, :, :, j * b - lo:(j + 1) * b - lo].clone()
                st.bytes += size
        for key in reversed(keys):  # deepest first: the chain's start ends newest
            if key in lru:
                lru.move_to_end(key)
        st.tokens = len(lru) * b

    def _evict(self) -> None:
        _, old = self._lru.popitem(last=False)
        self.stats.bytes -= old.numel() * old.element_size()
        self.stats.evicted += 1
        self.stats.tokens = len(self._lru) * self.block

    def clear(self) -> None:
        """Drop every block (counters are kept)."""
        self._lru.clear()
        self.stats.bytes = self.stats.tokens = 0
