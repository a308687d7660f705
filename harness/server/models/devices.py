"""Device and dtype selection for the transformers backend.

``auto`` device: the first CUDA device when torch sees one, else the CPU.
``auto`` dtype: bfloat16 on CUDA (float16 where the GPU lacks bf16); on the CPU bfloat16 where oneDNN
has native bf16 kernels (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``, about 2x faster than fp32
on such CPUs), else float32. The GPU path is the same code path: only these two values differ.
"""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def select_device(device: str = "auto") -> torch.device:
    """Resolve ``auto|cpu|cuda|cuda:N`` to a torch device; ValueError when it is not usable."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r} (expected auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r} (expected auto, cpu, cuda or cuda:N)")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def select_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Resolve ``auto|float32|bfloat16|float16`` for ``device`` (see module docstring)."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r} (expected auto, float32, bfloat16 or float16)") from None


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")
