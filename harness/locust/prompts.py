"""Prompt sources for Locust users, built from the harness options.

``--prompt-file`` prompts are loaded once per process and handed out round robin from a per-user
offset; otherwise each user draws synthetic prompts (``--input-tokens``/``--output-tokens``
distributions) from its own seeded generator, so runs are reproducible per user. The traffic options
(``--prefix-tokens``, ``--prefixes``, ``--prefix-share``, ``--cache-bust``, ``--tools``,
``--reasoning-prompts``, ``--reasoning-effort``) shape either source (:mod:`harness.workload.traffic`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from harness.locust.options import HarnessOptions
from harness.workload import Distribution, Prompt, SyntheticPrompts, load_prompt_file
from harness.workload.traffic import TrafficSpec, shape


@lru_cache(maxsize=4)
def _file_prompts(path: str) -> tuple[Prompt, ...]:
    prompts = tuple(load_prompt_file(path))
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def check_prompt_file(path: str) -> int:
    """Load (and cache) a prompt file; returns the number of prompts. Raises ValueError on bad input."""
    try:
        return len(_file_prompts(path))
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None


def traffic_spec(opts: HarnessOptions) -> TrafficSpec:
    """The traffic options as a :class:`TrafficSpec` (ValueError on bad values)."""
    return TrafficSpec(prefix_tokens=opts.prefix_tokens, prefixes=opts.prefixes, prefix_share=opts.prefix_share,
                       cache_bust=opts.cache_bust, tools=opts.tools, reasoning=opts.reasoning_prompts,
                       reasoning_effort=opts.reasoning_effort)


def prompt_source(opts: HarnessOptions, user_index: int) -> Callable[[], Prompt]:
    """A zero-argument callable returning the next prompt for user number ``user_index``."""
    return shape(_base_source(opts, user_index), traffic_spec(opts), opts.seed, user_index)


def _base_source(opts: HarnessOptions, user_index: int) -> Callable[[], Prompt]:
    if opts.prompt_file:
        prompts = _file_prompts(opts.prompt_file)
        state = {"i": user_index * 7919 % len(prompts)}

        def next_from_file() -> Prompt:
            p = prompts[state["i"] % len(prompts)]
            state["i"] += 1
            return p

        return next_from_file
    gen = SyntheticPrompts(Distribution.parse(opts.input_tokens), Distribution.parse(opts.output_tokens),
                           seed=opts.seed * 1_000_003 + user_index)
    return gen.next
