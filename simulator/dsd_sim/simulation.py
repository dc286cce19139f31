"""Builds a simulated deployment from a scenario, runs it to completion and returns its statistics.

Arrivals stop at `duration_s`; requests in flight then run to their end, so every measured request completes.
One seeded `random.Random` drives every draw and simpy orders simultaneous events deterministically, so a
scenario and seed give the same result on every run.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import simpy

from dsd_sim import acceptance, processes
from dsd_sim.entities import DraftDevice, Target
from dsd_sim.metrics import Metrics
from dsd_sim.network import Link
from dsd_sim.policies import WindowPolicy, router
from dsd_sim.randomness import int_sampler, sampler
from dsd_sim.scenario import Acceptance, Profile, Scenario, SelfDrafting
from dsd_spec import VerifyCostModel, WindowEstimator


@dataclass
class Result:
    scenario: Scenario
    metrics: Metrics
    wall_s: float

    def summary(self) -> dict[str, Any]:
        s = self.scenario
        return {"name": s.name, "mode": s.mode, "seed": s.seed, "wall_s": round(self.wall_s, 3),
                **self.metrics.summary()}


def verify_model(s: Scenario) -> VerifyCostModel:
    t = s.targets
    if t.verify_points_ms:
        return VerifyCostModel(tuple((int(k), ms / 1000) for k, ms in sorted(t.verify_points_ms)))
    return VerifyCostModel.affine(t.verify_base_ms / 1000, t.verify_per_token_ms / 1000)


def _devices(s: Scenario, rng: random.Random, shared: WindowEstimator) -> list[DraftDevice]:
    steps: list[float] = []
    for tier in s.drafts.tiers:
        steps += [tier.step_ms / 1000] * round(tier.fraction * s.drafts.count)
    steps = (steps + [s.drafts.tiers[-1].step_ms / 1000] * s.drafts.count)[:s.drafts.count]
    pipelined = s.mode == "pipelined"
    return [DraftDevice(i, step, Link(s.network, rng), WindowPolicy(s.gamma, pipelined, shared))
            for i, step in enumerate(steps)]


def _self_acceptance(cfg: SelfDrafting, rng: random.Random) -> acceptance.AcceptanceModel | None:
    """The target's self-drafted tokens: their own acceptance (a trace), or None when it never self-drafts."""
    if not any(cfg.window_shares[1:]):
        return None
    trace = Acceptance(kind="trace", alpha_by_position=cfg.alpha_by_position)
    return acceptance.AcceptanceModel(acceptance.alpha_by_position(trace), rng)


def _drafting(s: Scenario, rng: random.Random, profile: Profile | None = None) -> processes.Drafting:
    """The scenario's drafting, with a profile's sections in place of the scenario's where it has them."""
    acc = profile.acceptance if profile and profile.acceptance else s.acceptance
    hybrid = profile.hybrid if profile and profile.hybrid else s.hybrid
    own = profile.self_drafting if profile and profile.self_drafting else s.self_drafting
    return processes.Drafting(acceptance.AcceptanceModel(acceptance.alpha_by_position(acc), rng),
                              _self_acceptance(own, rng), hybrid, own)


def run(s: Scenario) -> Result:
    started = time.perf_counter()
    rng = random.Random(s.seed)
    env = simpy.Environment()
    metrics = Metrics(s.warmup_s, s.duration_s, s.slo.ttft_ms, s.slo.tpot_ms)
    b = s.targets.batching
    targets = [Target(env, i, verify_model(s), b.window_ms / 1000, b.max_batch, b.max_tokens,
                      s.targets.kv_capacity_tokens, metrics, s.targets.per_sequence_ms / 1000, b.gather_ms / 1000)
               for i in range(s.targets.count)]
    devices = _devices(s, rng, WindowEstimator())
    w = s.workload
    ctx = processes.Context(
        env=env, scenario=s, metrics=metrics, targets=targets, devices=devices,
        drafting=_drafting(s, rng), profiles={name: _drafting(s, rng, p) for name, p in s.profiles.items()},
        route=router(s.routing, targets, rng), rng=rng, prompt_tokens=int_sampler(w.prompt_tokens, rng),
        output_tokens=int_sampler(w.output_tokens, rng), think_s=sampler(w.think_s, rng), done=env.event(),
        host=simpy.Resource(env, s.targets.host_concurrency) if s.targets.host_concurrency else None)
    if w.kind == "closed":
        ctx.arrivals_open = len(devices) * w.clients_per_draft
        for d in devices:
            for _ in range(w.clients_per_draft):
                env.process(processes.closed_loop_client(ctx, d))
    else:
        ctx.arrivals_open = 1
        env.process(processes.poisson_arrivals(ctx) if w.kind == "poisson" else processes.trace_arrivals(ctx))
    if s.gamma.policy == "analytic" and s.mode in ("fused", "blocking", "pipelined"):
        env.process(processes.analytic_window(ctx, s.gamma.analytic_interval_s))
    env.run(until=ctx.done)
    metrics.end_s = env.now
    metrics.target_busy_s = [t.busy_s for t in targets]
    return Result(s, metrics, time.perf_counter() - started)
