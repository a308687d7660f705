"""Faster CPU kernels for a loaded transformers model: prepacked oneDNN linears, 16-bit decode attention.

Measured on a 2-core Zen 5 (SmolLM2-135M, one decode step over 16 rows, one thread):

- ``nn.Linear`` in float32 runs MKL's sgemm, which at 16 rows x 49152 outputs (the lm_head) is
  several times slower than oneDNN; :func:`pack_linears` replaces every ``nn.Linear`` with
  :class:`PackedLinear`: the weight reordered once into oneDNN's blocked layout
  (``torch.ops.mkldnn._reorder_linear_weight``) and ``torch.ops.mkldnn._linear_pointwise`` per call
  (the kernels inductor's freezing uses). A float32 decode step at 16 rows: 140 -> 69 ms. The layout
  is chosen for :data:`PACK_ROWS` rows; with it a row's output does not depend on how many rows
  share the call (except a single row through the 1536-wide down projection, ~1e-7 apart).
- torch's CPU ``scaled_dot_product_attention`` in bfloat16 with a mask and grouped KV heads takes
  about 1.1 ms per layer for 16 one-token queries over 100 columns; the same attention as two
  batched matmuls in float32 (:func:`decode_attention`) takes 0.19 ms and is as close to a float32
  reference. It serves one-token queries in 16-bit dtypes; everything else goes to transformers'
  ``sdpa`` function unchanged (so float32 numerics are SDPA's).

:func:`accelerate` applies both on a CPU where oneDNN runs the model's dtype; it is a no-op elsewhere.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: the row count oneDNN lays packed weights out for (a decode step's typical batch)
PACK_ROWS = 16
#: the attention implementation name registered with transformers
ATTENTION = "harness_cpu"


class PackedLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` prepacked for oneDNN (inference only: no autograd; a later change
    of ``weight`` is not seen)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # the original parameters stay registered (state_dict, save_pretrained, tied embeddings);
        # the packed copy is what runs: weights take twice their memory
        self.weight = linear.weight
        self.bias = linear.bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACK_ROWS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.detach()
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN prepacked"


def onednn_runs(dtype: torch.dtype) -> bool:
    """True when oneDNN has CPU linear kernels for ``dtype`` here (bf16 needs AVX512-BF16/AMX)."""
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.float32:
        return True
    if dtype == torch.bfloat16:
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def pack_linears(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`PackedLinear`; returns how many.

    A tied lm_head gets its own packed copy; the input embedding keeps the original tensor."""
    targets = [(name, mod) for name, mod in model.named_modules() if type(mod) is nn.Linear]
    for name, mod in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, PackedLinear(mod))
    return len(targets)


def decode_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention function: for one-token 16-bit queries on the CPU,
    ``softmax(q K^T * scaling + mask) V`` in float32 with grouped heads packed
    (``[B, kv_heads, groups, D] @ [B, kv_heads, D, T]``), output cast back; otherwise ``sdpa``.

    Shapes: query ``[B, H, 1, D]``, key/value ``[B, kv_heads, T, D]``, mask ``[B, 1, 1, T]`` (bool:
    True = attend, or additive float) or None; returns ``[B, 1, H, D]``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if (q_len != 1 or query.dtype == torch.float32 or query.device.type != "cpu" or dropout
            or kwargs.get("position_bias") is not None or heads % kv_heads):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    scale = dim ** -0.5 if scaling is None else scaling
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim).float()
    scores = torch.matmul(q, key.float().transpose(-1, -2)).mul_(scale)  # [B, kv_heads, groups, T]
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, :]  # [B, 1, 1, T]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill_(~mask, float("-inf"))
        else:
            scores = scores.add_(mask.float())
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, value.float()).to(query.dtype)  # [B, kv_heads, groups, D]
    return out.reshape(batch, 1, heads, dim), None


def _register_attention() -> None:
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(ATTENTION, decode_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def accelerate(model: nn.Module, device: torch.device, dtype: torch.dtype) -> list[str]:
    """Apply the CPU kernels this model can use (see module docstring); returns what was applied."""
    applied: list[str] = []
    if device.type != "cpu" or not onednn_runs(dtype):
        return applied
    if pack_linears(model):
        applied.append("onednn-linear")
    config = getattr(model, "config", None)
    if dtype != torch.float32 and config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
        _register_attention()
        config._attn_implementation = ATTENTION
        applied.append("decode-attention")
    return applied
