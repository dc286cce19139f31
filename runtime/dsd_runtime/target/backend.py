"""The target's model backend: the four operations verification needs, and nothing else.

Acceptance, sampling, sessions and back-pressure live above this line, so another engine can take the
place of the batched transformers backend (on GPUs: vLLM, see docs/runtime.md "Another engine as the
target"): it must prefill a context with a window, score a window after the cached prefix, drop rejected
positions, and say how much memory a sequence holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from dsd_runtime.common.batching import BatchingLM
from dsd_runtime.common.lm import KVSequence


class TargetBackend(Protocol):
    vocab_size: int
    max_context: int
    kv_bytes_per_token: int

    def prefill(self, context: Sequence[int], window: Sequence[int]) -> tuple[KVSequence, torch.Tensor]:
        """A new sequence holding `context` + `window`; the logits after context[-1] and each window token."""
        ...

    def verify(self, seq: KVSequence, pending: int, window: Sequence[int]) -> torch.Tensor:
        """Appends `pending` (the last committed token, not yet cached) and `window`; their next-token logits
        [len(window) + 1, vocab]. An empty window is one decoding step."""
        ...

    def rollback(self, seq: KVSequence, num_tokens: int) -> None:
        """Drops the last `num_tokens` cached positions (rejected drafts)."""
        ...

    def kv_bytes(self, seq: KVSequence) -> int:
        """Bytes of memory `seq` holds."""
        ...


class BatchedTransformersBackend:
    """The default: a transformers model behind continuous batching (dsd_runtime.common.batching)."""

    def __init__(self, lm: BatchingLM) -> None:
        self.lm = lm
        self.vocab_size = lm.vocab_size
        self.max_context = lm.max_context
        self.kv_bytes_per_token = lm.kv_bytes_per_token

    def prefill(self, context: Sequence[int], window: Sequence[int]) -> tuple[KVSequence, torch.Tensor]:
        seq = self.lm.new_sequence()
        # The whole context and the window in ONE forward pass; only the window's logits are projected.
        return seq, self.lm.forward(seq, [*context, *window], keep_last=len(window) + 1)

    def verify(self, seq: KVSequence, pending: int, window: Sequence[int]) -> torch.Tensor:
        return self.lm.forward(seq, [pending, *window], keep_last=len(window) + 1)

    def rollback(self, seq: KVSequence, num_tokens: int) -> None:
        self.lm.rollback(seq, num_tokens)

    def kv_bytes(self, seq: KVSequence) -> int:
        return seq.nbytes
