"""Round time and goodput of edge/cloud speculation rounds, blocking or pipelined.

Blocking round: the draft proposes gamma tokens (gamma sequential draft steps), sends them, and waits:
    T_block = gamma * t_d + RTT + t_v(gamma + 1)
where t_v(k) is the target's time to verify k positions (gamma drafts + the bonus position).
Pipelined round: while the verify is in flight the draft keeps proposing as if all will be accepted. The
pre-drafted work survives when every draft token is accepted and the target's bonus token equals the draft's
own next token (probability `p_survive`); then consecutive rounds are spaced by
    T_pipe = max(gamma * t_d, RTT + t_v(gamma + 1))
and otherwise the round costs T_block. Goodput = E[tokens per round] / E[round time].
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from dsd_spec import expectation


@dataclass(frozen=True)
class VerifyCostModel:
    """t_v(k): seconds for the target to verify k positions, interpolated from measured points.

    `points` are (k, seconds) pairs sorted by k; outside the range it extrapolates linearly from the two
    nearest points (and never below the smallest measurement). Verification is not free on a CPU, and not
    linear either, so measurements beat a constant. Verifying fewer positions never costs more, so t_v(k) is
    capped by every measurement at k' >= k: noisy or kernel-dependent timings (this project's 2-core CPU
    measures t_v(4) < t_v(3)) must not make a smaller window look dearer than a larger one.
    """

    points: tuple[tuple[int, float], ...]

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("VerifyCostModel needs at least one (k, seconds) point")
        ks = [k for k, _ in self.points]
        if ks != sorted(ks) or len(set(ks)) != len(ks) or ks[0] < 1:
            raise ValueError(f"points must have strictly increasing k >= 1, got {ks}")
        if any(s < 0 for _, s in self.points):
            raise ValueError("verify times must be >= 0")

    @classmethod
    def affine(cls, base_s: float, per_token_s: float) -> VerifyCostModel:
        return cls(((1, base_s + per_token_s), (2, base_s + 2 * per_token_s)))

    @classmethod
    def constant(cls, seconds: float) -> VerifyCostModel:
        return cls(((1, seconds),))

    def __call__(self, k: int) -> float:
        cap = min((s for kk, s in self.points if kk >= k), default=None)
        value = self._interpolated(k)
        return value if cap is None else min(value, cap)

    def _interpolated(self, k: int) -> float:
        pts = self.points
        if len(pts) == 1:
            return pts[0][1]
        ks = [p[0] for p in pts]
        i = bisect.bisect_left(ks, k)
        if i < len(pts) and ks[i] == k:
            return pts[i][1]
        lo, hi = (pts[0], pts[1]) if i == 0 else (pts[-2], pts[-1]) if i >= len(pts) else (pts[i - 1], pts[i])
        slope = (hi[1] - lo[1]) / (hi[0] - lo[0])
        return max(min(s for _, s in pts), lo[1] + slope * (k - lo[0]))


@dataclass(frozen=True)
class RoundCosts:
    """Costs of one round. `rtt_s` includes serialisation and transfer of the window and the answer."""

    draft_step_s: float
    verify: VerifyCostModel
    rtt_s: float = 0.0

    def blocking_s(self, gamma: int) -> float:
        return gamma * self.draft_step_s + self.rtt_s + self.verify(gamma + 1)

    def pipelined_overlap_s(self, gamma: int) -> float:
        return max(gamma * self.draft_step_s, self.rtt_s + self.verify(gamma + 1))


def survival_probability(alpha_by_position: Sequence[float], gamma: int) -> float:
    """P(all gamma accepted and the bonus equals the draft's next guess) = prod_{i<=gamma+1} alpha_i."""
    p = 1.0
    for i in range(gamma + 1):
        p *= alpha_by_position[min(i, len(alpha_by_position) - 1)]
    return p


def draft_ahead_pays(p_survive: float, wait_s: float, gamma: int, draft_step_s: float) -> bool:
    """Whether drafting during a verify (pipelining) is worth it this round.

    The drafts made while waiting save min(wait, gamma * t_d) of the next round when they survive (probability
    `p_survive`); drafting cannot be interrupted, so the step in progress when the answer lands delays the next
    round by half a step on average, survival or not. Draft ahead only when the expected saving is larger.
    """
    return p_survive * min(wait_s, gamma * draft_step_s) > 0.5 * draft_step_s


def round_time_s(costs: RoundCosts, alpha_by_position: Sequence[float], gamma: int, pipelined: bool) -> float:
    """Expected seconds per round."""
    if gamma == 0 or not pipelined:
        return costs.blocking_s(gamma)
    p = survival_probability(alpha_by_position, gamma)
    return p * costs.pipelined_overlap_s(gamma) + (1.0 - p) * costs.blocking_s(gamma)


def goodput_tokens_per_s(costs: RoundCosts, alpha_by_position: Sequence[float], gamma: int,
                         pipelined: bool = False) -> float:
    """Expected output tokens per second of one request (gamma = 0 means target-only decoding)."""
    tokens = expectation.expected_tokens_per_round(alpha_by_position, gamma) if gamma else 1.0
    return tokens / round_time_s(costs, alpha_by_position, gamma, pipelined)
