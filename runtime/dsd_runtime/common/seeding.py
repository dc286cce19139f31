"""Per-position randomness shared by draft and target.

Each random draw is keyed by (request seed, absolute position, role), never by a stream's history, so a
request is reproducible under its seed across re-prefills, target restarts, re-routing, windows and
pipelined vs blocking rounds. `gumbel_noise` is the coupled sampling's noise: the draft and the target draw
the same G_k for position k (role "coupled"), which makes the output independent of the drafts.
"""

from __future__ import annotations

import hashlib

import torch

_TINY = 1e-300  # keeps -log(-log(u)) finite: u = 0 has probability ~2^-53 but must not give inf


def position_generator(seed: int, position: int, role: str) -> torch.Generator:
    digest = hashlib.blake2b(f"{seed}:{position}:{role}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


def gumbel_noise(seed: int, first_position: int, count: int, vocab_size: int) -> torch.Tensor:
    """Standard Gumbel noise for positions first_position .. first_position+count-1: [count, vocab] float64.

    Bit-identical in every process (CPU generator, float64), which is what lets draft and target agree.
    """
    rows = []
    for k in range(first_position, first_position + count):
        u = torch.rand(vocab_size, generator=position_generator(seed, k, "coupled"), dtype=torch.float64)
        rows.append(-torch.log(-torch.log(u.clamp_(min=_TINY))))
    return torch.stack(rows) if rows else torch.empty(0, vocab_size, dtype=torch.float64)
