"""Generation backends: transformers (real model, continuous batching) and simulated.

:func:`create_backend` picks one from the parsed `harness serve` options. torch and
transformers are imported only for real models, so ``--model simulated`` starts fast.
"""

from __future__ import annotations

import argparse

from harness.server.backends.base import Backend


def create_backend(args: argparse.Namespace) -> Backend:
    """``--model simulated`` -> :class:`SimulatedBackend` with the ``--sim-*`` knobs; anything
    else (``smollm2``, ``tiny``, a hub id, a local dir, a ``.gguf`` path) -> TransformersBackend."""
    if args.model == "simulated":
        from harness.server.backends.simulated import SimulatedBackend

        return SimulatedBackend(
            ttft_ms=args.sim_ttft_ms,
            ttft_per_input_token_ms=args.sim_ttft_per_input_token_ms,
            itl_ms=args.sim_itl_ms,
            jitter_ms=args.sim_jitter_ms,
            batch_slowdown=args.sim_batch_slowdown,
            output_tokens=args.sim_output_tokens,
            seed=args.sim_seed,
            reasoning_tokens=args.sim_reasoning_tokens,
            tool_calls=args.sim_tool_calls,
            tool_call_fragments=args.sim_tool_call_fragments,
            prefix_cache_blocks=args.sim_prefix_cache_blocks,
            prefix_block_tokens=args.sim_prefix_block_tokens,
        )
    from harness.server.backends.transformers import TransformersBackend

    return TransformersBackend(
        args.model,
        dtype=args.dtype,
        device=args.device,
        max_batch_size=args.max_batch_size,
        max_batch_prefill_tokens=args.max_batch_prefill_tokens,
        waiting_served_ratio=args.waiting_served_ratio,
        max_waiting_tokens=args.max_waiting_tokens,
        prefix_cache_mb=args.prefix_cache_mb if args.prefix_cache else 0.0,
    )
