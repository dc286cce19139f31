"""Tiny random models, built locally and deterministically, for fast lossless tests and local experiments.

A byte-level tokenizer (256 bytes + chat special tokens) is shared by every tiny model, so any pair is a
valid draft/target pair. Weights are float64 by default: chunked (verify) and one-token (plain decoding)
forward passes then agree to ~1e-15, so greedy comparisons are never decided by float noise.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from dsd_runtime.common import lm
from dsd_runtime.common.models import save_vocabulary_head

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_alphabet))}
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                  pad_token="<pad>", unk_token=None)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_config(vocab_size: int, hidden: int = 64, layers: int = 2, max_positions: int = 512) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
        # Large init: peaky next-token distributions, so sampling tests see structure rather than noise.
        initializer_range=0.3, tie_word_embeddings=False, bos_token_id=256, eos_token_id=256, pad_token_id=259,
    )


def build_tiny_model(out_dir: Path, seed: int, hidden: int = 64, layers: int = 2,
                     dtype: torch.dtype = torch.float64, base: Path | None = None,
                     perturb: float = 0.0, max_positions: int = 512) -> Path:
    """Writes a tiny Llama + tokenizer to `out_dir` and returns it.

    `base` + `perturb`: start from another tiny model's weights and add N(0, perturb) noise to its output
    head: a draft that agrees with `base` on some tokens and not others (partial acceptance).
    """
    tokenizer = build_tokenizer()
    gen = torch.Generator().manual_seed(seed)
    if base is not None:
        model = LlamaForCausalLM.from_pretrained(base, dtype=dtype)
        with torch.no_grad():
            head = model.lm_head.weight
            head.add_(torch.randn(head.shape, generator=gen, dtype=head.dtype) * perturb)
    else:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_config(len(tokenizer), hidden, layers, max_positions)).to(dtype)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def copy_with_vocabulary_head(model_dir: Path, out_dir: Path, token_ids: list[int]) -> Path:
    """A copy of a tiny model whose output head covers only `token_ids` (its own head's rows for them): a draft
    that can never propose the other tokens, as a distilled draft with a frequent-token head."""
    model = LlamaForCausalLM.from_pretrained(model_dir)
    ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long)
    model.save_pretrained(out_dir)
    build_tokenizer().save_pretrained(out_dir)
    head = lm.VocabularyHead(ids, model.get_output_embeddings().weight[ids].detach().clone())
    save_vocabulary_head(out_dir, head)
    return out_dir
