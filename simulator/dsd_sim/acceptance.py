"""How many draft tokens the target accepts in a round: parametric per-position rates or a measured trace."""

from __future__ import annotations

import json
import random

from dsd_sim.scenario import Acceptance
from dsd_spec import survival_probability

MAX_POSITIONS = 33  # gamma <= 32, plus the bonus position of pipelined survival


def alpha_by_position(cfg: Acceptance) -> list[float]:
    """alpha_i for i = 1..MAX_POSITIONS (a trace's last value repeats beyond its length)."""
    if cfg.kind == "parametric":
        return [cfg.alpha * cfg.decay ** i for i in range(MAX_POSITIONS)]
    alphas = list(cfg.alpha_by_position or [])
    if not alphas and cfg.file is not None:
        alphas = [float(a) for a in json.loads(cfg.file.read_text())["alpha_by_position"]]
    if not alphas:
        raise ValueError("acceptance trace has no alpha_by_position")
    return (alphas + [alphas[-1]] * MAX_POSITIONS)[:MAX_POSITIONS]


class AcceptanceModel:
    def __init__(self, alphas: list[float], rng: random.Random) -> None:
        self.alphas = alphas
        self._random = rng.random
        # survival[gamma]: P(all gamma accepted and the bonus matches), precomputed off the per-round path
        self.survival = [survival_probability(alphas, g) for g in range(MAX_POSITIONS)]

    def accepted(self, gamma: int) -> tuple[int, bool]:
        """(accepted count, whether the bonus token equals the draft's next guess: pipelined survival)."""
        n, alphas, draw = 0, self.alphas, self._random
        while n < gamma and draw() < alphas[n]:
            n += 1
        return n, n == gamma and draw() < alphas[n]
