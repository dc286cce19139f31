"""Samplers for the scenario's distributions, drawing from one seeded `random.Random` (determinism)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from dsd_sim.scenario import Dist


def sampler(dist: Dist, rng: random.Random) -> Callable[[], float]:
    """A zero-argument callable returning non-negative samples (chosen once: no dispatch per draw)."""
    mean, std = dist.mean, dist.std
    if dist.kind == "constant" or (dist.kind in ("normal", "lognormal") and std == 0):
        return lambda: mean
    if dist.kind == "normal":
        return lambda: max(0.0, rng.gauss(mean, std))
    if dist.kind == "lognormal":  # parametrised by the mean and std of the variable itself
        sigma2 = math.log(1.0 + (std / mean) ** 2) if mean > 0 else 0.0
        mu, sigma = (math.log(mean) - sigma2 / 2 if mean > 0 else 0.0), math.sqrt(sigma2)
        return lambda: rng.lognormvariate(mu, sigma)
    if dist.kind == "uniform":
        low, high = float(dist.low or 0.0), float(dist.high or 0.0)
        return lambda: rng.uniform(low, high)
    if mean == 0:  # exponential with mean 0
        return lambda: 0.0
    rate = 1.0 / mean
    return lambda: rng.expovariate(rate)


def int_sampler(dist: Dist, rng: random.Random) -> Callable[[], int]:
    draw = sampler(dist, rng)
    return lambda: max(1, round(draw()))
