"""Choosing the speculation window gamma that maximises expected goodput.

Used per round by the runtime's adaptive window, by the simulator's gamma policies and (as bounds) by the
operator. Tuning on acceptance alone fails; goodput accounts for draft, verify and network costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dsd_spec import costs as costs_mod


@dataclass(frozen=True)
class WindowBounds:
    gamma_min: int
    gamma_max: int

    def __post_init__(self) -> None:
        if not 1 <= self.gamma_min <= self.gamma_max:
            raise ValueError(f"need 1 <= gamma_min <= gamma_max, got {self.gamma_min}, {self.gamma_max}")

    def clamp(self, gamma: int) -> int:
        return max(self.gamma_min, min(self.gamma_max, gamma))


def choose_gamma(costs: costs_mod.RoundCosts, alpha_by_position: Sequence[float], bounds: WindowBounds,
                 pipelined: bool = False, current: int | None = None, hysteresis: float = 0.02,
                 max_step: int | None = None) -> int:
    """The gamma in bounds with the highest expected goodput.

    `hysteresis`: keep `current` unless another gamma is better by more than this fraction, so noise in
    the measured costs does not flip the window every round. `max_step`: move at most this far from `current`
    per decision (a trust region): verify costs are measured only for windows already used, so a far jump
    relies on extrapolation; small steps measure each window before going further.
    """
    def score(g: int) -> float:
        return costs_mod.goodput_tokens_per_s(costs, alpha_by_position, g, pipelined)

    low, high = bounds.gamma_min, bounds.gamma_max
    if max_step is not None and current is not None:
        low, high = max(low, current - max_step), min(high, current + max_step)
    best = max(range(low, high + 1), key=score) if low <= high else bounds.clamp(current or low)
    in_bounds = current is not None and bounds.gamma_min <= current <= bounds.gamma_max
    if in_bounds and score(best) <= score(current) * (1.0 + hysteresis):  # type: ignore[arg-type]
        return current  # type: ignore[return-value]
    return best
