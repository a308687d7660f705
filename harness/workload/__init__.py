"""Workloads: prompts (synthetic length distributions, jsonl/ShareGPT files, multi-turn sessions)
and open-loop arrival processes. Stdlib only (cheap to import in every Locust worker)."""

from __future__ import annotations

from harness.workload.arrivals import ARRIVALS, arrival_times, load_trace, register_arrival
from harness.workload.distributions import Distribution
from harness.workload.files import load_conversations, load_prompt_file, sample_path
from harness.workload.prompt import Prompt
from harness.workload.sessions import Session
from harness.workload.synthetic import SyntheticPrompts
from harness.workload.tokens import TOKENS_PER_WORD, approx_tokens, count_tokens

__all__ = [
    "ARRIVALS",
    "TOKENS_PER_WORD",
    "Distribution",
    "Prompt",
    "Session",
    "SyntheticPrompts",
    "approx_tokens",
    "arrival_times",
    "count_tokens",
    "load_conversations",
    "load_prompt_file",
    "load_trace",
    "register_arrival",
    "sample_path",
]
