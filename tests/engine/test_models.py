"""Model resolution: tiny, .gguf files, local dirs, errors; device and dtype selection."""

from __future__ import annotations

import pytest
import torch
from tiny_gguf import write_tiny_gguf

from harness.server.models import ModelLoadError, load_model
from harness.server.models.devices import cpu_has_fast_bf16, select_device, select_dtype
from harness.server.models.tiny import build_tiny


def test_tiny_is_deterministic_and_fast_to_build(tiny):
    model, tok = build_tiny()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 tiny.model.state_dict().values(), strict=True))
    assert tok.decode(tok("héllo 🎉", add_special_tokens=False)["input_ids"]) == "héllo 🎉"
    assert tiny.eos_token_ids == frozenset({2}) and tiny.dtype == torch.float32
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_gguf_file_loads_with_identical_logits(tiny, tmp_path):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(tiny.model, tiny.tokenizer, path)
    lm = load_model(str(path), dtype="float32", device="cpu")
    assert lm.model_id == "tiny.gguf"
    text = "Grüße, world"
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        a = lm.model(torch.tensor([ids])).logits
        b = tiny.model(torch.tensor([ids])).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_local_directory_loads(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path), dtype="bfloat16", device="cpu")
    assert lm.dtype == torch.bfloat16 and lm.model.dtype == torch.bfloat16 and lm.eos_token_ids == {2}


@pytest.mark.parametrize("name", ["no-such-org/no-such-model-xyz", "/nonexistent/model.gguf"])
def test_unknown_model_is_a_clear_error(name):
    with pytest.raises(ModelLoadError) as info:
        load_model(name, device="cpu")
    assert "\n" not in str(info.value) and name in str(info.value)


def test_device_and_dtype_selection():
    cpu = select_device("cpu")
    assert cpu.type == "cpu"
    assert select_dtype("float32", cpu) == torch.float32
    assert select_dtype("auto", cpu) == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    if torch.cuda.is_available():
        assert select_device("auto").type == "cuda" and select_dtype("auto", select_device("auto")) in (
            torch.bfloat16, torch.float16)
    else:
        assert select_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="no CUDA"):
            select_device("cuda:0")
    with pytest.raises(ValueError):
        select_dtype("float8", cpu)
    with pytest.raises(ValueError):
        select_device("tpu")
    with pytest.raises(ModelLoadError):
        load_model("tiny", dtype="int4")
