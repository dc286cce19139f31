"""Proposing draft tokens with a KV-cached small model.

The proposer keeps one KV cache per request and reconciles it with whatever sequence it is asked to extend
(rolling back rejected speculation), so blocking and pipelined loops share one primitive. When sampling it
proposes with the coupled rule (dsd_spec.sampling): argmax(log q_k + G_k) with the same per-position Gumbel
noise G_k as the target, a point mass, so no draft distribution crosses the network and the output under a
seed is the target's own whatever the window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dsd_runtime.common import seeding
from dsd_runtime.common.lm import ForwardModel
from dsd_spec import sampling
from dsd_spec.sampling import SamplingParams


@dataclass(frozen=True)
class Proposal:
    token: int
    seconds: float


class Proposer:
    """Extends a token sequence by one draft token at a time for one request."""

    def __init__(self, model: ForwardModel, params: SamplingParams, seed: int) -> None:
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
            self.model.rollback(self.seq, len(self.fed) - keep)
            del self.fed[keep:]

    def propose(self, tokens: list[int]) -> Proposal:
        """One draft token after `tokens` (the full sequence: committed + speculation so far)."""
        start = time.perf_counter()
        self._sync(tokens)
        new = tokens[len(self.fed):]
        logits = self.model.forward(self.seq, new, keep_last=1)[-1]  # [vocab]
        self.fed.extend(new)
        if self.params.greedy:
            return Proposal(int(logits.argmax()), time.perf_counter() - start)
        q = sampling.warp(logits, self.params)  # [vocab]
        noise = seeding.gumbel_noise(self.seed, len(tokens), 1, q.shape[-1])[0]  # position of the new token
        return Proposal(int(sampling.sample_coupled(q, noise)), time.perf_counter() - start)
