"""Server limits and settings shared by the routes (the parsed `harness serve` options)."""

from __future__ import annotations

import os
from dataclasses import dataclass

#: Seconds of silence on an SSE stream before a ``:\n\n`` keep-alive comment (TGI: 15 s).
#: The hidden env var ``HARNESS_SSE_KEEPALIVE_S`` overrides it (tests use a short value).
KEEPALIVE_S: float = float(os.environ.get("HARNESS_SSE_KEEPALIVE_S", "15"))

VERSION = "3.3.6-dev0"  #: the TGI router version this server mirrors in /info
ROUTER = "text-generation-router"


@dataclass(slots=True)
class ServerConfig:
    """Limits applied by validation and reported by /info. Token limits are resolved at startup
    from the backend's ``max_position_embeddings`` when not given (TGI: max_total = mpe,
    max_input = max_total - 1)."""

    model_id: str = "simulated"
    max_concurrent_requests: int = 128
    max_best_of: int = 2
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_client_batch_size: int = 4
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    api_key: str | None = None
    payload_limit: int = 2_000_000
    compute_type: str = os.environ.get("COMPUTE_TYPE", "gpu+optimized")
    trace_file: str | None = None
    keepalive_s: float = KEEPALIVE_S

    def resolve_limits(self, max_position_embeddings: int) -> None:
        """Fill unset token limits from the model and check max_input < max_total."""
        if self.max_total_tokens is None:
            if self.max_input_tokens is not None:
                self.max_total_tokens = max(max_position_embeddings, self.max_input_tokens + 1)
            else:
                self.max_total_tokens = max_position_embeddings
        if self.max_input_tokens is None:
            self.max_input_tokens = self.max_total_tokens - 1
        if self.max_input_tokens >= self.max_total_tokens:
            raise ValueError(
                f"`max_input_tokens` must be < `max_total_tokens` "
                f"({self.max_input_tokens} >= {self.max_total_tokens})"
            )
