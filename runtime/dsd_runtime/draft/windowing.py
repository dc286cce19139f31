"""The speculation window: static gamma, or adaptive per round from measured acceptance and costs.

Adaptive choice uses dsd_spec (imported, not copied): per-position acceptance, the draft step time, and the
verify round trip as seen from the draft as a function of window size (network + target compute together).
The configuration changes at run time (control RPC, watched config file) without a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from dsd_spec import EstimatorSnapshot, VerifyCostModel, WindowBounds, WindowEstimator

POLICIES = ("static", "adaptive")
PROPOSERS = ("model", "lookup", "suffix", "hybrid", "none")  # see draft.drafting
MODES = ("speculate", "off")  # off: every request decodes target-only (the operator's loop sets it)


@dataclass(frozen=True)
class WindowConfig:
    gamma: int = 4
    gamma_min: int = 1
    gamma_max: int = 16  # also caps model-free windows: on a CPU t_v(17) is barely t_v(9) (bench/drafting_bench.py)
    policy: str = "static"
    pipelined: bool = True
    proposer: str = "model"
    mode: str = "speculate"

    def __post_init__(self) -> None:
        if not 1 <= self.gamma_min <= self.gamma <= self.gamma_max:
            raise ValueError(
                f"need 1 <= gamma_min ({self.gamma_min}) <= gamma ({self.gamma}) <= gamma_max ({self.gamma_max})")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.proposer not in PROPOSERS:
            raise ValueError(f"proposer must be one of {PROPOSERS}, got {self.proposer!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


class WindowController:
    """Shared by all requests of a draft server: statistics pool across requests."""

    def __init__(self, config: WindowConfig, has_model: bool = True) -> None:
        self.has_model = has_model  # False: a draft server without a draft model refuses proposer "model"
        self._check(config)
        self._config = config
        self._lock = threading.Lock()
        self.estimator = WindowEstimator()
        self._current = config.gamma
        self.on_change: Callable[[WindowConfig], None] | None = None  # e.g. to publish the new window as a metric

    @property
    def config(self) -> WindowConfig:
        return self._config

    def update(self, **changes: object) -> WindowConfig:
        """Validates and applies a change (from the control RPC or the config file)."""
        with self._lock:
            new = replace(self._config, **changes)  # type: ignore[arg-type]
            self._check(new)
            self._config = new
            self._current = min(max(self._current, new.gamma_min), new.gamma_max)
            if new.policy == "static":
                self._current = new.gamma
        if self.on_change is not None:
            self.on_change(new)
        return new

    def _check(self, config: WindowConfig) -> None:
        if config.proposer == "model" and not self.has_model:
            raise ValueError("proposer 'model' needs a draft model, and this draft server has none (--model none)")

    def observe(self, gamma: int, num_accepted: int, draft_step_s: float | None, round_trip_s: float) -> None:
        with self._lock:
            self.estimator.observe(gamma, num_accepted, draft_step_s, round_trip_s)

    def observe_wait(self, positions: int, wait_s: float) -> None:
        """A round drafted by a model-free proposer (or empty): its wait teaches the verify-cost curve."""
        with self._lock:
            self.estimator.observe_wait(positions, wait_s)

    def observe_price(self, position_price_s: float) -> None:
        """The target's latest position price (VerifyResponse.position_price_seconds), shared by all requests."""
        with self._lock:
            self.estimator.observe_price(position_price_s)

    def snapshot(self) -> EstimatorSnapshot:
        with self._lock:
            return self.estimator.snapshot()

    def restore(self, snapshot: EstimatorSnapshot, max_rounds: float) -> None:
        """Starts from an earlier run's measurements (draft.persisting)."""
        with self._lock:
            self.estimator.restore(snapshot, max_rounds)

    def wait_model(self) -> VerifyCostModel | None:
        with self._lock:
            return self.estimator.wait_model()

    def goodput(self, gamma: int) -> float | None:
        """Expected tokens/s of a model-drafted window of `gamma` (None until measured)."""
        with self._lock:
            return self.estimator.goodput(gamma, self._config.pipelined)

    def draft_ahead(self, gamma: int) -> bool:
        """Pipelined mode: draft while this round's verify is in flight? (dsd_spec.draft_ahead_pays)"""
        with self._lock:
            return self.estimator.draft_ahead(gamma)

    def next_gamma(self) -> int:
        with self._lock:
            cfg = self._config
            if cfg.policy == "static":
                self._current = cfg.gamma
                return self._current
            self._current = self.estimator.best_gamma(WindowBounds(cfg.gamma_min, cfg.gamma_max), cfg.pipelined,
                                                      self._current)
            return self._current
