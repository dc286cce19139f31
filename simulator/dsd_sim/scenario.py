"""Scenario files: a typed, validated description of one simulated edge/cloud deployment.

`load(path, overrides)` reads YAML, applies `key.path=value` overrides (from `dsd sim run --set` and sweeps)
and validates; a `ScenarioError` names each bad field (e.g. `network.rtt_ms.mean: must be >= 0`).
Times in the file are milliseconds (`_ms`) or seconds (`_s`), as the names say.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MODES = ("target_only", "fused", "blocking", "pipelined", "hybrid")


class ScenarioError(ValueError):
    """An invalid scenario; the message lists every bad field with its dotted path."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dist(_Model):
    """A distribution of a non-negative quantity (milliseconds, tokens). `constant` uses `mean` only."""

    kind: Literal["constant", "normal", "lognormal", "uniform", "exponential"] = "constant"
    mean: float = Field(ge=0)
    std: float = Field(0.0, ge=0, description="normal / lognormal spread")
    low: float | None = Field(None, ge=0, description="uniform lower bound")
    high: float | None = Field(None, ge=0, description="uniform upper bound")

    @model_validator(mode="after")
    def _uniform_bounds(self) -> Dist:
        if self.kind == "uniform" and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError("uniform needs low <= high")
        return self


def _dist(value: float) -> Dist:
    return Dist(mean=value)


class DraftTier(_Model):
    fraction: float = Field(gt=0, le=1, description="share of the draft devices in this tier")
    step_ms: float = Field(gt=0, description="one draft forward step (one token)")


class Drafts(_Model):
    count: int = Field(1, ge=1)
    tiers: list[DraftTier] = Field(default_factory=lambda: [DraftTier(fraction=1.0, step_ms=10.0)], min_length=1)

    @model_validator(mode="after")
    def _fractions(self) -> Drafts:
        if abs(sum(t.fraction for t in self.tiers) - 1.0) > 1e-6:
            raise ValueError("tier fractions must sum to 1")
        return self


class Batching(_Model):
    window_ms: float = Field(0.0, ge=0, description="how long a target waits to fill a batch")
    max_batch: int = Field(64, ge=1, description="sequences per forward pass")
    max_tokens: int = Field(8192, ge=1, description="tokens (prefill + verify positions) per forward pass")
    gather_ms: float = Field(0.0, ge=0, description=(
        "after a pass, wait up to this long (at most a fifth of that pass) for its sequences to queue again "
        "(the runtime waits 5 ms)"))


class Targets(_Model):
    count: int = Field(1, ge=1)
    verify_base_ms: float = Field(20.0, ge=0, description="fixed cost of one forward pass (weights read)")
    verify_per_token_ms: float = Field(0.5, ge=0, description="added cost per verified position in the batch")
    verify_points_ms: list[tuple[int, float]] | None = Field(None, description=(
        "measured t_v(k) as [k, ms] pairs (from `dsd profile`): the time of a forward pass over k positions, "
        "interpolated, extrapolated linearly; replaces base + per_token"))
    per_sequence_ms: float = Field(0.0, ge=0, description=(
        "added cost per sequence in a packed pass beyond the first (each attends its own KV); 0 on GPUs, "
        "where a pass is bound by reading the weights"))
    host_overhead_ms: float = Field(0.0, ge=0, description=(
        "serving-stack time per step outside the forward pass (sampling, streaming, RPC handling, the API): "
        "a session's next step is queued this long after its pass ends"))
    request_overhead_ms: float = Field(0.0, ge=0, description=(
        "serving-stack time per request before its first token besides the prefill pass and the link (the API, "
        "tokenising, session set-up)"))
    host_concurrency: int = Field(0, ge=0, description=(
        "how many sessions' host work runs at once; 1: one Python process (the GIL) does it for every session in "
        "turn; 0: unbounded"))
    fused_draft_step_ms: float = Field(2.0, ge=0, description="draft step when co-located on the target (fused)")
    kv_capacity_tokens: int = Field(1_000_000, ge=1, description="KV cache per target; admission reserves "
                                                                 "prompt + output tokens")
    batching: Batching = Field(default_factory=Batching)


class Outage(_Model):
    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)


class Network(_Model):
    rtt_ms: Dist = Field(default_factory=lambda: _dist(10.0), description="round-trip latency per message pair")
    jitter_ms: float = Field(0.0, ge=0, description="uniform +- added to each one-way delay")
    bandwidth_mbps: float = Field(0.0, ge=0, description="link bandwidth; 0 = unlimited")
    loss: float = Field(0.0, ge=0, lt=1, description="message loss probability (retransmitted after rto_ms)")
    rto_ms: float = Field(200.0, gt=0)
    outages: list[Outage] = Field(default_factory=list, description="windows in which messages wait")


class Acceptance(_Model):
    kind: Literal["parametric", "trace"] = "parametric"
    alpha: float = Field(0.8, ge=0, le=1, description="acceptance of the first position")
    decay: float = Field(1.0, gt=0, le=1, description="alpha_i = alpha * decay^(i-1)")
    file: Path | None = Field(None, description="trace: a profile JSON with alpha_by_position")
    alpha_by_position: list[Annotated[float, Field(ge=0, le=1)]] | None = None

    @model_validator(mode="after")
    def _trace_source(self) -> Acceptance:
        if self.kind == "trace" and self.file is None and not self.alpha_by_position:
            raise ValueError("trace acceptance needs file or alpha_by_position")
        return self


class Gamma(_Model):
    policy: Literal["static", "analytic", "adaptive"] = "static"
    value: int = Field(4, ge=1, le=32)
    min: int = Field(1, ge=1, le=32)
    max: int = Field(8, ge=1, le=32)
    update_every_rounds: int = Field(4, ge=1, description="adaptive: re-choose every N rounds of a session")
    analytic_interval_s: float = Field(1.0, gt=0, description="analytic: re-choose for all drafts this often")

    @model_validator(mode="after")
    def _bounds(self) -> Gamma:
        if not self.min <= self.value <= self.max:
            raise ValueError(f"value ({self.value}) must lie within [min {self.min}, max {self.max}]")
        return self


class Workload(_Model):
    kind: Literal["poisson", "closed", "trace"] = "closed"
    rate_per_s: float = Field(1.0, gt=0, description="poisson: arrivals per second, whole system")
    clients_per_draft: int = Field(1, ge=1, description="closed: concurrent users per draft device")
    think_s: Dist = Field(default_factory=lambda: _dist(0.0), description="closed: pause between requests")
    prompt_tokens: Dist = Field(default_factory=lambda: _dist(128))
    output_tokens: Dist = Field(default_factory=lambda: _dist(128))
    file: Path | None = Field(None, description=(
        "trace: JSONL with arrival_s, prompt_tokens, output_tokens, optional draft, client (a client's "
        "requests run one after another) and profile (one of `profiles`)"))

    @model_validator(mode="after")
    def _trace_file(self) -> Workload:
        if self.kind == "trace" and self.file is None:
            raise ValueError("trace workload needs file")
        return self


class Slo(_Model):
    ttft_ms: float = Field(1000.0, gt=0)
    tpot_ms: float = Field(100.0, gt=0)


class Hybrid(_Model):
    """The runtime's default drafting without a draft model: model-free proposals (free to make) when a match
    pays, else the target decodes alone."""

    target_only_share: float = Field(0.5, ge=0, le=1, description=(
        "share of a session's steps that are target-only decode steps; the rest are verify rounds of "
        "gamma.value proposals"))
    window_shares: list[Annotated[float, Field(ge=0)]] | None = Field(None, description=(
        "share of verify rounds proposing 1, 2, ... tokens (a measured window distribution: an adaptive window "
        "varies per round); unset: every round proposes gamma.value"))
    round_overhead_ms: float = Field(0.0, ge=0, description=(
        "draft-side time per verify round besides the link and the pass (finding the match, the RPC's "
        "serialisation, reading the answer)"))

    @field_validator("window_shares")
    @classmethod
    def _shares(cls, shares: list[float] | None) -> list[float] | None:
        if shares is not None and not sum(shares) > 0:
            raise ValueError("needs a positive entry")
        return shares


class SelfDrafting(_Model):
    """The target drafting for itself in its target-only steps (the runtime's target.self_drafting): a
    model-free window verified in the step's own pass, with no round trip and nothing to make it."""

    window_shares: list[Annotated[float, Field(ge=0)]] = Field([1.0], description=(
        "share of target-only steps that verify 0, 1, 2, ... self-drafted tokens (measured; [1.0]: none)"))
    alpha_by_position: list[Annotated[float, Field(ge=0, le=1)]] | None = Field(None, description=(
        "conditional acceptance of self-drafted token i (the last value repeats)"))

    @model_validator(mode="after")
    def _acceptance(self) -> SelfDrafting:
        if not sum(self.window_shares) > 0:
            raise ValueError("window_shares needs a positive entry")
        if any(self.window_shares[1:]) and not self.alpha_by_position:
            raise ValueError("self-drafted windows need alpha_by_position")
        return self


class Profile(_Model):
    """A kind of request that drafts differently (open chat, quoting a given text): its own acceptance,
    hybrid drafting and target self-drafting, each replacing the scenario's section for the trace rows that name
    the profile (a section left out is the scenario's). Requests of one workload differ this much: a quoting
    answer verifies several tokens per pass where open chat verifies one, and the TPOT spread of a run follows."""

    acceptance: Acceptance | None = None
    hybrid: Hybrid | None = None
    self_drafting: SelfDrafting | None = None


class Scenario(_Model):
    name: str = "scenario"
    seed: int = 0
    duration_s: float = Field(60.0, gt=0, description="simulated time in which requests arrive")
    warmup_s: float = Field(0.0, ge=0, description="requests arriving before this are not measured")
    mode: Literal["target_only", "fused", "blocking", "pipelined", "hybrid"] = "pipelined"
    routing: Literal["random", "round_robin", "jsq"] = "round_robin"
    drafts: Drafts = Field(default_factory=Drafts)
    targets: Targets = Field(default_factory=Targets)
    network: Network = Field(default_factory=Network)
    acceptance: Acceptance = Field(default_factory=Acceptance)
    gamma: Gamma = Field(default_factory=Gamma)
    hybrid: Hybrid = Field(default_factory=Hybrid)
    self_drafting: SelfDrafting = Field(default_factory=SelfDrafting)
    profiles: dict[str, Profile] = Field(default_factory=dict, description=(
        "kinds of request with their own drafting; a trace row's optional `profile` names one"))
    workload: Workload = Field(default_factory=Workload)
    slo: Slo = Field(default_factory=Slo)
    draft_probs: bool = Field(False, description="windows carry draft probabilities (sampling): bigger uplink")

    @model_validator(mode="after")
    def _warmup(self) -> Scenario:
        if self.warmup_s >= self.duration_s:
            raise ValueError("warmup_s must be < duration_s")
        return self


def _format_errors(error: pydantic.ValidationError, source: str) -> ScenarioError:
    lines = []
    for e in error.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{path}: {e['msg']}")
    return ScenarioError(f"{source}: invalid scenario\n  " + "\n  ".join(lines))


def _set_path(doc: dict[str, Any], dotted: str, value: Any) -> None:
    node = doc
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ScenarioError(f"override {dotted}: {key} is not a section")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value parsed as YAML, so numbers and lists keep their types)."""
    if "=" not in text:
        raise ScenarioError(f"override {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def from_dict(doc: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "scenario") -> Scenario:
    doc = json.loads(json.dumps(doc, default=str))  # a deep copy that overrides cannot leak into
    for key, value in (overrides or {}).items():
        _set_path(doc, key, value)
    try:
        scenario = Scenario.model_validate(doc)
    except pydantic.ValidationError as e:
        raise _format_errors(e, source) from None
    return scenario


def load(path: Path, overrides: dict[str, Any] | None = None) -> Scenario:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ScenarioError(f"{path}: cannot read scenario: {e}") from None
    if not isinstance(doc, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping of sections")
    scenario = from_dict(doc, overrides, str(path))
    return _resolve_files(scenario, path.parent)


def _resolve_files(s: Scenario, base: Path) -> Scenario:
    """Relative file paths in a scenario are relative to the scenario file."""
    updates: dict[str, Any] = {}
    if s.acceptance.file is not None and not s.acceptance.file.is_absolute():
        updates["acceptance"] = s.acceptance.model_copy(update={"file": base / s.acceptance.file})
    if s.workload.file is not None and not s.workload.file.is_absolute():
        updates["workload"] = s.workload.model_copy(update={"file": base / s.workload.file})
    return s.model_copy(update=updates) if updates else s
