"""Choosing the speculation window gamma that maximises expected goodput.

Used per round by the runtime's adaptive window, by the simulator's gamma policies and (as bounds) by the
operator. Tuning on acceptance alone fails; goodput accounts for draft, verify and network costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dsd_spec import costs as costs_mod
from dsd_spec.acceptance import AcceptanceStats


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


def best_prefix(confidence: Sequence[float], calibration: float, wait: costs_mod.VerifyCostModel,
                propose_s: float = 0.0) -> tuple[int, float]:
    """How many tokens of a model-free candidate to send, and the goodput that gives (tokens/s).

    `confidence[i]`: the candidate's own P(token i | tokens < i); times `calibration` (measured acceptance over
    predicted, for this proposer) it is alpha_i. `wait(k)`: measured send-to-answer time for k positions.
    k = 0 sends nothing (the target decodes one token): the round pays only when E(k) / wait(k + 1) beats
    1 / wait(1), which on a CPU, where verifying more positions costs more, often it does not.
    """
    best_k, best = 0, 1.0 / (propose_s + wait(1))
    tokens, survive = 1.0, 1.0
    for k, c in enumerate(confidence, start=1):
        survive *= min(1.0, max(0.0, calibration * c))
        tokens += survive
        value = tokens / (propose_s + wait(k + 1))
        if value > best:
            best_k, best = k, value
    return best_k, best


def priced_wait(wait_s: float, positions: int, position_price_s: float) -> float:
    """A round's wait as the whole target pays it: the session's own wait plus, per position beyond the first,
    what that position costs the other sessions in the pass (position_price_s = marginal pass seconds per
    token x other sessions per pass).

    Why beyond the first: with B sessions decoding one token each per pass of t seconds, one session's window of
    k proposals makes every pass k * s slower (s: marginal seconds per token) and yields E(k) tokens instead of
    1, so the target's total rate grows iff (E(k) - 1) * t > B * s * k. Charging the session's own wait
    t + k * s an extra (B - 1) * s * k gives E(k) / (t + B * s * k) > 1 / t: the same condition.
    """
    return wait_s + position_price_s * max(0, positions - 1)


class Ema:
    """Exponential moving average; `value` is None until the first sample."""

    __slots__ = ("value", "weight")

    def __init__(self, weight: float = 0.2) -> None:
        self.weight = weight
        self.value: float | None = None

    def update(self, x: float) -> None:
        self.value = x if self.value is None else (1 - self.weight) * self.value + self.weight * x


@dataclass(frozen=True)
class EstimatorSnapshot:
    """What a WindowEstimator measured, in plain numbers: kept across restarts by the runtime."""

    accepted: tuple[float, ...]  # decayed counts per position (AcceptanceStats)
    observed: tuple[float, ...]
    step_s: float | None  # the draft model's step
    wait_s: dict[int, float]  # positions verified -> smoothed wait


class WindowEstimator:
    """What a draft has measured, and the window decisions that follow from it.

    Shared by the runtime's WindowController (under its lock) and DSD-Sim's window policies, so both decide
    alike: per-position acceptance, the draft step time, and the send-to-answer wait (network + queueing + verify)
    per number of positions verified. Waits are known only for windows already used, hence `max_step=1`.

    A target that packs many sessions into each forward pass also reports a position price: what one more
    position in its passes costs the sessions sharing them. Every position beyond the first is charged that
    price, so a window pays only when it beats the target decoding one token for everyone, not just for this
    session (see `priced_wait`).
    """

    def __init__(self, max_positions: int = 33, decay: float = 0.995) -> None:
        self.acceptance = AcceptanceStats(max_positions=max_positions, decay=decay)
        self.step_s = Ema()
        self.wait_s: dict[int, Ema] = {}  # positions verified (gamma + 1) -> smoothed wait
        self.position_price_s = 0.0  # the target's latest report; 0 when it serves this session alone

    def observe(self, gamma: int, num_accepted: int, step_s: float | None, wait_s: float) -> None:
        self.acceptance.observe(gamma, num_accepted)
        if step_s is not None:
            self.step_s.update(step_s)
        self.observe_wait(gamma + 1, wait_s)

    def observe_wait(self, positions: int, wait_s: float) -> None:
        """A round whose window came from elsewhere (a model-free proposer, or none): only its wait."""
        ema = self.wait_s.get(positions)
        if ema is None:
            ema = self.wait_s[positions] = Ema()
        ema.update(wait_s)

    def observe_price(self, position_price_s: float) -> None:
        self.position_price_s = max(0.0, position_price_s)

    def snapshot(self) -> EstimatorSnapshot:
        """The measurements, without the target's position price (a live report, not a property of the pair)."""
        accepted, observed = self.acceptance.counts()
        return EstimatorSnapshot(tuple(accepted), tuple(observed), self.step_s.value,
                                 {k: e.value for k, e in sorted(self.wait_s.items()) if e.value is not None})

    def restore(self, snapshot: EstimatorSnapshot, max_rounds: float) -> None:
        """Starts from an earlier run's measurements: decisions need no trial rounds, and live rounds take over
        (the acceptance counts weigh at most `max_rounds` rounds; the smoothed times follow new samples)."""
        for positions, wait in snapshot.wait_s.items():
            if positions < 1 or not wait > 0:
                raise ValueError(f"wait for {positions} positions must be > 0 s, got {wait}")
        if snapshot.step_s is not None and not snapshot.step_s > 0:
            raise ValueError(f"draft step must be > 0 s, got {snapshot.step_s}")
        self.acceptance.restore(snapshot.accepted, snapshot.observed, max_rounds)
        self.step_s.value = snapshot.step_s
        self.wait_s = {}
        for positions, wait in snapshot.wait_s.items():
            self.wait_s[positions] = Ema()
            self.wait_s[positions].value = wait

    def wait_model(self) -> costs_mod.VerifyCostModel | None:
        """The measured wait per positions verified, each position beyond the first charged the price."""
        points = tuple(sorted((k, priced_wait(e.value, k, self.position_price_s))
                              for k, e in self.wait_s.items() if e.value is not None))
        return costs_mod.VerifyCostModel(points) if points else None

    def goodput(self, gamma: int, pipelined: bool) -> float | None:
        """Expected tokens/s of drafting `gamma` tokens with the model; None until measured."""
        wait = self.wait_model()
        if wait is None or self.step_s.value is None or (gamma + 1) not in self.wait_s:
            return None
        costs = costs_mod.RoundCosts(self.step_s.value, wait, 0.0)
        return costs_mod.goodput_tokens_per_s(costs, self.acceptance.alpha_by_position(gamma + 1), gamma, pipelined)

    def best_gamma(self, bounds: WindowBounds, pipelined: bool, current: int) -> int:
        """The goodput-optimal window within one step of `current`; `current` until something is measured."""
        wait = self.wait_model()
        if self.step_s.value is None or wait is None:
            return current
        costs = costs_mod.RoundCosts(self.step_s.value, wait, 0.0)
        alphas = self.acceptance.alpha_by_position(bounds.gamma_max + 1)
        return choose_gamma(costs, alphas, bounds, pipelined, current, max_step=1)

    def draft_ahead(self, gamma: int) -> bool:
        """Pipelining: draft while this window's verify is in flight? Yes until there are measurements."""
        wait = self.wait_s.get(gamma + 1)
        if not gamma or self.step_s.value is None or wait is None or wait.value is None:
            return True
        p = costs_mod.survival_probability(self.acceptance.alpha_by_position(gamma + 1), gamma)
        return costs_mod.draft_ahead_pays(p, wait.value, gamma, self.step_s.value)
