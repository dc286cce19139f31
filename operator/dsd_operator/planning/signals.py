"""What the loop knows about a DSDDeployment's traffic: pooled statistics over one rate() window.

Built by `observing.statistics` from Prometheus, read by the deciding modules (tuning, scaling). Rates are per
second over the window; means are ratios of rate(_sum) / rate(_count), so they pool every pod of a role.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    """The drafts on one node: where they run and what they measure to the target."""

    node: str
    round_trip_s: float | None  # mean verify round trip (network + queue + target compute)
    rounds_per_s: float


@dataclass(frozen=True)
class Signals:
    sampled_at: str
    targets_up: int
    drafts_up: int
    tokens_per_s: float = 0.0
    requests_per_s: float = 0.0
    active_requests: float = 0.0
    rounds_per_s: float = 0.0
    proposed_per_s: float = 0.0
    accepted_per_s: float = 0.0
    alpha_by_position: tuple[float, ...] = ()  # P(position i accepted | positions < i accepted), i = 1, 2, ...
    draft_step_s: float | None = None  # the draft model's step; None: model-free drafting only
    verify_s_by_positions: tuple[tuple[int, float], ...] = ()  # target compute for k verified positions
    round_trip_s: float | None = None
    compute_s: float | None = None  # mean target compute per round, all windows
    rtt_p90_s: float | None = None
    ttft_p95_s: float | None = None
    tpot_p95_s: float | None = None
    token_gap_s: float | None = None  # mean time between a request's output tokens, however they were produced
    target_busy: float = 0.0  # seconds of forward passes per second, summed over replicas (1 = always busy)
    target_queued: float = 0.0
    target_only_tokens_per_s: float = 0.0
    target_only_token_s: float | None = None  # measured time per token of target-only streams, at the draft
    sites: tuple[Site, ...] = ()

    @property
    def has_traffic(self) -> bool:
        return self.tokens_per_s > 0.0

    @property
    def speculating(self) -> bool:
        """Rounds with drafted tokens happened in the window: acceptance is measured."""
        return self.rounds_per_s > 0.0 and self.proposed_per_s > 0.0

    @property
    def acceptance(self) -> float | None:
        return self.accepted_per_s / self.proposed_per_s if self.proposed_per_s > 0 else None

    @property
    def tokens_per_round(self) -> float | None:
        return (self.accepted_per_s + self.rounds_per_s) / self.rounds_per_s if self.rounds_per_s > 0 else None

    @property
    def network_rtt_s(self) -> float:
        """Round trip minus target compute: network, serialisation and queueing seen by the drafts."""
        if self.round_trip_s is None or self.compute_s is None:
            return 0.0
        return max(0.0, self.round_trip_s - self.compute_s)

    @property
    def target_utilization(self) -> float | None:
        return self.target_busy / self.targets_up if self.targets_up else None
