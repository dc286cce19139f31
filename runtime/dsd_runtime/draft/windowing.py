"""The speculation window: static gamma, or adaptive per round from measured acceptance and costs.

Adaptive choice uses dsd_spec (imported, not copied): per-position acceptance, the draft step time, and the
verify round trip as seen from the draft as a function of window size (network + target compute together).
The configuration changes at run time (control RPC, watched config file) without a restart.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from dsd_spec import (
    AcceptanceStats,
    RoundCosts,
    VerifyCostModel,
    WindowBounds,
    choose_gamma,
    draft_ahead_pays,
    survival_probability,
)

POLICIES = ("static", "adaptive")


@dataclass(frozen=True)
class WindowConfig:
    gamma: int = 4
    gamma_min: int = 1
    gamma_max: int = 8
    policy: str = "static"
    pipelined: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.gamma_min <= self.gamma <= self.gamma_max:
            raise ValueError(
                f"need 1 <= gamma_min ({self.gamma_min}) <= gamma ({self.gamma}) <= gamma_max ({self.gamma_max})")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")


class _Ema:
    def __init__(self, weight: float = 0.2) -> None:
        self.weight = weight
        self.value: float | None = None

    def update(self, x: float) -> None:
        self.value = x if self.value is None else (1 - self.weight) * self.value + self.weight * x


class WindowController:
    """Shared by all requests of a draft server: statistics pool across requests."""

    def __init__(self, config: WindowConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self.stats = AcceptanceStats(max_positions=32, decay=0.995)
        self._draft_step = _Ema()
        self._round_trip: dict[int, _Ema] = {}
        self._current = config.gamma

    @property
    def config(self) -> WindowConfig:
        return self._config

    def update(self, **changes: object) -> WindowConfig:
        """Validates and applies a change (from the control RPC or the config file)."""
        with self._lock:
            new = replace(self._config, **changes)  # type: ignore[arg-type]
            self._config = new
            self._current = min(max(self._current, new.gamma_min), new.gamma_max)
            if new.policy == "static":
                self._current = new.gamma
            return new

    def observe(self, gamma: int, num_accepted: int, draft_step_s: float | None, round_trip_s: float) -> None:
        with self._lock:
            self.stats.observe(gamma, num_accepted)
            if draft_step_s is not None:
                self._draft_step.update(draft_step_s)
            self._round_trip.setdefault(gamma + 1, _Ema()).update(round_trip_s)

    def draft_ahead(self, gamma: int) -> bool:
        """Pipelined mode: draft while this round's verify is in flight? (dsd_spec.draft_ahead_pays on the
        measured survival probability, round trip and step time; yes until there are measurements.)"""
        with self._lock:
            wait = self._round_trip.get(gamma + 1)
            if not gamma or self._draft_step.value is None or wait is None or wait.value is None:
                return True
            p = survival_probability(self.stats.alpha_by_position(gamma + 1), gamma)
            return draft_ahead_pays(p, wait.value, gamma, self._draft_step.value)

    def next_gamma(self) -> int:
        with self._lock:
            cfg = self._config
            if cfg.policy == "static":
                self._current = cfg.gamma
                return self._current
            if self._draft_step.value is None or not self._round_trip:  # adaptive, nothing measured yet
                return self._current
            points = tuple(sorted((k, e.value) for k, e in self._round_trip.items() if e.value is not None))
            costs = RoundCosts(self._draft_step.value, VerifyCostModel(points), rtt_s=0.0)
            self._current = choose_gamma(costs, self.stats.alpha_by_position(cfg.gamma_max + 1),
                                         WindowBounds(cfg.gamma_min, cfg.gamma_max), cfg.pipelined,
                                         current=self._current, max_step=1)
            return self._current
