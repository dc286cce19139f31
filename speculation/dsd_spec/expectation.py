"""Expected tokens per speculation round and the co-located walltime factor.

Leviathan et al. 2023 (https://arxiv.org/abs/2211.17192): with i.i.d. acceptance alpha and window gamma,
E[tokens per round] = (1 - alpha^(gamma+1)) / (1 - alpha) (their eq. 1); the walltime factor against the
target decoding alone, when drafting costs c target steps per token, is E / (gamma*c + 1) (Theorem 3.8).
"""

from __future__ import annotations

from collections.abc import Sequence


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def expected_tokens_iid(alpha: float, gamma: int) -> float:
    """E[tokens per round] for i.i.d. acceptance `alpha` and window `gamma` (accepted + 1)."""
    _check_alpha(alpha)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if alpha == 1.0:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def expected_tokens_per_round(alpha_by_position: Sequence[float], gamma: int) -> float:
    """E[tokens per round] = 1 + sum_{i=1..gamma} prod_{j<=i} alpha_j, from per-position acceptance.

    `alpha_by_position[i-1]` is alpha_i, the acceptance of position i given 1..i-1 were accepted. Positions
    beyond the list reuse its last value (an unobserved deeper position is assumed no better than the last).
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if gamma > 0 and not alpha_by_position:
        raise ValueError("alpha_by_position is empty")
    total, survive = 1.0, 1.0
    for i in range(gamma):
        a = alpha_by_position[min(i, len(alpha_by_position) - 1)]
        _check_alpha(a)
        survive *= a
        total += survive
    return total


def walltime_factor_colocated(alpha: float, gamma: int, c: float) -> float:
    """Speedup over target-only decoding, blocking and co-located; c = draft step / target step."""
    if c < 0:
        raise ValueError(f"c must be >= 0, got {c}")
    return expected_tokens_iid(alpha, gamma) / (gamma * c + 1.0)


def optimal_gamma_colocated(alpha: float, c: float, gamma_max: int = 16) -> tuple[int, float]:
    """(gamma, factor) maximising `walltime_factor_colocated` over 1..gamma_max."""
    best = max(range(1, gamma_max + 1), key=lambda g: walltime_factor_colocated(alpha, g, c))
    return best, walltime_factor_colocated(alpha, best, c)
