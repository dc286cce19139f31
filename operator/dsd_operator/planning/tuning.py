"""The speculation decision: the largest window a round may send, and whether to speculate at all.

Pure: `decide` maps (spec, measured signals, the previous decision, now) to the next decision. The window is
dsd_spec's goodput-optimal gamma on the measured costs (target compute by positions verified, the drafts' network
round trip, the draft step) and per-position acceptance, moved one step per decision, only when the predicted gain
beats the deadband, and no sooner than the dwell time after the last change. Mode `off` (the target decodes alone
and streams) is chosen when even the best window is slower than the target alone (its measured stream rate when
there is one, else 1 / t_v(1)); acceptance cannot be measured
while off, so the loop probes speculation again after `probeAfterSeconds`, doubling the wait after each probe that
did not pay.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dsd_operator.api import v1alpha1 as api
from dsd_operator.planning.signals import Signals
from dsd_spec import RoundCosts, VerifyCostModel, WindowBounds, choose_gamma, goodput_tokens_per_s

SPECULATE, OFF = "speculate", "off"
MAX_PROBE_BACKOFF = 16


class Why:
    INITIAL = "Initial"
    NO_SPECULATION = "NoSpeculationMeasured"
    DWELL = "Dwelling"
    RAISED = "WindowRaised"
    LOWERED = "WindowLowered"
    OPTIMAL = "WindowOptimal"
    DOES_NOT_PAY = "SpeculationDoesNotPay"
    PROBING = "Probing"
    OFF_WAITING = "TargetAlone"
    BOUNDS = "BoundsChanged"
    SPEC = "SpecChanged"


@dataclass(frozen=True)
class Speculation:
    gamma: int
    mode: str
    reason: str
    message: str
    since: float  # epoch seconds of the last change of gamma or mode
    probe_after_s: int = 0  # off: when to probe; speculate: > 0 while a probe is being measured
    spec_gamma: int = 0  # spec.speculation.gamma when this decision was made: a user's change restarts from it


def initial(spec: api.DSDDeploymentSpec, now_s: float) -> Speculation:
    """Static drafts start at spec.speculation.gamma. Adaptive drafts choose each round's window themselves, so the
    loop's bound starts at gammaMax and comes down only on measurement: starting it at gamma made the loop throttle
    the drafts' own controller for the minute it took to climb back (bench/loop_bench.py, phase 0)."""
    s = spec.speculation
    if s.policy == "adaptive":
        return Speculation(s.gamma_max, SPECULATE, Why.INITIAL, f"adaptive drafts: windows up to "
                           f"spec.speculation.gammaMax {s.gamma_max} until measured", now_s, spec_gamma=s.gamma)
    return Speculation(s.gamma, SPECULATE, Why.INITIAL, f"starting at spec.speculation.gamma {s.gamma}", now_s,
                       spec_gamma=s.gamma)


def _costs(signals: Signals) -> RoundCosts | None:
    if not signals.verify_s_by_positions:
        return None
    return RoundCosts(signals.draft_step_s or 0.0, VerifyCostModel(signals.verify_s_by_positions),
                      signals.network_rtt_s)


def target_alone_tokens_per_s(signals: Signals, costs: RoundCosts) -> float:
    """What the target decoding alone delivers: measured on target-only streams when there were any (it
    includes the per-token overheads a prediction from compute leaves out), else 1 / t_v(1)."""
    if signals.target_only_token_s:
        return 1.0 / signals.target_only_token_s
    return 1.0 / costs.verify(1)


def measured_speculating_tokens_per_s(signals: Signals, gamma: int, pipelined: bool) -> float | None:
    """What the speculating rounds delivered per request, as measured: tokens per round over a round's time (the
    drafts' round trip, plus the drafting when it is not pipelined). It sees what a pooled prediction misses:
    a per-round proposer (hybrid) speculates only where it pays and streams target-only elsewhere."""
    tokens, round_s = signals.tokens_per_round, signals.round_trip_s
    if not tokens or not round_s:
        return None
    drafting_s = 0.0 if pipelined or not signals.draft_step_s else gamma * signals.draft_step_s
    return tokens / (round_s + drafting_s)


def delivered_tokens_per_s(signals: Signals) -> float | None:
    """The pace a request received, as measured at the draft (1 / mean gap between its output tokens), whatever
    produced them: verified rounds, the hybrid's target-only stretches, or both."""
    return 1.0 / signals.token_gap_s if signals.token_gap_s else None


def crossover_rtt_s(spec: api.DSDDeploymentSpec, signals: Signals, limit_s: float = 2.0) -> float | None:
    """The network round trip above which no window beats the target alone, at the measured acceptance and
    costs; None until speculation is measured. Bisection: goodput falls as the round trip grows."""
    costs = _costs(signals)
    if costs is None or not signals.alpha_by_position:
        return None
    s = spec.speculation
    alphas = list(signals.alpha_by_position)
    alphas += [alphas[-1]] * (s.gamma_max + 2 - len(alphas))
    alone = target_alone_tokens_per_s(signals, costs)

    def pays(rtt: float) -> bool:
        c = replace(costs, rtt_s=rtt)
        return max(goodput_tokens_per_s(c, alphas, g, s.pipelined) for g in range(s.gamma_min, s.gamma_max + 1)) > alone

    lo, hi = 0.0, limit_s
    if not pays(lo):
        return 0.0
    if pays(hi):
        return hi
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if pays(mid) else (lo, mid)
    return lo


def decide(spec: api.DSDDeploymentSpec, signals: Signals, previous: Speculation, now_s: float) -> Speculation:
    """The next decision; every returned decision carries the spec gamma it was made under."""
    return replace(_decide(spec, signals, previous, now_s), spec_gamma=spec.speculation.gamma)


def _decide(spec: api.DSDDeploymentSpec, signals: Signals, previous: Speculation, now_s: float) -> Speculation:
    s, tune = spec.speculation, spec.autotune
    if previous.spec_gamma and previous.spec_gamma != s.gamma:  # the user set a new gamma: it wins this time
        start = initial(spec, now_s)
        return replace(start, reason=Why.SPEC, message=f"spec.speculation.gamma changed to {s.gamma}; {start.message}")
    bounds = WindowBounds(s.gamma_min, s.gamma_max)
    if bounds.clamp(previous.gamma) != previous.gamma:  # the user changed the bounds: follow at once
        g = bounds.clamp(previous.gamma)
        return replace(previous, gamma=g, reason=Why.BOUNDS, since=now_s,
                       message=f"gamma {previous.gamma} outside spec.speculation [{s.gamma_min}, {s.gamma_max}]: {g}")
    if previous.mode == OFF:
        if now_s - previous.since >= previous.probe_after_s:
            return Speculation(previous.gamma, SPECULATE, Why.PROBING,
                               f"off for {now_s - previous.since:.0f} s: measuring speculation again", now_s,
                               previous.probe_after_s)
        return replace(previous, reason=Why.OFF_WAITING)
    if not signals.speculating or not signals.alpha_by_position:
        return replace(previous, reason=Why.NO_SPECULATION if previous.reason != Why.INITIAL else previous.reason,
                       message="no verify round with drafted tokens in the rate window")
    costs = _costs(signals)
    if costs is None:
        return replace(previous, reason=Why.NO_SPECULATION, message="no target compute measured in the rate window")
    alphas = list(signals.alpha_by_position)
    alphas += [alphas[-1]] * (bounds.gamma_max + 2 - len(alphas))
    deadband = tune.deadband_percent / 100.0
    best = choose_gamma(costs, alphas, bounds, s.pipelined, previous.gamma, hysteresis=deadband, max_step=1)
    speculative = goodput_tokens_per_s(costs, alphas, best, s.pipelined)
    alone = target_alone_tokens_per_s(signals, costs)
    measured = measured_speculating_tokens_per_s(signals, previous.gamma, s.pipelined)
    delivered = delivered_tokens_per_s(signals)
    figures = (f"acceptance {signals.acceptance or 0:.2f}, {signals.tokens_per_round or 0:.2f} tokens/round, "
               f"round trip {1e3 * costs.rtt_s:.0f} ms + verify {1e3 * costs.verify(best + 1):.0f} ms: "
               f"gamma {best} predicts {speculative:.1f} tokens/s"
               + (f" (rounds measured {measured:.1f}" + (f", delivered {delivered:.1f}" if delivered else "") + ")"
                  if measured else "")
               + f" vs {alone:.1f} for the target alone")
    if now_s - previous.since < tune.min_dwell_seconds:
        return replace(previous, reason=Why.DWELL if previous.reason != Why.INITIAL else previous.reason,
                       message=f"{figures}; holding gamma {previous.gamma} for the dwell time")
    # Off only when neither the prediction, nor the rounds as measured, nor the pace requests got beat the target
    # alone: what each request received is the final word (a hybrid's own target-only stretches are in it).
    loses = [x is None or x * (1.0 + deadband) < alone for x in (measured, delivered)]
    if speculative * (1.0 + deadband) < alone and all(loses):
        base = tune.probe_after_seconds
        wait = min(previous.probe_after_s * 2, base * MAX_PROBE_BACKOFF) if previous.probe_after_s else base
        return Speculation(previous.gamma, OFF, Why.DOES_NOT_PAY, f"{figures}; next probe in {wait} s", now_s, wait)
    if best != previous.gamma:
        why = Why.RAISED if best > previous.gamma else Why.LOWERED
        return Speculation(best, SPECULATE, why, figures, now_s)
    return replace(previous, reason=Why.OPTIMAL, message=figures, probe_after_s=0)
