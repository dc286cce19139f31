"""Per-position acceptance statistics with exponential forgetting.

alpha_i = P(position i accepted | positions < i accepted). A round with window gamma and n accepted tells us
positions 1..n were accepted and (if n < gamma) position n+1 was rejected; deeper positions are unobserved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class AcceptanceStats:
    """Decayed counts per position; `decay` in (0, 1] weights old rounds by decay^age (1 = no forgetting)."""

    max_positions: int = 32
    decay: float = 0.98
    prior_alpha: float = 0.5
    prior_weight: float = 2.0
    _accepted: list[float] = field(default_factory=list)
    _observed: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")
        self._accepted = [0.0] * self.max_positions
        self._observed = [0.0] * self.max_positions

    def observe(self, gamma: int, num_accepted: int) -> None:
        if not 0 <= num_accepted <= gamma:
            raise ValueError(f"num_accepted {num_accepted} outside [0, {gamma}]")
        if self.decay < 1.0:
            self._accepted = [a * self.decay for a in self._accepted]
            self._observed = [o * self.decay for o in self._observed]
        for i in range(min(num_accepted + 1, gamma, self.max_positions)):
            self._observed[i] += 1.0
            if i < num_accepted:
                self._accepted[i] += 1.0

    def counts(self) -> tuple[list[float], list[float]]:
        """(accepted, observed): the decayed counts per position, what a restart can start from (`restore`)."""
        return list(self._accepted), list(self._observed)

    def restore(self, accepted: Sequence[float], observed: Sequence[float], max_rounds: float) -> None:
        """Starts from saved counts, scaled to weigh at most `max_rounds` rounds, so live rounds soon outweigh
        them when the workload changed."""
        if len(accepted) != len(observed):
            raise ValueError(f"accepted ({len(accepted)}) and observed ({len(observed)}) differ in length")
        for i, (a, o) in enumerate(zip(accepted, observed, strict=True)):
            if not 0.0 <= a <= o:
                raise ValueError(f"position {i + 1}: need 0 <= accepted ({a}) <= observed ({o})")
        n = min(len(observed), self.max_positions)
        scale = min(1.0, max_rounds / observed[0]) if n and observed[0] > 0 else 1.0
        self._accepted = [a * scale for a in accepted[:n]] + [0.0] * (self.max_positions - n)
        self._observed = [o * scale for o in observed[:n]] + [0.0] * (self.max_positions - n)

    def alpha_by_position(self, n: int | None = None) -> list[float]:
        """Smoothed alpha_1..alpha_n (a Beta prior keeps early estimates sane)."""
        n = self.max_positions if n is None else min(n, self.max_positions)
        out: list[float] = []
        for i in range(n):
            prior = out[-1] if out else self.prior_alpha
            a = (self._accepted[i] + prior * self.prior_weight) / (self._observed[i] + self.prior_weight)
            out.append(min(1.0, max(0.0, a)))
        return out

    def mean_alpha(self) -> float:
        obs = sum(self._observed)
        return sum(self._accepted) / obs if obs else self.prior_alpha
