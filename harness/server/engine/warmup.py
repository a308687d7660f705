"""Start-up warm-up through the engine's own code path (oneDNN/CUDA kernels, allocator)."""

from __future__ import annotations

import torch

from harness.server.backends.base import SamplingParams
from harness.server.engine.batch import prefill
from harness.server.engine.sampling import RowSampler, choose


def warm_up(model: object, device: torch.device, prompt: list[int], steps: int = 4) -> None:
    """Prefill two prompts, join a third, run ``steps`` decode steps and let a row leave."""
    greedy = SamplingParams(max_new_tokens=steps)
    with torch.inference_mode():
        batch, logits = prefill(model, [0, 1], [prompt, prompt[: max(1, len(prompt) // 2)]], device)
        batch.set_last(choose(logits, [RowSampler(greedy, list(prompt))] * 2).ids)
        other, logits = prefill(model, [2], [prompt[:3] or prompt], device)
        other.set_last(choose(logits, [RowSampler(greedy, list(prompt))]).ids)
        batch.merge(other)
        for _ in range(steps):
            logits = batch.step(model)
            batch.set_last(choose(logits, [RowSampler(greedy, list(prompt))] * len(batch)).ids)
        batch.keep([0, 2])
        batch.step(model)
