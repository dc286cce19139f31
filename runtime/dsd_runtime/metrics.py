"""Prometheus metrics of both roles (prefix `dsd_`, units in names, counters end in `_total`).

Children with labels are pre-bound here so the per-round hot path never calls `.labels()`. Ratios
(acceptance rate, mean accepted length) are derived in PromQL from the counters, e.g.
`rate(dsd_draft_tokens_accepted_total[1m]) / rate(dsd_draft_tokens_proposed_total[1m])`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_POSITION_LABELS = 16
DRAFT_SOURCES = ("model", "lookup", "suffix")  # draft.drafting.SOURCES


class DraftMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.tokens_generated = Counter("dsd_tokens_generated_total", "Output tokens produced.", registry=registry)
        self.draft_proposed = Counter("dsd_draft_tokens_proposed_total", "Draft tokens sent for verification.",
                                      registry=registry)
        self.draft_accepted = Counter("dsd_draft_tokens_accepted_total", "Draft tokens accepted by the target.",
                                      registry=registry)
        per_pos = Counter("dsd_draft_tokens_accepted_per_position_total",
                          "Draft tokens accepted, by 1-based window position.", ["position"], registry=registry)
        self.accepted_at = [per_pos.labels(position=str(i + 1)) for i in range(MAX_POSITION_LABELS)]
        reached = Counter("dsd_draft_tokens_reached_per_position_total",
                          "Draft tokens the target judged, by 1-based window position (every earlier one was "
                          "accepted); accepted / reached at a position is its conditional acceptance rate.",
                          ["position"], registry=registry)
        self.reached_at = [reached.labels(position=str(i + 1)) for i in range(MAX_POSITION_LABELS)]
        self.rounds = Counter("dsd_speculation_rounds_total", "Verify rounds completed.", registry=registry)
        self.verify_rtt = Histogram("dsd_verify_rtt_seconds", "Verify round trip seen by the draft.",
                                    buckets=_LATENCY_BUCKETS, registry=registry)
        self.draft_step = Histogram("dsd_draft_step_seconds", "One draft forward step.",
                                    buckets=_LATENCY_BUCKETS, registry=registry)
        self.batch_sequences = Histogram(
            "dsd_draft_batch_sequences", "Requests whose draft-model steps were packed into one forward pass.",
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=registry)
        self.ttft = Histogram("dsd_time_to_first_token_seconds", "Request start to first output token.",
                              buckets=_LATENCY_BUCKETS, registry=registry)
        self.itl = Histogram("dsd_inter_token_latency_seconds", "Time between output tokens of a request.",
                             buckets=_LATENCY_BUCKETS, registry=registry)
        self.gamma = Gauge("dsd_gamma", "Current speculation window.", registry=registry)
        self.configured_gamma = Gauge("dsd_configured_gamma", "Window the configuration asks for (static gamma, "
                                      "or the adaptive policy's start); changes with the ConfigMap or control RPC.",
                                      registry=registry)
        self.active_requests = Gauge("dsd_active_requests", "Requests being generated.", registry=registry)
        self.requests = Counter("dsd_requests_total", "HTTP requests by endpoint and status code.",
                                ["endpoint", "code"], registry=registry)
        self.reprefills = Counter("dsd_reprefills_total", "Rounds where the target asked for the context again.",
                                  registry=registry)
        by_source_p = Counter("dsd_draft_tokens_proposed_by_source_total",
                              "Draft tokens sent for verification, by proposer (model, lookup, suffix).", ["source"],
                              registry=registry)
        by_source_a = Counter("dsd_draft_tokens_accepted_by_source_total",
                              "Draft tokens accepted by the target, by proposer.", ["source"], registry=registry)
        self.proposed_by_source = {s: by_source_p.labels(source=s) for s in DRAFT_SOURCES}
        self.accepted_by_source = {s: by_source_a.labels(source=s) for s in DRAFT_SOURCES}
        self.target_only_tokens = Counter("dsd_target_only_tokens_total",
                                          "Tokens the target decoded alone and streamed (target-only mode).",
                                          registry=registry)
        self.target_only_interval = Histogram(
            "dsd_target_only_token_seconds", "Seconds per token of a target-only stream, per step as the draft "
            "receives them (self-drafted tokens included): what the target alone delivers (the bar speculation "
            "must beat).",
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.position_price = Gauge(
            "dsd_position_price_seconds", "The target's latest position price: charged per position beyond the "
            "first when a window is priced (0 when the target serves this draft's session alone).",
            registry=registry)
        self.empty_rounds = Counter("dsd_empty_rounds_total",
                                    "Rounds with nothing drafted (the target decoded one token alone).",
                                    registry=registry)


class TargetMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        compute = Histogram("dsd_target_verify_compute_seconds", "Target compute per verify round, by positions "
                            "verified (window + 1; the last label counts every larger window).", ["positions"],
                            buckets=_LATENCY_BUCKETS, registry=registry)
        self.verify_compute = [compute.labels(positions=str(k)) for k in range(1, MAX_POSITION_LABELS + 2)]
        self.active_sessions = Gauge("dsd_target_active_sessions", "Sessions with a KV cache.", registry=registry)
        self.cached_tokens = Gauge("dsd_target_cached_tokens", "Tokens held in KV caches.", registry=registry)
        self.reprefills = Counter("dsd_target_reprefills_total", "Sessions rebuilt from draft-sent context.",
                                  registry=registry)
        self.evictions = Gauge("dsd_target_evictions", "Sessions evicted since start.", registry=registry)
        codes = Counter("dsd_target_requests_total", "Verify RPCs by gRPC status code.", ["code"],
                        registry=registry)
        self.requests_ok = codes.labels(code="OK")
        self.queued = Gauge("dsd_target_queued_rounds", "Rounds in flight (waiting for or in a forward pass).",
                            registry=registry)
        self.requests_by_code = codes
        self.tokens_verified = Counter("dsd_target_tokens_verified_total", "Positions verified (window + 1).",
                                       registry=registry)
        self.kv_bytes = Gauge("dsd_target_kv_bytes", "Bytes of KV memory the sessions hold (allocated).",
                              registry=registry)
        self.batch_sequences = Histogram(
            "dsd_target_batch_sequences", "Sessions packed into one forward pass (continuous batching).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=registry)
        self.batch_tokens = Histogram("dsd_target_batch_tokens", "Tokens in one forward pass.",
                                      buckets=(1, 4, 16, 64, 256, 1024, 4096), registry=registry)
        self.pass_seconds = Histogram("dsd_target_forward_pass_seconds", "Wall time of one packed forward pass.",
                                      buckets=_LATENCY_BUCKETS, registry=registry)
        self.position_price = Gauge(
            "dsd_target_position_price_seconds", "What one more position in a forward pass costs the other "
            "sessions sharing it (marginal seconds per token x other sessions per pass), as last reported to a "
            "draft.", registry=registry)
        drafted = Counter("dsd_target_self_drafted_tokens_total", "Tokens target-only streams drafted for "
                          "themselves, by model-free proposer.", ["proposer"], registry=registry)
        accepted = Counter("dsd_target_self_accepted_tokens_total", "Self-drafted tokens the target accepted, by "
                           "model-free proposer.", ["proposer"], registry=registry)
        self.self_drafted = {name: drafted.labels(proposer=name) for name in ("lookup", "suffix")}
        self.self_accepted = {name: accepted.labels(proposer=name) for name in ("lookup", "suffix")}
        steps = Counter("dsd_target_only_steps_total", "Steps of target-only streams, by the window they drafted "
                        "for themselves (0: none; the last label counts larger ones).", ["window"], registry=registry)
        self.self_windows = [steps.labels(window=str(k)) for k in range(MAX_POSITION_LABELS + 1)]
        per_pos = Counter("dsd_target_self_accepted_per_position_total", "Self-drafted tokens accepted at window "
                          "position i.", ["position"], registry=registry)
        reached = Counter("dsd_target_self_reached_per_position_total", "Self-drafted tokens judged at window "
                          "position i (all before it accepted): accepted / reached is the conditional acceptance.",
                          ["position"], registry=registry)
        self.self_accepted_at = [per_pos.labels(position=str(i + 1)) for i in range(MAX_POSITION_LABELS)]
        self.self_reached_at = [reached.labels(position=str(i + 1)) for i in range(MAX_POSITION_LABELS)]

    def observe_self_step(self, proposer: str, window: int, accepted: int) -> None:
        """One target-only step that verified `window` tokens `proposer` drafted and accepted `accepted` of them."""
        self.self_windows[min(window, MAX_POSITION_LABELS)].inc()
        if window:
            self.self_drafted[proposer].inc(window)
            self.self_accepted[proposer].inc(accepted)
        for i in range(min(window, accepted + 1, MAX_POSITION_LABELS)):
            self.self_reached_at[i].inc()
            if i < accepted:
                self.self_accepted_at[i].inc()

    def observe_pass(self, sequences: int, tokens: int, seconds: float) -> None:
        self.batch_sequences.observe(sequences)
        self.batch_tokens.observe(tokens)
        self.pass_seconds.observe(seconds)
