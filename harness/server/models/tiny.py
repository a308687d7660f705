"""The ``tiny`` test model: a random-weight 2-layer Llama over a byte-level tokenizer built in code.

Everything is built in memory in a few ms (no files, no downloads). The tokenizer is lossless for any
UTF-8 text: ids 0-2 are ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, then the 256 symbols of
the GPT-2 byte alphabet in sorted order (BPE with no merges, so one token per byte). Random weights
with ``initializer_range=0.2`` give varied greedy output (with the default 0.02 it repeats one
token), and the model happily emits bytes that are not valid UTF-8 - a stress test for incremental
detokenization. The weights are fixed by a seed: every process builds the same model.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_SEED = 1234


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """The 259-token byte-level tokenizer with a minimal ChatML chat template."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({sym: len(SPECIALS) + i for i, sym in enumerate(alphabet)})
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIALS[0]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def tiny_config(vocab_size: int) -> LlamaConfig:
    """2 layers, hidden 64, 4 heads / 2 KV heads, tied embeddings, eos 2."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        initializer_range=0.2,
    )


def build_tiny() -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """The tiny model (float32, CPU, eval mode) and its tokenizer; same weights in every process."""
    tok = byte_tokenizer()
    config = tiny_config(len(tok))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 2
    return model.eval(), tok
