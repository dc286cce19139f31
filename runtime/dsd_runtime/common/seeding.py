"""Per-position randomness shared by draft and target.

Each random draw is keyed by (request seed, absolute position, role), never by a stream's history, so a
request is reproducible under its seed across re-prefills, target restarts, re-routing, and pipelined vs
blocking rounds.
"""

from __future__ import annotations

import hashlib

import torch


def position_generator(seed: int, position: int, role: str) -> torch.Generator:
    digest = hashlib.blake2b(f"{seed}:{position}:{role}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
