"""What the benchmarks read from running servers to replay a run in DSD-Sim: counter deltas from /metrics and
the target's traced forward passes (`dsd target --pass-trace`)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Counters (and histogram sums/counts) read before and after a measured span: sample name -> recorded key.
TARGET_SAMPLES = {"dsd_target_forward_pass_seconds_count": "passes",
                  "dsd_target_forward_pass_seconds_sum": "pass_seconds",
                  "dsd_target_batch_sequences_sum": "pass_sequences", "dsd_target_batch_tokens_sum": "pass_tokens",
                  "dsd_target_only_steps_total": "self_window",
                  "dsd_target_self_accepted_per_position_total": "self_accepted_at",
                  "dsd_target_self_reached_per_position_total": "self_reached_at"}
DRAFT_SAMPLES = {"dsd_speculation_rounds_total": "rounds", "dsd_draft_tokens_proposed_total": "proposed",
                 "dsd_draft_tokens_accepted_total": "accepted", "dsd_target_only_tokens_total": "target_only_tokens",
                 "dsd_tokens_generated_total": "tokens_generated",
                 "dsd_draft_tokens_accepted_per_position_total": "accepted_at",
                 "dsd_draft_tokens_reached_per_position_total": "reached_at"}


def scrape(url: str, wanted: dict[str, str]) -> dict[str, float]:
    """The wanted samples of one /metrics page, summed over labels; per-position (per-window) samples keyed
    `<key>_<position>` (`<key>_<window>`)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            key = wanted.get(sample.name)
            if key is not None:
                for label in ("position", "window"):
                    if label in sample.labels:
                        key = f"{key}_{sample.labels[label]}"
                values[key] = values.get(key, 0.0) + sample.value
    return values


def counters(target_metrics: str, draft_metrics: str) -> dict[str, float]:
    """The target's and the draft's samples (host:port of each /metrics)."""
    return {**scrape(f"http://{target_metrics}/metrics", TARGET_SAMPLES),
            **scrape(f"http://{draft_metrics}/metrics", DRAFT_SAMPLES)}


def usage_counters(dsd: dict) -> dict[str, float]:
    """One request's `usage.dsd` (docs/api.md) under the keys `counters` gives a span of the servers."""
    out = {"rounds": float(dsd["rounds"]), "proposed": float(dsd["proposed_tokens"]),
           "accepted": float(dsd["accepted_tokens"]), "target_only_tokens": float(dsd["target_only_tokens"])}
    for key, name in (("accepted_by_position", "accepted_at"), ("reached_by_position", "reached_at"),
                      ("self_accepted_by_position", "self_accepted_at"),
                      ("self_reached_by_position", "self_reached_at")):
        out.update({f"{name}_{i}": float(v) for i, v in enumerate(dsd[key], start=1)})
    out.update({f"self_window_{k}": float(v) for k, v in dsd["target_only_steps_by_window"].items()})
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


class PassTraceReader:
    """Reads a target's pass trace in spans: `since_last()` gives the passes traced after the previous call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def since_last(self) -> list[list[float]]:
        """[sequences, tokens, seconds] of every pass traced since the previous call."""
        if not self.path.exists():
            return []
        with self.path.open() as f:
            f.seek(self.offset)
            text = f.read()
        self.offset += len(text.encode())
        rows = [json.loads(line) for line in text.splitlines() if line]
        return [[r["sequences"], r["tokens"], r["seconds"]] for r in rows]
