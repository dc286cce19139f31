"""The draft <-> target link: latency distribution, jitter, bandwidth with real payload sizes, loss, outages."""

from __future__ import annotations

import random

from dsd_sim.randomness import sampler
from dsd_sim.scenario import Network

TOKEN_BYTES = 4
PROB_BYTES = 64 * 8  # a top-64 sparse draft distribution per proposed token (ids + probabilities)
HEADER_BYTES = 64  # gRPC/HTTP2 framing and the message's fixed fields


def window_bytes(num_tokens: int, with_probs: bool, context_tokens: int = 0) -> int:
    return HEADER_BYTES + TOKEN_BYTES * (num_tokens + context_tokens) + (PROB_BYTES * num_tokens if with_probs else 0)


ANSWER_BYTES = HEADER_BYTES + 8


class Link:
    """One-way delays of messages on one link; `delay_s(now, size)` is the time the message takes."""

    def __init__(self, cfg: Network, rng: random.Random) -> None:
        self._rtt_ms = sampler(cfg.rtt_ms, rng)
        self._rng = rng
        self._jitter_s = cfg.jitter_ms / 1000
        self._s_per_byte = 8 / (cfg.bandwidth_mbps * 1e6) if cfg.bandwidth_mbps > 0 else 0.0
        self._loss, self._rto_s = cfg.loss, cfg.rto_ms / 1000
        self._outages = sorted((o.start_s, o.start_s + o.duration_s) for o in cfg.outages)

    def delay_s(self, now: float, size_bytes: int) -> float:
        d = self._rtt_ms() / 2000 + size_bytes * self._s_per_byte
        if self._jitter_s:
            d = max(0.0, d + self._rng.uniform(-self._jitter_s, self._jitter_s))
        if self._loss:
            while self._rng.random() < self._loss:
                d += self._rto_s
        for start, end in self._outages:  # in flight during an outage: delivered one delay after it ends
            if now < end and now + d > start:
                d += end - now
        return d
