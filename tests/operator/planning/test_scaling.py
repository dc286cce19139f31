"""Replica decisions: SLO-driven target scaling with the N/(N-1) check, draft queueing, guards and bounds."""

from __future__ import annotations

from typing import Any

import pytest

from dsd_operator.api import v1alpha1 as api
from dsd_operator.planning import scaling
from dsd_operator.planning.signals import Signals


def _spec(tpot_ms: int | None = 100, lo: int = 1, hi: int = 4, **draft: Any) -> api.DSDDeploymentSpec:
    return api.DSDDeploymentSpec.model_validate({
        "target": {"model": {"uri": "builtin:x"}, "autoscaling": {"minReplicas": lo, "maxReplicas": hi}},
        "draft": {"autoscaling": {"minReplicas": 1, "maxReplicas": 4, "requestsPerReplica": 4, **draft}},
        "slo": {"tpotMs": tpot_ms} if tpot_ms else {}, "autotune": {"scaleCooldownSeconds": 120}})


def _signals(tpot_ms: float, busy: float, targets: int = 1, active: float = 2.0, tokens: float = 20.0) -> Signals:
    return Signals(sampled_at="t", targets_up=targets, drafts_up=1, tokens_per_s=tokens, tpot_p95_s=tpot_ms / 1e3,
                   target_busy=busy, active_requests=active)


SETTLED = scaling.RoleState(current=1, settled=True, since_last_scale_s=None)


@pytest.mark.parametrize(("tpot_ms", "busy", "current", "replicas", "reason"), [
    (250, 0.9, 1, 2, "SloViolated"),  # busy target over its SLO: the fewest replicas predicted to meet it
    (900, 1.5, 1, 3, "SloViolated"),  # saturated: utilisation counts the queue it cannot serve
    (250, 0.1, 1, 1, "TargetNotTheBottleneck"),  # slow but idle: the network or the draft, not the target
    (250, 1.8, 4, 4, "AtMaxReplicas"),
    (90, 0.9, 2, 2, "WithinSlo"),  # one fewer would break the SLO (the N/(N-1) check)
    (40, 0.4, 2, 1, "CapacityToSpare"),  # one fewer still meets it with headroom
    (40, 0.2, 1, 1, "WithinSlo"),  # never below minReplicas
])
def test_target_replicas_against_the_slo(tpot_ms, busy, current, replicas, reason):
    state = scaling.RoleState(current, True, None)
    d = scaling.target(_spec(), _signals(tpot_ms, busy, targets=current), state)
    assert d is not None and (d.replicas, d.reason) == (replicas, reason)


def test_scaling_down_never_triggers_the_next_scale_up():
    spec, state = _spec(), scaling.RoleState(2, True, None)
    d = scaling.target(spec, _signals(40, 0.4, targets=2), state)
    assert d is not None and d.replicas == 1
    ratio_after = scaling.predicted_ratio(0.4, 0.4, 2, 1)
    assert ratio_after <= scaling.HEADROOM < 1.0


@pytest.mark.parametrize(("state", "reason"), [
    (scaling.RoleState(1, False, None), "ScaleInProgress"),
    (scaling.RoleState(1, True, 30.0), "Cooldown"),
])
def test_no_change_while_a_scale_rolls_out_or_within_the_cooldown(state, reason):
    d = scaling.target(_spec(), _signals(500, 0.9), state)
    assert d is not None and (d.replicas, d.reason) == (1, reason)


def test_replicas_outside_the_bounds_are_brought_inside():
    d = scaling.target(_spec(lo=2, hi=3), _signals(50, 0.2), SETTLED)
    assert d is not None and (d.replicas, d.reason) == (2, "OutsideBounds")


def test_no_slo_no_scaling_and_no_traffic_scales_down_one_step():
    assert scaling.target(_spec(tpot_ms=None), _signals(500, 0.9), SETTLED).reason == "NoSlo"  # type: ignore[union-attr]
    idle = _signals(0, 0.0, targets=3, tokens=0.0)
    d = scaling.target(_spec(), idle, scaling.RoleState(3, True, None))
    assert d is not None and d.replicas == 2


def test_no_autoscaling_means_no_decision():
    spec = api.DSDDeploymentSpec.model_validate({"target": {"model": {"uri": "builtin:x"}}})
    assert scaling.target(spec, _signals(500, 0.9), SETTLED) is None
    assert scaling.draft(spec, _signals(500, 0.9), SETTLED) is None


@pytest.mark.parametrize(("active", "current", "replicas"), [
    (9.0, 1, 3),  # 9 requests / 4 per replica
    (2.0, 3, 2),  # carried by 2 with headroom: one step down
    (7.0, 2, 2),  # 1 replica would carry 7 > 0.8 * 4: stay
    (0.0, 1, 1),
])
def test_draft_replicas_follow_concurrency(active, current, replicas):
    d = scaling.draft(_spec(), _signals(50, 0.5, active=active), scaling.RoleState(current, True, None))
    assert d is not None and d.replicas == replicas
