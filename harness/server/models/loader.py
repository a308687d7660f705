"""Resolve ``--model`` to a model + tokenizer on the chosen device and dtype.

Accepted values:
- ``smollm2``: the embedded SmolLM2-135M-Instruct (converted once to a cache, see ``smollm2.py``);
- ``tiny``: the in-code random 2-layer Llama with a byte tokenizer (tests);
- a path to a ``.gguf`` file (loaded with ``gguf_file=``);
- a local directory with a transformers checkpoint;
- a hub id, only when it is already in the local HF cache (never downloads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.server.models import smollm2
from harness.server.models.cpu_kernels import accelerate
from harness.server.models.devices import dtype_name, select_device, select_dtype


class ModelLoadError(ValueError):
    """The model could not be resolved or loaded; the message says why, in one line."""


@dataclass
class LoadedModel:
    """A model ready for the engine."""

    model: Any  #: a transformers causal LM in eval mode on ``device``
    tokenizer: Any  #: its (fast) tokenizer
    model_id: str  #: the id shown in /info
    device: torch.device
    dtype: torch.dtype
    max_position_embeddings: int
    eos_token_ids: frozenset[int]

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _from_pretrained(location: str, dtype: torch.dtype, **kwargs: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(location, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kwargs)
    return model, tok


def preflight(name: str, *, dtype: str = "auto", device: str = "auto") -> None:
    """Cheap checks of ``--model/--dtype/--device`` before any loading; ModelLoadError says what is wrong."""
    try:
        select_dtype(dtype, select_device(device))
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    if name in ("tiny",):
        return
    if name == "smollm2":
        try:
            smollm2.locate_gguf()
        except FileNotFoundError as exc:
            raise ModelLoadError(str(exc)) from None
        return
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {name}")
        return
    if path.is_dir():
        return
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"model directory not found: {name}")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id
        cached = None
    if not isinstance(cached, str):
        raise ModelLoadError(
            f"model {name!r} is not 'smollm2', 'tiny', a .gguf file, a local directory or a hub id "
            "in the local HF cache (models are never downloaded)"
        )


def load_model(name: str, *, dtype: str = "auto", device: str = "auto", cpu_kernels: bool = True) -> LoadedModel:
    """Load ``name`` (see module docstring) on ``device`` in ``dtype``; ModelLoadError on failure.

    ``cpu_kernels``: on a CPU, swap in prepacked oneDNN linears and the 16-bit decode attention
    (:mod:`harness.server.models.cpu_kernels`); False keeps the model as transformers built it."""
    try:
        dev = select_device(device)
        torch_dtype = select_dtype(dtype, dev)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    model_id = name
    try:
        if name == "tiny":
            from harness.server.models.tiny import build_tiny

            model, tok = build_tiny()
            model = model.to(torch_dtype)
            model_id = "stream-harness/tiny-random-llama"
        elif name == "smollm2":
            model, tok = _from_pretrained(str(smollm2.ensure_converted()), torch_dtype)
            model_id = smollm2.MODEL_ID
        elif name.endswith(".gguf"):
            path = Path(name).expanduser()
            if not path.is_file():
                raise ModelLoadError(f"GGUF file not found: {name}")
            model, tok = _from_pretrained(str(path.parent), torch_dtype, gguf_file=path.name)
            model_id = path.name
        elif Path(name).expanduser().is_dir():
            model, tok = _from_pretrained(str(Path(name).expanduser()), torch_dtype)
        else:
            try:
                model, tok = _from_pretrained(name, torch_dtype, local_files_only=True)
            except OSError as exc:
                raise ModelLoadError(
                    f"model {name!r} is not 'smollm2', 'tiny', a .gguf file, a local directory or a hub id "
                    f"in the local HF cache (never downloaded): {str(exc).splitlines()[0]}"
                ) from None
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"cannot load model {name!r}: {first}") from None
    model = model.to(dev).eval()
    if cpu_kernels:
        accelerate(model, dev, torch_dtype)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    max_pos = int(getattr(model.config, "max_position_embeddings", 0) or 4096)
    return LoadedModel(model, tok, model_id, dev, torch_dtype, max_pos, _eos_ids(model, tok))
