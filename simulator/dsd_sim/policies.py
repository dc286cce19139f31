"""Decisions: which target a session goes to (routing) and which gamma a draft uses (window policies).

The window policies use dsd_spec (the same math as the runtime's adaptive window and the operator): `static`
keeps gamma, `analytic` re-chooses one gamma for all drafts at an interval from the statistics observed so far,
`adaptive` lets each draft re-choose from its own recent rounds (the runtime's behaviour).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from typing import Protocol

from dsd_sim.scenario import Gamma
from dsd_spec import AcceptanceStats, RoundCosts, VerifyCostModel, WindowBounds, choose_gamma


class Routable(Protocol):
    def load(self) -> int: ...


def router(kind: str, targets: Sequence[Routable], rng: random.Random) -> Callable[[], int]:
    """A callable returning the index of the target a new session goes to."""
    n = len(targets)
    if kind == "random":
        return lambda: rng.randrange(n)
    if kind == "round_robin":
        cycle = itertools.cycle(range(n))
        return lambda: next(cycle)
    return lambda: min(range(n), key=lambda i: targets[i].load())  # join the shortest queue


class _Ema:
    __slots__ = ("value", "weight")

    def __init__(self, weight: float = 0.2) -> None:
        self.weight, self.value = weight, 0.0

    def update(self, x: float) -> None:
        self.value = x if self.value == 0.0 else (1 - self.weight) * self.value + self.weight * x


class WindowState:
    """Statistics a window policy learns from, as the runtime's WindowController keeps them: acceptance per
    position, draft step time, and the send-to-answer time (network + queueing + verify) per window size."""

    def __init__(self) -> None:
        self.acceptance = AcceptanceStats(max_positions=33, decay=0.995)
        self.wait_s: dict[int, _Ema] = {}  # positions verified (gamma + 1) -> smoothed wait
        self.step_s = _Ema()

    def observe(self, gamma: int, accepted: int, step_s: float, wait_s: float) -> None:
        self.acceptance.observe(gamma, accepted)
        self.step_s.update(step_s)
        ema = self.wait_s.get(gamma + 1)
        if ema is None:
            ema = self.wait_s[gamma + 1] = _Ema()
        ema.update(wait_s)

    def best_gamma(self, bounds: WindowBounds, pipelined: bool, current: int) -> int:
        if not self.wait_s:
            return current
        points = tuple(sorted((k, e.value) for k, e in self.wait_s.items()))
        costs = RoundCosts(self.step_s.value, VerifyCostModel(points), 0.0)
        alphas = self.acceptance.alpha_by_position(bounds.gamma_max + 1)
        return choose_gamma(costs, alphas, bounds, pipelined, current, max_step=1)  # as the runtime does


class WindowPolicy:
    """Per-draft gamma. One instance per draft device (adaptive state is per draft)."""

    def __init__(self, cfg: Gamma, pipelined: bool, shared: WindowState) -> None:
        self.cfg, self.pipelined = cfg, pipelined
        self.bounds = WindowBounds(cfg.min, cfg.max)
        self.gamma = cfg.value
        self.shared = shared  # analytic: pooled statistics of all drafts
        self.own = WindowState() if cfg.policy == "adaptive" else None
        self._rounds = 0

    def observe(self, gamma: int, accepted: int, step_s: float, wait_s: float) -> None:
        if self.cfg.policy == "static":
            return
        if self.own is not None:
            self.own.observe(gamma, accepted, step_s, wait_s)
            self._rounds += 1
            if self._rounds % self.cfg.update_every_rounds == 0:
                self.gamma = self.own.best_gamma(self.bounds, self.pipelined, self.gamma)
        else:
            self.shared.observe(gamma, accepted, step_s, wait_s)
