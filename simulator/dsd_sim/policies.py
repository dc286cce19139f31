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
from dsd_spec import WindowBounds, WindowEstimator


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


class WindowPolicy:
    """Per-draft gamma. One instance per draft device (adaptive state is per draft)."""

    def __init__(self, cfg: Gamma, pipelined: bool, shared: WindowEstimator) -> None:
        self.cfg, self.pipelined = cfg, pipelined
        self.bounds = WindowBounds(cfg.min, cfg.max)
        self.gamma = cfg.value
        self.shared = shared  # analytic: pooled statistics of all drafts
        self.own = WindowEstimator() if cfg.policy == "adaptive" else None
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
