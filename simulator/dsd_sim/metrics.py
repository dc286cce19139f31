"""Streaming statistics of a run: `on_<event>` counters and log-bucket histograms, bounded memory.

The processes call `on_*` only; nothing here runs per token, formats text or plots (reporting.py does, after
`env.run()`). Quantiles come from log-spaced buckets (1 % relative resolution), not per-request lists, so a
run of a million requests holds a few kilobytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class LogHistogram:
    """Counts of positive values in buckets growing by 1 %, from 1 microsecond-like `low` to `high`."""

    def __init__(self, low: float = 1e-3, high: float = 1e6, growth: float = 1.01) -> None:
        self._low, self._log_growth = low, math.log(growth)
        self._counts = [0] * (int(math.log(high / low) / self._log_growth) + 2)
        self.count = 0
        self.total = 0.0

    def add(self, value: float) -> None:
        i = 0 if value <= self._low else min(len(self._counts) - 1,
                                              1 + int(math.log(value / self._low) / self._log_growth))
        self._counts[i] += 1
        self.count += 1
        self.total += value

    def quantile(self, q: float) -> float:
        if not self.count:
            return float("nan")
        rank, seen = q * (self.count - 1), 0
        for i, c in enumerate(self._counts):
            seen += c
            if seen > rank:
                return self._low if i == 0 else self._low * math.exp((i - 0.5) * self._log_growth)
        return float("nan")

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


@dataclass
class Metrics:
    """What a run measured. Requests count when they arrive in [warmup_s, duration_s]."""

    warmup_s: float
    duration_s: float
    slo_ttft_ms: float
    slo_tpot_ms: float
    ttft_ms: LogHistogram = field(default_factory=LogHistogram)
    tpot_ms: LogHistogram = field(default_factory=LogHistogram)
    latency_s: LogHistogram = field(default_factory=LogHistogram)
    # TPOT of the measured requests by a trace row's `label` (a class of request, e.g. open chat vs grounded):
    # a mixed workload's overall percentile can fall between its classes, each class's is its own.
    tpot_ms_by_label: dict[str, LogHistogram] = field(default_factory=dict)
    requests_arrived: int = 0
    requests_completed: int = 0
    requests_in_slo: int = 0
    tokens_in_window: int = 0  # delivered between warmup_s and duration_s: throughput
    tokens_completed: int = 0  # of measured requests
    tokens_in_slo: int = 0  # of measured requests meeting both SLOs
    tokens_total: int = 0
    tokens_requested: int = 0  # sum of output lengths of every request (measured or not): conservation checks
    tokens_rejected: int = 0  # of requests that can never fit a target's KV cache
    requests_rejected: int = 0
    rounds: int = 0
    proposed: int = 0
    accepted: int = 0
    wasted_drafts: int = 0
    admission_waits: int = 0
    gamma_sum_by_second: dict[int, int] = field(default_factory=dict)
    rounds_by_second: dict[int, int] = field(default_factory=dict)
    target_busy_s: list[float] = field(default_factory=list)
    target_passes: int = 0
    target_pass_sequences: int = 0
    end_s: float = 0.0

    def measured(self, arrival_s: float) -> bool:
        return self.warmup_s <= arrival_s < self.duration_s

    def on_arrival(self, arrival_s: float, output_tokens: int) -> None:
        self.tokens_requested += output_tokens
        if self.measured(arrival_s):
            self.requests_arrived += 1

    def on_tokens(self, now: float, count: int) -> None:
        self.tokens_total += count
        if self.warmup_s <= now < self.duration_s:
            self.tokens_in_window += count

    def on_round(self, now: float, gamma: int, accepted: int, wasted: int = 0) -> None:
        self.rounds += 1
        self.proposed += gamma
        self.accepted += accepted
        self.wasted_drafts += wasted
        second = int(now)
        self.gamma_sum_by_second[second] = self.gamma_sum_by_second.get(second, 0) + gamma
        self.rounds_by_second[second] = self.rounds_by_second.get(second, 0) + 1

    def on_pass(self, sequences: int) -> None:
        self.target_passes += 1
        self.target_pass_sequences += sequences

    def on_reject(self, output_tokens: int) -> None:
        self.requests_rejected += 1
        self.tokens_rejected += output_tokens

    def on_admission_wait(self) -> None:
        self.admission_waits += 1

    def on_complete(self, arrival_s: float, first_token_s: float, last_token_s: float, tokens: int,
                    label: str | None = None) -> None:
        if not self.measured(arrival_s):
            return
        ttft_ms = (first_token_s - arrival_s) * 1000
        tpot_ms = (last_token_s - first_token_s) * 1000 / (tokens - 1) if tokens > 1 else 0.0
        self.requests_completed += 1
        self.tokens_completed += tokens
        self.ttft_ms.add(ttft_ms)
        self.tpot_ms.add(tpot_ms)
        if label is not None:
            self.tpot_ms_by_label.setdefault(label, LogHistogram()).add(tpot_ms)
        self.latency_s.add(last_token_s - arrival_s)
        if ttft_ms <= self.slo_ttft_ms and tpot_ms <= self.slo_tpot_ms:
            self.requests_in_slo += 1
            self.tokens_in_slo += tokens

    def summary(self) -> dict[str, Any]:
        window = self.duration_s - self.warmup_s
        busy = self.target_busy_s
        horizon = max(self.end_s, self.duration_s)

        def q(h: LogHistogram) -> dict[str, float]:
            return {"p50": h.quantile(0.5), "p95": h.quantile(0.95), "p99": h.quantile(0.99), "mean": h.mean}

        return {
            "requests": {"arrived": self.requests_arrived, "completed": self.requests_completed,
                         "in_slo": self.requests_in_slo, "admission_waits": self.admission_waits,
                         "rejected": self.requests_rejected},
            "ttft_ms": q(self.ttft_ms), "tpot_ms": q(self.tpot_ms), "latency_s": q(self.latency_s),
            "tpot_ms_by_label": {k: q(h) for k, h in sorted(self.tpot_ms_by_label.items())},
            "throughput_tokens_per_s": self.tokens_in_window / window,
            # goodput: the share of throughput that belongs to requests meeting both SLOs
            "goodput_tokens_per_s": (self.tokens_in_window / window * self.tokens_in_slo / self.tokens_completed
                                     if self.tokens_completed else 0.0),
            "slo": {"ttft_ms": self.slo_ttft_ms, "tpot_ms": self.slo_tpot_ms,
                    "attainment": self.requests_in_slo / self.requests_completed if self.requests_completed else 0},
            "acceptance": self.accepted / self.proposed if self.proposed else 0.0,
            "mean_accepted_length": 1 + self.accepted / self.rounds if self.rounds else 0.0,
            "rounds": self.rounds, "wasted_drafts": self.wasted_drafts, "tokens_total": self.tokens_total,
            "tokens_requested": self.tokens_requested, "tokens_rejected": self.tokens_rejected,
            "target_utilisation": sum(busy) / (len(busy) * horizon) if busy else 0.0,
            "target_passes": self.target_passes,
            "batch_sequences_mean": self.target_pass_sequences / self.target_passes if self.target_passes else 0.0,
            "gamma_by_second": {s: self.gamma_sum_by_second[s] / self.rounds_by_second[s]
                                for s in sorted(self.rounds_by_second)},
            "simulated_s": self.end_s,
        }
