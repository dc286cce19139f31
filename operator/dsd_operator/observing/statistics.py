"""The PromQL behind `planning.signals.Signals`: one instant query per statistic, pooled over a role's pods.

Pods are selected by the labels the scrape configuration attaches (`namespace`, `pod`, `node`): a role's pods are
named `<deployment>-<role>-...` by their Deployment. Metric names are listed in docs/metrics.md. An edge
cluster's drafts are read from that cluster's Prometheus; the target's side always comes from this cluster's.
"""

from __future__ import annotations

from typing import Any

from dsd_operator import labels
from dsd_operator.observing.prometheus import MetricsUnavailable, PrometheusClient
from dsd_operator.planning.signals import Signals, Site

MAX_POSITIONS = 16  # dsd_runtime.metrics.MAX_POSITION_LABELS


def selector(namespace: str, name: str, role: str) -> str:
    return f'namespace="{namespace}",pod=~"{labels.role_object_name(name, role)}-.+"'


def _ratio(metric: str, sel: str, window: str, by: str = "") -> str:
    group = f" by ({by})" if by else ""
    return (f"sum{group}(rate({metric}_sum{{{sel}}}[{window}])) / "
            f"sum{group}(rate({metric}_count{{{sel}}}[{window}]))")


def _quantile(q: float, metric: str, sel: str, window: str) -> str:
    return f"histogram_quantile({q}, sum by (le)(rate({metric}_bucket{{{sel}}}[{window}])))"


def _rate(metric: str, sel: str, window: str, by: str = "") -> str:
    group = f" by ({by})" if by else ""
    return f"sum{group}(rate({metric}{{{sel}}}[{window}]))"


def read(prom: PrometheusClient, namespace: str, name: str, window_s: int, now: str) -> Signals:
    """Every statistic of one DSDDeployment. Raises MetricsUnavailable when Prometheus fails or scrapes none of
    its pods (empty: the pods are not annotated, or not up)."""
    d, t, w = selector(namespace, name, labels.DRAFT), selector(namespace, name, labels.TARGET), f"{window_s}s"
    drafts_up = int(prom.scalar(f"count(up{{{d}}} == 1)") or 0)
    targets_up = int(prom.scalar(f"count(up{{{t}}} == 1)") or 0)
    if not drafts_up and not targets_up:
        raise MetricsUnavailable("NoSamples", f"Prometheus scrapes no pod of {namespace}/{name} (up == 1 for none "
                                              "of its draft and target pods)")
    return Signals(sampled_at=now, drafts_up=drafts_up, **_target_side(prom, t, w, targets_up),
                   **_draft_side(prom, d, w))


def read_edge(prom: PrometheusClient, cluster: str, namespace: str, name: str, window_s: int, now: str,
              here: Signals) -> Signals:
    """The drafts of one edge cluster, from that cluster's own Prometheus (its children have the same namespace
    and names as here), with the target's side from this cluster's reading `here`: they verify against the
    same target replicas. Raises MetricsUnavailable when it fails or scrapes none of those drafts."""
    d, w = selector(namespace, name, labels.DRAFT), f"{window_s}s"
    drafts_up = int(prom.scalar(f"count(up{{{d}}} == 1)") or 0)
    if not drafts_up:
        raise MetricsUnavailable("NoSamples", f"cluster {cluster}: its Prometheus scrapes no draft of "
                                              f"{namespace}/{name}")
    target = {f: getattr(here, f) for f in _TARGET_FIELDS}
    return Signals(sampled_at=now, drafts_up=drafts_up, **target, **_draft_side(prom, d, w))


_TARGET_FIELDS = ("targets_up", "verify_s_by_positions", "compute_s", "target_busy", "target_queued")


def _target_side(prom: PrometheusClient, t: str, w: str, targets_up: int) -> dict[str, Any]:
    verify = sorted((int(s.labels["positions"]), s.value) for s in prom.query(
        _ratio("dsd_target_verify_compute_seconds", t, w, "positions")) if s.labels.get("positions", "").isdigit())
    return {"targets_up": targets_up, "verify_s_by_positions": tuple(verify),
            "compute_s": prom.scalar(_ratio("dsd_target_verify_compute_seconds", t, w)),
            # Time a forward pass was running: rounds batched into one pass overlap, so their own seconds are not it.
            "target_busy": prom.scalar(f"sum(rate(dsd_target_forward_pass_seconds_sum{{{t}}}[{w}]))") or 0.0,
            "target_queued": prom.scalar(f"sum(dsd_target_queued_rounds{{{t}}})") or 0.0}


def _draft_side(prom: PrometheusClient, d: str, w: str) -> dict[str, Any]:
    def scalar(q: str) -> float:
        return prom.scalar(q) or 0.0

    accepted = {int(s.labels.get("position", "0")): s.value for s in prom.query(
        _rate("dsd_draft_tokens_accepted_per_position_total", d, w, "position"))}
    reached = {int(s.labels.get("position", "0")): s.value for s in prom.query(
        _rate("dsd_draft_tokens_reached_per_position_total", d, w, "position"))}
    alphas = []
    for i in range(1, MAX_POSITIONS + 1):
        if reached.get(i, 0.0) <= 0.0:
            break
        alphas.append(min(1.0, accepted.get(i, 0.0) / reached[i]))
    rounds_by_node = {s.labels.get("node", ""): s.value for s in prom.query(
        _rate("dsd_speculation_rounds_total", d, w, "node"))}
    sites = tuple(Site(s.labels.get("node", ""), s.value, rounds_by_node.get(s.labels.get("node", ""), 0.0))
                  for s in prom.query(_ratio("dsd_verify_rtt_seconds", d, w, "node")))
    return {
        "tokens_per_s": scalar(_rate("dsd_tokens_generated_total", d, w)),
        "requests_per_s": scalar(_rate("dsd_requests_total", f'{d},endpoint=~".*completions"', w)),
        "active_requests": scalar(f"sum(dsd_active_requests{{{d}}})"),
        "rounds_per_s": scalar(_rate("dsd_speculation_rounds_total", d, w)),
        "proposed_per_s": scalar(_rate("dsd_draft_tokens_proposed_total", d, w)),
        "accepted_per_s": scalar(_rate("dsd_draft_tokens_accepted_total", d, w)),
        "alpha_by_position": tuple(alphas),
        "draft_step_s": prom.scalar(_ratio("dsd_draft_step_seconds", d, w)),
        "round_trip_s": prom.scalar(_ratio("dsd_verify_rtt_seconds", d, w)),
        "rtt_p90_s": prom.scalar(_quantile(0.9, "dsd_verify_rtt_seconds", d, w)),
        "ttft_p95_s": prom.scalar(_quantile(0.95, "dsd_time_to_first_token_seconds", d, w)),
        "tpot_p95_s": prom.scalar(_quantile(0.95, "dsd_inter_token_latency_seconds", d, w)),
        "token_gap_s": prom.scalar(_ratio("dsd_inter_token_latency_seconds", d, w)),
        "target_only_tokens_per_s": scalar(_rate("dsd_target_only_tokens_total", d, w)),
        "target_only_token_s": prom.scalar(_ratio("dsd_target_only_token_seconds", d, w)),
        "sites": sites,
    }
