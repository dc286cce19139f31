"""A causal LM with an explicit KV cache: forward over new tokens, roll back rejected positions.

Hides the transformers version differences (the forward kwarg became `cache=` in 5.24; `DynamicCache.crop`
semantics changed in 5.15: a negative argument removes that many tokens on every version we support).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel


@dataclass
class KVSequence:
    """A KV cache plus the number of tokens it holds."""

    cache: DynamicCache
    length: int = 0


class CausalLM:
    def __init__(self, model: PreTrainedModel, name: str) -> None:
        self.model = model.eval()
        self.name = name
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._can_keep_last = "logits_to_keep" in params
        self.vocab_size: int = int(model.config.vocab_size)
        self.max_context: int = int(getattr(model.config, "max_position_embeddings", 2048))
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device

    def new_sequence(self) -> KVSequence:
        return KVSequence(DynamicCache())

    @torch.inference_mode()
    def forward(self, seq: KVSequence, token_ids: Sequence[int], keep_last: int | None = None) -> torch.Tensor:
        """Appends `token_ids` to `seq` and returns their next-token logits: [len(token_ids), vocab] (fp32).

        `keep_last`: only the last k positions' logits ([k, vocab]); the vocabulary projection of a long prompt
        is a large share of a prefill, so prefills ask for the few positions they use.
        """
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self.device)
        kwargs = {self._cache_kwarg: seq.cache}
        if keep_last is not None and self._can_keep_last:
            kwargs["logits_to_keep"] = keep_last
        out = self.model(input_ids=ids, use_cache=True, **kwargs)
        seq.length += len(token_ids)
        logits = out.logits[0]
        logits = logits[-keep_last:] if keep_last is not None else logits
        return logits.float().cpu()  # acceptance and sampling run on the CPU: [k, vocab] is small

    def greedy(self, prompt_ids: Sequence[int], n: int) -> list[int]:
        """The model decoding alone, greedily, with its KV cache: the baseline DSD is compared against."""
        seq = self.new_sequence()
        out: list[int] = []
        logits = self.forward(seq, prompt_ids, keep_last=1)[-1]
        for _ in range(n):
            out.append(int(logits.argmax()))
            if len(out) < n:
                logits = self.forward(seq, [out[-1]])[-1]
        return out

    @staticmethod
    def rollback(seq: KVSequence, num_tokens: int) -> None:
        """Drops the last `num_tokens` positions from the cache (rejected drafts)."""
        if num_tokens < 0 or num_tokens > seq.length:
            raise ValueError(f"cannot roll back {num_tokens} of {seq.length} cached tokens")
        if num_tokens:
            seq.cache.crop(-num_tokens)
            seq.length -= num_tokens
