"""The CPU kernels swapped into loaded models: same results as the modules they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.server.models.cpu_kernels import PackedLinear, decode_attention, onednn_runs, pack_linears

DTYPES = [d for d in (torch.float32, torch.bfloat16) if onednn_runs(d)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_linear_matches_linear_and_keeps_parameters(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 200, bias=False)).to(dtype)
    x = torch.randn(3, 5, 64, dtype=dtype)
    with torch.inference_mode():
        ref = model(x)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        assert pack_linears(model) == 2
        got = model(x)
    assert isinstance(model[0], PackedLinear) and isinstance(model[2], PackedLinear)
    assert got.shape == ref.shape and got.dtype == dtype
    assert torch.allclose(got.float(), ref.float(), atol=1e-4 if dtype == torch.float32 else 2e-2)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)


class _Attn(nn.Module):
    num_key_value_groups = 3
    is_causal = True


@pytest.mark.skipif(torch.bfloat16 not in DTYPES, reason="no oneDNN bf16 on this CPU")
def test_decode_attention_matches_float32_sdpa_with_padding_mask():
    torch.manual_seed(0)
    b, heads, kv_heads, t, d = 4, 9, 3, 37, 64
    q = torch.randn(b, heads, 1, d, dtype=torch.bfloat16)
    k = torch.randn(b, kv_heads, t, d, dtype=torch.bfloat16)
    v = torch.randn(b, kv_heads, t, d, dtype=torch.bfloat16)
    mask = torch.ones(b, 1, 1, t, dtype=torch.bool)
    mask[1, :, :, :10] = False  # a left-padded row
    out, _ = decode_attention(_Attn(), q, k, v, mask, scaling=d ** -0.5)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, enable_gqa=True)
    assert out.shape == (b, 1, heads, d) and out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref.transpose(1, 2), atol=1e-2)
    prefill, _ = decode_attention(_Attn(), q.expand(b, heads, 2, d), k, v, None, scaling=d ** -0.5)
    assert prefill.shape == (b, 2, heads, d)  # more than one query token: transformers' sdpa
