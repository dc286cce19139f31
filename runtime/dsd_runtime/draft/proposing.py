"""Proposing draft tokens with a KV-cached small model.

The proposer keeps one KV cache per request and reconciles it with whatever sequence it is asked to extend
(rolling back rejected speculation), so blocking and pipelined loops share one primitive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from dsd_runtime.common import seeding
from dsd_runtime.common.lm import CausalLM
from dsd_spec import sampling
from dsd_spec.sampling import SamplingParams

# The draft truncates its own q to this many tokens before sampling: exact (the target corrects any q, as
# long as the draft really sampled from the q it sends) and keeps each window's payload small.
DRAFT_SUPPORT_TOP_K = 64


@dataclass(frozen=True)
class Proposal:
    token: int
    support: tuple[list[int], list[float]] | None  # sparse q; None = point mass (greedy)
    seconds: float


class Proposer:
    """Extends a token sequence by one draft token at a time for one request."""

    def __init__(self, model: CausalLM, params: SamplingParams, seed: int) -> None:
        self.model = model
        self.params = params
        self.seed = seed
        self.seq = model.new_sequence()
        self.fed: list[int] = []  # tokens whose KV is in `seq`

    def _sync(self, tokens: list[int]) -> None:
        """Roll the cache back to the longest prefix it shares with tokens[:-1] (drops rejected speculation).

        At least the last token is always fed again, so the forward pass yields its next-token logits.
        """
        limit = min(len(self.fed), len(tokens) - 1)
        if self.fed[:limit] == tokens[:limit]:  # the usual case: only appended tokens (C-speed compare)
            keep = limit
        else:
            keep = next(i for i in range(limit) if self.fed[i] != tokens[i])
        if keep < len(self.fed):
            CausalLM.rollback(self.seq, len(self.fed) - keep)
            del self.fed[keep:]

    def propose(self, tokens: list[int]) -> Proposal:
        """One draft token after `tokens` (the full sequence: committed + speculation so far)."""
        start = time.perf_counter()
        self._sync(tokens)
        new = tokens[len(self.fed):]
        logits = self.model.forward(self.seq, new, keep_last=1)[-1]  # [vocab]
        self.fed.extend(new)
        if self.params.greedy:
            token = int(logits.argmax())
            return Proposal(token, None, time.perf_counter() - start)
        q = sampling.warp(logits, self.params)
        if q.shape[-1] > DRAFT_SUPPORT_TOP_K:
            top = torch.topk(q, DRAFT_SUPPORT_TOP_K)
            ids, probs = top.indices, top.values
            probs = probs / probs.sum()
        else:
            ids = torch.arange(q.shape[-1])
            probs = q
        keep = probs > 0
        ids, probs = ids[keep], probs[keep]
        gen = seeding.position_generator(self.seed, len(tokens), "draft")
        pick = int(torch.multinomial(probs, 1, generator=gen))
        return Proposal(int(ids[pick]), (ids.tolist(), probs.tolist()), time.perf_counter() - start)
