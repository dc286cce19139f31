"""What moving drafting off a saturated target buys ("Speculation at a Distance", arXiv 2606.25091).

Co-located, each round occupies the target for gamma * t_d + t_v(gamma+1); with drafts on the edge only
t_v(gamma+1). At saturation the number of clients served scales with the inverse.
"""

from __future__ import annotations

from dsd_spec.costs import VerifyCostModel


def offload_capacity_gain(gamma: int, draft_step_s: float, verify: VerifyCostModel) -> float:
    """Clients sustained with offloaded drafting / clients sustained co-located (= 1 + gamma*t_d/t_v)."""
    t_v = verify(gamma + 1)
    if t_v <= 0:
        raise ValueError("verify time must be positive")
    return (gamma * draft_step_s + t_v) / t_v
