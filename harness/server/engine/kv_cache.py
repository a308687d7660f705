"""A preallocated, in-place KV cache for one running batch (one tensor pair per layer).

transformers' ``DynamicLayer`` concatenates the whole cache every decode step (``torch.cat``), which
costs as much memory traffic as the attention itself at batch 32. Here each layer owns buffers of
shape ``[B, kv_heads, capacity, head_dim]``; a step writes the new column in place and the model sees
the view ``[:, :, start:end]``. Capacity grows in chunks of :data:`GROW` columns (amortised copy).

Rows are left-padded: every row's real tokens end at ``end``; padding columns are zeros and masked by
the batch's 2-D attention mask. Batch-level operations:
- :meth:`BatchCache.select_rows` keeps some rows (requests leaving);
- :meth:`BatchCache.merge` concatenates two caches along the batch, left-padding the shorter one;
- :meth:`BatchCache.trim_left` drops leading columns that are padding in every row (a view change);
- :meth:`BatchCache.preload` starts a cache from prefix-cache blocks (rows then have padding between
  their cached prefix and their prompt's rest, see :func:`harness.server.engine.batch.prefill`).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

#: capacity is allocated in multiples of this many columns
GROW = 64


def _round_up(n: int) -> int:
    return ((n + GROW - 1) // GROW) * GROW


class InPlaceLayer(DynamicLayer):
    """One layer's K/V in preallocated buffers; ``keys``/``values`` are views of the live columns."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.kbuf: torch.Tensor | None = None
        self.vbuf: torch.Tensor | None = None
        self.start = 0
        self.end = 0

    def _set_views(self) -> None:
        assert self.kbuf is not None and self.vbuf is not None
        self.keys = self.kbuf[:, :, self.start:self.end]
        self.values = self.vbuf[:, :, self.start:self.end]

    def _reallocate(self, batch: int, capacity: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (batch, like.shape[1], capacity, like.shape[3])
        return (torch.empty(shape, dtype=like.dtype, device=like.device),
                torch.empty(shape, dtype=like.dtype, device=like.device))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``key_states``/``value_states`` ([B, H, q, D]) after the live columns; return all live."""
        q = key_states.shape[-2]
        if self.kbuf is None:
            self.dtype, self.device = key_states.dtype, key_states.device
            self.is_initialized = True
            self.kbuf, self.vbuf = self._reallocate(key_states.shape[0], _round_up(q + 1), key_states)
            self.start = self.end = 0
        elif self.end + q > self.kbuf.shape[2]:
            live = self.end - self.start
            k, v = self._reallocate(self.kbuf.shape[0], _round_up(live + q + GROW), self.kbuf)
            k[:, :, :live] = self.kbuf[:, :, self.start:self.end]
            v[:, :, :live] = self.vbuf[:, :, self.start:self.end]
            self.kbuf, self.vbuf, self.start, self.end = k, v, 0, live
        self.kbuf[:, :, self.end:self.end + q] = key_states
        self.vbuf[:, :, self.end:self.end + q] = value_states
        self.end += q
        self._set_views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.end - self.start

    def rebuild(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the contents with ``keys``/``values`` ([B, H, T, D]) plus growth room."""
        t = keys.shape[2]
        self.kbuf, self.vbuf = self._reallocate(keys.shape[0], _round_up(t + GROW), keys)
        self.kbuf[:, :, :t] = keys
        self.vbuf[:, :, :t] = values
        self.start, self.end = 0, t
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self._set_views()


def _left_pad(t: torch.Tensor, length: int) -> torch.Tensor:
    pad = length - t.shape[2]
    if pad == 0:
        return t
    zeros = torch.zeros((t.shape[0], t.shape[1], pad, t.shape[3]), dtype=t.dtype, device=t.device)
    return torch.cat([zeros, t], dim=2)


class BatchCache(Cache):
    """A transformers ``Cache`` of :class:`InPlaceLayer`, with batch join/leave operations."""

    def __init__(self, num_layers: int) -> None:
        super().__init__(layers=[InPlaceLayer() for _ in range(num_layers)])

    @property
    def length(self) -> int:
        """Live columns (padding included)."""
        return self.layers[0].get_seq_length()

    def select_rows(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.layers[0].kbuf.device)
        for layer in self.layers:
            layer.rebuild(layer.keys.index_select(0, index), layer.values.index_select(0, index))

    def trim_left(self, n: int) -> None:
        """Drop the first ``n`` live columns (they must be padding in every row)."""
        if n <= 0:
            return
        for layer in self.layers:
            layer.start += n
            layer._set_views()

    def preload(self, width: int, extra: int, rows: list[torch.Tensor | None]) -> None:
        """Start with ``width`` columns holding each row's cached prefix right-aligned (zeros in
        front), with room for ``extra`` more columns. ``rows[i]``: ``[layers, 2, heads, c_i, dim]``
        (``c_i`` <= ``width``) or None (no prefix: all zeros); at least one is not None."""
        like = next(r for r in rows if r is not None)
        shape = (len(rows), like.shape[2], _round_up(width + extra + 1), like.shape[4])
        for index, layer in enumerate(self.layers):
            k = torch.zeros(shape, dtype=like.dtype, device=like.device)
            v = torch.zeros(shape, dtype=like.dtype, device=like.device)
            for i, kv in enumerate(rows):
                if kv is not None and kv.shape[3]:
                    k[i, :, width - kv.shape[3]:width] = kv[index, 0]
                    v[i, :, width - kv.shape[3]:width] = kv[index, 1]
            layer.kbuf, layer.vbuf, layer.start, layer.end = k, v, 0, width
            layer.dtype, layer.device, layer.is_initialized = like.dtype, like.device, True
            layer._set_views()

    def row_layers(self, row: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's live ``(keys, values)`` of one row, ``[heads, columns, dim]`` (views)."""
        return [(layer.keys[row], layer.values[row]) for layer in self.layers]

    def merge(self, other: BatchCache) -> None:
        """Append ``other``'s rows after this cache's rows; the shorter side is left-padded with zeros."""
        length = max(self.length, other.length)
        for mine, theirs in zip(self.layers, other.layers, strict=True):
            mine.rebuild(torch.cat([_left_pad(mine.keys, length), _left_pad(theirs.keys, length)]),
                         torch.cat([_left_pad(mine.values, length), _left_pad(theirs.values, length)]))
