"""simpy processes: the life of one request in each mode, and the workloads that create requests.

Every mode starts like the runtime does: the prompt goes to the target, which prefills it and answers the first
token (an empty window). Then, per round:
- target_only: one decode step on the target per step, yielding its own token after any self-drafted ones it
  accepted (`self_drafting`: the window of each step drawn from `window_shares`, verified in the same pass);
- fused: the draft runs on the target (gamma draft steps inside the target's pass) then verifies;
- blocking: gamma sequential steps on the edge draft, uplink, batched verify, downlink;
- pipelined: as blocking, but while the answer is in flight the draft keeps going (up to gamma + 1 steps,
  finishing the step in progress when the answer lands); if every token and the bonus match its guesses, the
  extra drafts start the next window, otherwise they are wasted. Like the runtime, a draft only drafts ahead
  while `dsd_spec.draft_ahead_pays` says the expected saving beats the cost of the step in progress;
- hybrid: the runtime's drafting without a draft model: each step is either a target-only decode step (a share
  `hybrid.target_only_share` of the steps, self-drafting as above) or a verify round of gamma model-free
  proposals, which cost nothing to make; with `hybrid.window_shares` each round's window is drawn from that
  measured distribution, and each round also costs the draft `hybrid.round_overhead_ms`.
A round yields accepted + 1 tokens, capped at the request's output length. Every step also spends the serving
stack's `targets.host_overhead_ms` outside the forward pass before the session's next step is queued (queued
for one of `targets.host_concurrency` workers when that is set).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import simpy

from dsd_sim.acceptance import AcceptanceModel
from dsd_sim.entities import DraftDevice, Target
from dsd_sim.metrics import Metrics
from dsd_sim.network import ANSWER_BYTES, Link, window_bytes
from dsd_sim.scenario import Hybrid, Scenario, SelfDrafting
from dsd_spec import draft_ahead_pays

Process = Generator[simpy.Event, Any, None]


@dataclass(frozen=True)
class Drafting:
    """How one kind of request drafts: the scenario's sections, or a profile's (scenario.Profile)."""

    acceptance: AcceptanceModel
    self_acceptance: AcceptanceModel | None  # of the target's self-drafted tokens; None: it never self-drafts
    hybrid: Hybrid
    self_drafting: SelfDrafting


@dataclass
class Context:
    env: simpy.Environment
    scenario: Scenario
    metrics: Metrics
    targets: list[Target]
    devices: list[DraftDevice]
    drafting: Drafting  # the scenario's own
    profiles: dict[str, Drafting]
    route: Callable[[], int]
    rng: random.Random
    prompt_tokens: Callable[[], int]
    output_tokens: Callable[[], int]
    think_s: Callable[[], float]
    done: simpy.Event
    host: simpy.Resource | None = None  # the serving stack's step work, when its concurrency is bounded
    active: int = 0
    arrivals_open: int = 0
    sessions_started: int = field(default=0)

    def finished_one(self) -> None:
        self.active -= 1
        if self.active == 0 and self.arrivals_open == 0 and not self.done.triggered:
            self.done.succeed()


def _prefill(ctx: Context, device: DraftDevice, target: Target, prompt: int, reserve: int) -> Process:
    env, link = ctx.env, device.link
    assert isinstance(link, Link)
    yield env.timeout(link.delay_s(env.now, window_bytes(0, ctx.scenario.draft_probs, prompt)))
    wait = target.admit(reserve)
    if wait is not None:
        yield wait
    yield target.submit(0, prompt)
    yield env.timeout(link.delay_s(env.now, ANSWER_BYTES) + ctx.scenario.targets.request_overhead_ms / 1000)


def session(ctx: Context, device: DraftDevice, prompt: int, output: int, drafting: Drafting | None = None,
            label: str | None = None) -> Process:
    env, m, s = ctx.env, ctx.metrics, ctx.scenario
    d = drafting or ctx.drafting
    arrival = env.now
    m.on_arrival(arrival, output)
    target = ctx.targets[ctx.route()]
    if prompt + output > target.kv_capacity:  # can never fit: rejected at once, as the runtime's admission does
        m.on_reject(output)
        ctx.finished_one()
        return
    sent = env.now
    yield from _prefill(ctx, device, target, prompt, prompt + output)
    first = env.now
    m.on_tokens(first, 1)
    produced = 1
    if s.mode == "target_only":
        while produced < output:
            tokens = yield from _target_only_step(ctx, d, target, output - produced)
            produced += tokens
            m.on_tokens(env.now, tokens)
    elif s.mode == "hybrid":
        produced = yield from _hybrid_steps(ctx, d, device, target, produced, output)
    elif s.mode == "fused":
        produced = yield from _fused_rounds(ctx, d.acceptance, device, target, produced, output)
    else:
        produced = yield from _distributed_rounds(ctx, d.acceptance, device, target, produced, output,
                                                  env.now - sent)
    target.release(prompt + output)
    m.on_complete(arrival, first, env.now, produced, label)
    ctx.finished_one()


def _host_step(ctx: Context) -> Process:
    """The serving stack's own time for one step; with `host_concurrency` set, sessions queue for it (one
    Python process under the GIL does every session's step work one after another)."""
    host = ctx.scenario.targets.host_overhead_ms / 1000
    if not host:
        return
    if ctx.host is None:
        yield ctx.env.timeout(host)
        return
    with ctx.host.request() as turn:
        yield turn
        yield ctx.env.timeout(host)


def _target_only_step(ctx: Context, d: Drafting, target: Target, left: int) -> Generator[simpy.Event, Any, int]:
    """One step of a target-only stream: its tokens (the target's own, after the self-drafted ones it accepted;
    at most `left`)."""
    shares, own = d.self_drafting.window_shares, d.self_acceptance
    k = min(ctx.rng.choices(range(len(shares)), shares)[0], left - 1) if own else 0
    yield target.submit(k + 1)
    yield from _host_step(ctx)
    return (own.accepted(k)[0] if k > 0 and own else 0) + 1


def _hybrid_steps(ctx: Context, d: Drafting, device: DraftDevice, target: Target, produced: int, output: int
                  ) -> Generator[simpy.Event, Any, int]:
    env, m, acc, s = ctx.env, ctx.metrics, d.acceptance, ctx.scenario
    link, shares = device.link, d.hybrid.window_shares
    assert isinstance(link, Link)
    windows = list(range(1, len(shares) + 1)) if shares else []
    round_s = d.hybrid.round_overhead_ms / 1000
    while produced < output:
        proposed = ctx.rng.choices(windows, shares)[0] if shares else s.gamma.value
        gamma = max(0, min(proposed, output - produced - 1))
        if gamma == 0 or ctx.rng.random() < d.hybrid.target_only_share:
            tokens = yield from _target_only_step(ctx, d, target, output - produced)
            produced += tokens
            m.on_tokens(env.now, tokens)
            continue
        yield env.timeout(link.delay_s(env.now, window_bytes(gamma, s.draft_probs)))
        yield target.submit(gamma + 1)
        yield env.timeout(link.delay_s(env.now, ANSWER_BYTES) + round_s)
        yield from _host_step(ctx)
        n, _ = acc.accepted(gamma)
        tokens = min(n + 1, output - produced)
        produced += tokens
        m.on_tokens(env.now, tokens)
        m.on_round(env.now, gamma, n)
    return produced


def _fused_rounds(ctx: Context, acc: AcceptanceModel, device: DraftDevice, target: Target, produced: int,
                  output: int) -> Generator[simpy.Event, Any, int]:
    env, m = ctx.env, ctx.metrics
    step_s = ctx.scenario.targets.fused_draft_step_ms / 1000
    while produced < output:
        gamma = max(0, min(device.window.gamma, output - produced - 1))
        sent = env.now
        yield target.submit(gamma + 1, 0, gamma * step_s)
        yield from _host_step(ctx)
        n, _ = acc.accepted(gamma)
        tokens = min(n + 1, output - produced)
        produced += tokens
        m.on_tokens(env.now, tokens)
        if gamma:
            m.on_round(env.now, gamma, n)
            device.window.observe(gamma, n, step_s, env.now - sent - gamma * step_s)
    return produced


def _distributed_rounds(ctx: Context, acc: AcceptanceModel, device: DraftDevice, target: Target, produced: int,
                        output: int, prefill_wait_s: float) -> Generator[simpy.Event, Any, int]:
    env, m, s = ctx.env, ctx.metrics, ctx.scenario
    link, step_s, pipelined = device.link, device.step_s, s.mode == "pipelined"
    assert isinstance(link, Link)
    carried = 0
    if pipelined:  # the draft prefilled and drafted while the target prefilled
        drafted = min(device.window.gamma + 1, int(prefill_wait_s / step_s))
        carried = drafted - 1 if drafted and ctx.rng.random() < acc.alphas[0] else 0
    while produced < output:
        gamma = max(0, min(device.window.gamma, output - produced - 1))
        need = max(0, gamma - carried)
        ready = device.reserve(env.now, need) if need else env.now
        yield env.timeout(ready - env.now + link.delay_s(ready, window_bytes(gamma, s.draft_probs)))
        yield target.submit(gamma + 1)
        yield env.timeout(link.delay_s(env.now, ANSWER_BYTES))
        yield from _host_step(ctx)
        wait_s = env.now - ready
        n, survived = acc.accepted(gamma)
        wasted = 0
        carried = 0
        smoothed = device.wait_s.value
        ahead = pipelined and gamma and (smoothed is None or draft_ahead_pays(
            acc.survival[gamma], smoothed, gamma, step_s))  # the runtime's rule, on the true acceptance
        device.wait_s.update(wait_s)
        if ahead:
            drafted = min(gamma + 1, math.ceil(wait_s / step_s))  # the step in progress finishes first
            finish = ready + drafted * step_s
            device.free_at = max(device.free_at, finish)
            if finish > env.now:
                yield env.timeout(finish - env.now)
            if survived:
                carried = drafted - 1
            else:
                wasted = drafted
        tokens = min(n + 1, output - produced)
        produced += tokens
        m.on_tokens(env.now, tokens)
        if gamma:
            m.on_round(env.now, gamma, n, wasted)
            device.window.observe(gamma, n, step_s, wait_s)
    return produced


def closed_loop_client(ctx: Context, device: DraftDevice) -> Process:
    """One user of a draft device: request, wait for the answer, think, repeat until the arrival window ends."""
    env, duration = ctx.env, ctx.scenario.duration_s
    think = ctx.think_s()
    if think:  # desynchronise clients
        yield env.timeout(ctx.rng.uniform(0, think))
    while env.now < duration:
        ctx.active += 1
        yield env.process(session(ctx, device, ctx.prompt_tokens(), ctx.output_tokens()))
        pause = ctx.think_s()
        if pause:
            yield env.timeout(pause)
    ctx.arrivals_open -= 1
    if ctx.active == 0 and ctx.arrivals_open == 0 and not ctx.done.triggered:
        ctx.done.succeed()


def poisson_arrivals(ctx: Context) -> Process:
    env, rate = ctx.env, ctx.scenario.workload.rate_per_s
    while True:
        yield env.timeout(ctx.rng.expovariate(rate))
        if env.now >= ctx.scenario.duration_s:
            break
        ctx.active += 1
        device = ctx.devices[ctx.rng.randrange(len(ctx.devices))]
        env.process(session(ctx, device, ctx.prompt_tokens(), ctx.output_tokens()))
    ctx.arrivals_open -= 1
    if ctx.active == 0 and not ctx.done.triggered:
        ctx.done.succeed()


def trace_arrivals(ctx: Context) -> Process:
    """Replays a JSONL trace: {"arrival_s", "prompt_tokens", "output_tokens", optional "draft", "client",
    "profile", "label"} per line. Rows with the same `client` are one user's requests in trace order: each starts
    at its arrival_s or when that user's previous request finishes, whichever is later (a chat user waits for an
    answer before asking again); rows without one start at their arrival_s. A row's `profile` (scenario.profiles)
    is how it drafts; its `label` names the class its latencies are also reported under (Metrics.by_label)."""
    env = ctx.env
    path = ctx.scenario.workload.file
    assert path is not None
    users: dict[str, simpy.Event] = {}  # a client's last request: fires when it has finished
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                at, prompt, output = float(row["arrival_s"]), int(row["prompt_tokens"]), int(row["output_tokens"])
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: bad trace row ({e})") from None
            name = row.get("profile")
            if name is not None and name not in ctx.profiles:
                raise ValueError(f"{path}:{lineno}: profile {name!r} is not in the scenario's profiles "
                                 f"({sorted(ctx.profiles) or 'none'})")
            if at >= ctx.scenario.duration_s:
                break
            if at > env.now:
                yield env.timeout(at - env.now)
            ctx.active += 1
            device = ctx.devices[int(row.get("draft", ctx.rng.randrange(len(ctx.devices)))) % len(ctx.devices)]
            label = row.get("label")
            request = session(ctx, device, prompt, max(1, output), ctx.profiles[name] if name else None,
                              None if label is None else str(label))
            if "client" in row:
                key = str(row["client"])
                users[key] = env.process(_after(users.get(key), request))
            else:
                env.process(request)
    ctx.arrivals_open -= 1
    if ctx.active == 0 and not ctx.done.triggered:
        ctx.done.succeed()


def _after(previous: simpy.Event | None, request: Process) -> Process:
    """`request`, once `previous` (the same user's last request) has finished."""
    if previous is not None and not previous.processed:
        yield previous
    yield from request


def analytic_window(ctx: Context, interval_s: float) -> Process:
    """Every interval, one goodput-optimal gamma for all drafts from the pooled statistics."""
    shared = ctx.devices[0].window.shared
    policy = ctx.devices[0].window
    while True:
        yield ctx.env.timeout(interval_s)
        gamma = shared.best_gamma(policy.bounds, policy.pipelined, policy.gamma)
        for d in ctx.devices:
            d.window.gamma = gamma
