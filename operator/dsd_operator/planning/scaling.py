"""Replica decisions per role against spec.slo, within spec.<role>.autoscaling.

Target: the measured latency (TPOT and TTFT P95, whichever is further over its SLO) at the measured per-replica
utilisation u = L / N (L: target compute seconds per second, all replicas) is split into a load-free part,
latency * (1 - u), inflated by queueing as latency(n) = base / (1 - L / n) for n replicas. Scale up to the fewest
replicas predicted to meet the SLO; scale down one replica at a time, and only when N - 1 replicas are predicted
to meet it with 20 % headroom (the N/(N-1) check), so a scale-down never triggers the next scale-up.
Drafts: Little's law on concurrent requests, `requestsPerReplica` each.
Never while a previous change is rolling out, never within the cooldown, never below minReplicas (>= 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dsd_operator.api import v1alpha1 as api
from dsd_operator.planning.signals import Signals

HEADROOM = 0.8  # a scale-down must leave the SLO this far in reach
MAX_UTILIZATION = 0.95


class Why:
    IN_PROGRESS = "ScaleInProgress"
    COOLDOWN = "Cooldown"
    BOUNDS = "OutsideBounds"
    NO_SLO = "NoSlo"
    UP = "SloViolated"
    DOWN = "CapacityToSpare"
    WITHIN = "WithinSlo"
    AT_MAX = "AtMaxReplicas"
    NOT_THE_TARGET = "TargetNotTheBottleneck"
    LOAD = "LoadPerReplica"


@dataclass(frozen=True)
class Scale:
    replicas: int
    reason: str
    message: str

    def changes(self, current: int) -> bool:
        return self.replicas != current


@dataclass(frozen=True)
class RoleState:
    current: int  # the scaler's replicas
    settled: bool  # the Deployment has as many ready, updated pods as it wants
    since_last_scale_s: float | None  # None: the loop never scaled this role


def _guard(bounds: api.Autoscaling, state: RoleState, cooldown_s: int) -> Scale | None:
    lo, hi = bounds.min_replicas, bounds.max_replicas
    if not state.settled:
        return Scale(state.current, Why.IN_PROGRESS, "waiting for the previous change to roll out")
    if not lo <= state.current <= hi:
        n = min(max(state.current, lo), hi)
        return Scale(n, Why.BOUNDS, f"{state.current} replicas outside autoscaling [{lo}, {hi}]")
    if state.since_last_scale_s is not None and state.since_last_scale_s < cooldown_s:
        return Scale(state.current, Why.COOLDOWN, f"last change {state.since_last_scale_s:.0f} s ago "
                                                  f"(scaleCooldownSeconds {cooldown_s})")
    return None


def _worst_latency(slo: api.Slo, signals: Signals) -> tuple[float, str] | None:
    """(observed / SLO, what) of the latency furthest over (or closest to) its objective."""
    ratios = []
    if slo.tpot_ms is not None and signals.tpot_p95_s is not None:
        ratios.append((1e3 * signals.tpot_p95_s / slo.tpot_ms, f"TPOT P95 {1e3 * signals.tpot_p95_s:.0f} ms "
                                                               f"(SLO {slo.tpot_ms} ms)"))
    if slo.ttft_ms is not None and signals.ttft_p95_s is not None:
        ratios.append((1e3 * signals.ttft_p95_s / slo.ttft_ms, f"TTFT P95 {1e3 * signals.ttft_p95_s:.0f} ms "
                                                               f"(SLO {slo.ttft_ms} ms)"))
    return max(ratios) if ratios else None


def predicted_ratio(ratio: float, load: float, current: int, replicas: int) -> float:
    """latency(replicas) / SLO from latency(current) / SLO under the queueing model above."""
    u_now = min(load / current, MAX_UTILIZATION)
    u_new = load / replicas
    if u_new >= 1.0:
        return math.inf
    return ratio * (1.0 - u_now) / (1.0 - u_new)


def target(spec: api.DSDDeploymentSpec, signals: Signals, state: RoleState) -> Scale | None:
    bounds = spec.target.autoscaling
    if bounds is None:
        return None
    if (guard := _guard(bounds, state, spec.autotune.scale_cooldown_seconds)) is not None:
        return guard
    n, lo, hi = state.current, bounds.min_replicas, bounds.max_replicas
    if spec.slo.tpot_ms is None and spec.slo.ttft_ms is None:
        return Scale(n, Why.NO_SLO, "spec.slo sets neither tpotMs nor ttftMs")
    load = signals.target_busy
    worst = _worst_latency(spec.slo, signals)
    if worst is None or not signals.has_traffic:  # no requests: nothing queues, one replica fewer is fine
        if n > lo:
            return Scale(n - 1, Why.DOWN, "no traffic in the rate window")
        return Scale(n, Why.WITHIN, "no traffic in the rate window")
    ratio, what = worst
    util = f"utilisation {load / n:.2f} per replica"
    if ratio > 1.0:
        if n >= hi:
            return Scale(n, Why.AT_MAX, f"{what}, {util}: already at maxReplicas {hi}")
        wanted = next((m for m in range(n + 1, hi + 1) if predicted_ratio(ratio, load, n, m) <= 1.0), hi)
        if predicted_ratio(ratio, load, n, n + 1) > 0.9 * ratio:
            return Scale(n, Why.NOT_THE_TARGET, f"{what}, {util}: more target replicas would not help")
        return Scale(wanted, Why.UP, f"{what}, {util}: {wanted} replicas predicted to meet it")
    if n > lo and predicted_ratio(ratio, load, n, n - 1) <= HEADROOM:
        return Scale(n - 1, Why.DOWN, f"{what}, {util}: {n - 1} replicas predicted to meet it with headroom")
    return Scale(n, Why.WITHIN, f"{what}, {util}")


def draft(spec: api.DSDDeploymentSpec, signals: Signals, state: RoleState) -> Scale | None:
    bounds = spec.draft.autoscaling
    if bounds is None:
        return None
    if (guard := _guard(bounds, state, spec.autotune.scale_cooldown_seconds)) is not None:
        return guard
    n, per = state.current, bounds.requests_per_replica
    active = signals.active_requests
    needed = min(max(math.ceil(active / per), bounds.min_replicas), bounds.max_replicas)
    what = f"{active:.1f} concurrent requests, {per} per replica"
    if needed > n:
        return Scale(needed, Why.UP, f"{what}: {needed} replicas")
    if n > bounds.min_replicas and active <= HEADROOM * per * (n - 1):
        return Scale(n - 1, Why.DOWN, f"{what}: {n - 1} replicas carry it with headroom")
    return Scale(n, Why.LOAD, what)
