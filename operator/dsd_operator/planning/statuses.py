"""A DSDDeployment's status from what the cluster shows: per-role replicas, pod scheduling, edge nodes.

Pure: the reconciler gathers `Observation`s and hands them here. Conditions keep their lastTransitionTime while
their status does not change, so an unchanged world yields an identical status and the reconciler writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dsd_operator import labels
from dsd_operator.labels import Condition, Reason
from dsd_operator.planning.children import LoopDecisions


@dataclass(frozen=True)
class RoleObservation:
    """One role as the cluster shows it. `deployment_status` is None while the Deployment does not exist."""

    desired: int
    deployment_generation: int = 0
    deployment_status: dict[str, Any] | None = None
    unschedulable: tuple[str, ...] = ()  # the scheduler's messages of Pending pods, deduplicated


@dataclass(frozen=True)
class ClusterObservation:
    """The drafts of one spec.draft.placements entry, as its edge cluster shows them."""

    name: str
    reachable: bool
    message: str
    desired: int
    ready: int = 0


@dataclass(frozen=True)
class Observation:
    generation: int
    gamma: int
    target_endpoint: str
    api_endpoint: str
    roles: dict[str, RoleObservation]
    edge_nodes: int | None = None  # None: the draft does not use the default edge placement
    previous_conditions: list[dict[str, Any]] = field(default_factory=list)
    apply_failures: tuple[str, ...] = ()  # children the API server refused, with its message
    clusters: tuple[ClusterObservation, ...] = ()  # edge clusters of spec.draft.placements
    target_external_endpoint: str = ""
    previous_clusters: list[dict[str, Any]] = field(default_factory=list)  # status.clusters as it is


@dataclass(frozen=True)
class _Cond:
    type: str
    status: bool
    reason: str
    message: str


def _role_status(o: RoleObservation) -> dict[str, int | str]:
    s = o.deployment_status or {}
    ready = int(s.get("readyReplicas") or 0)
    return {"desiredReplicas": o.desired, "replicas": int(s.get("replicas") or 0), "readyReplicas": ready,
            "updatedReplicas": int(s.get("updatedReplicas") or 0), "summary": f"{ready}/{o.desired}"}


def _role_ready(role: str, o: RoleObservation, edge_nodes: int | None) -> _Cond:
    ctype = Condition.TARGET_READY if role == labels.TARGET else Condition.DRAFT_READY
    ready = int((o.deployment_status or {}).get("readyReplicas") or 0)
    if role == labels.DRAFT and edge_nodes == 0 and o.desired > 0:
        return _Cond(ctype, False, Reason.NO_EDGE_NODES,
                     "draft: no node is labelled node-role.kubernetes.io/edge or dsd.dev/tier=edge; label the edge "
                     "nodes or set spec.draft.placement")
    if o.unschedulable:
        return _Cond(ctype, False, Reason.UNSCHEDULABLE, f"{role}: " + "; ".join(o.unschedulable))
    if o.desired == 0:
        return _Cond(ctype, False, Reason.SCALED_TO_ZERO, f"{role}: scaled to 0 replicas")
    if ready < o.desired:
        return _Cond(ctype, False, Reason.NOT_READY, f"{role}: {ready}/{o.desired} pods ready")
    return _Cond(ctype, True, Reason.READY, f"{role}: {ready}/{o.desired} pods ready")


def _progressing(roles: dict[str, RoleObservation]) -> _Cond:
    rolling = []
    for role, o in roles.items():
        s = o.deployment_status
        if s is None or int(s.get("observedGeneration") or 0) < o.deployment_generation:
            rolling.append(f"{role}: deployment not observed yet")
            continue
        updated, total = int(s.get("updatedReplicas") or 0), int(s.get("replicas") or 0)
        if updated < o.desired or total > o.desired:
            rolling.append(f"{role}: {updated}/{o.desired} pods updated, {total} exist")
    if rolling:
        return _Cond(Condition.PROGRESSING, True, Reason.ROLLING_OUT, "; ".join(rolling))
    return _Cond(Condition.PROGRESSING, False, Reason.COMPLETE, "all roles run the current spec")


def _drafts_everywhere(local: _Cond, o: RoleObservation, clusters: tuple[ClusterObservation, ...]) -> _Cond:
    """DraftReady over this cluster's drafts and every edge cluster's: ready when each group is."""
    ready_here = int((o.deployment_status or {}).get("readyReplicas") or 0)
    groups = ([("here", ready_here, o.desired)] if o.desired else []) + [
        (c.name, c.ready, c.desired) for c in clusters if c.desired]
    summary = ", ".join(f"{name} {ready}/{desired}" for name, ready, desired in groups)
    if local.reason in (Reason.UNSCHEDULABLE, Reason.NO_EDGE_NODES):
        return local
    if not groups:
        return _Cond(Condition.DRAFT_READY, False, Reason.SCALED_TO_ZERO, "draft: scaled to 0 replicas everywhere")
    if any(ready < desired for _, ready, desired in groups):
        return _Cond(Condition.DRAFT_READY, False, Reason.NOT_READY, f"draft: pods ready {summary}")
    return _Cond(Condition.DRAFT_READY, True, Reason.READY, f"draft: pods ready {summary}")


def _clusters_reachable(clusters: tuple[ClusterObservation, ...]) -> _Cond:
    down = [c for c in clusters if not c.reachable]
    if down:
        reason = Reason.UNKNOWN_CLUSTER if any(m.message.startswith("no kubeconfig") for m in down) \
            else Reason.UNREACHABLE
        return _Cond(Condition.CLUSTERS_REACHABLE, False, reason, "; ".join(f"{c.name}: {c.message}" for c in down))
    return _Cond(Condition.CLUSTERS_REACHABLE, True, Reason.REACHABLE,
                 f"edge clusters reachable: {', '.join(c.name for c in clusters)}")


def _conditions(obs: Observation) -> list[_Cond]:
    per_role = [_role_ready(role, o, obs.edge_nodes if role == labels.DRAFT else None)
                for role, o in obs.roles.items()]
    if obs.clusters:
        per_role = [_drafts_everywhere(c, obs.roles[labels.DRAFT], obs.clusters)
                    if c.type == Condition.DRAFT_READY else c for c in per_role]
    problems = [c for c in per_role if c.reason in (Reason.UNSCHEDULABLE, Reason.NO_EDGE_NODES)]
    if obs.apply_failures:
        problems.insert(0, _Cond(Condition.DEGRADED, True, Reason.APPLY_FAILED,
                                 "the API server refused " + "; ".join(obs.apply_failures)))
    degraded = (_Cond(Condition.DEGRADED, True, problems[0].reason, "; ".join(c.message for c in problems))
                if problems else _Cond(Condition.DEGRADED, False, Reason.AS_EXPECTED, "no placement problem"))
    failing = [c for c in per_role if not c.status]
    ready = (_Cond(Condition.READY, False, failing[0].reason, "; ".join(c.message for c in failing)) if failing
             else _Cond(Condition.READY, True, Reason.ALL_READY, "target and draft pods are ready"))
    out = [ready, *per_role, _progressing(obs.roles), degraded]
    return [*out, _clusters_reachable(obs.clusters)] if obs.clusters else out


# Conditions other writers own (the metrics loop): carried over unchanged.
_CARRIED = (Condition.METRICS_AVAILABLE,)
# Fields of a status.clusters entry the metrics loop owns (its decisions for that cluster): carried over too.
CLUSTER_LOOP_FIELDS = ("speculation", "metrics", "metricsAvailable", "metricsMessage", "avoidedNodes")


def _cluster_entries(obs: Observation) -> list[dict[str, Any]]:
    loop = {c.get("name"): {k: c[k] for k in CLUSTER_LOOP_FIELDS if k in c} for c in obs.previous_clusters}
    return [{"name": c.name, "reachable": c.reachable, "message": c.message, "desiredReplicas": c.desired,
             "readyReplicas": c.ready, **loop.get(c.name, {})} for c in obs.clusters]


def status(obs: Observation, now: str) -> dict[str, Any]:
    """The full status object; `now` (RFC 3339) stamps conditions whose status changed."""
    previous = {c.get("type"): c for c in obs.previous_conditions}
    conditions = []
    for c in _conditions(obs):
        value = "True" if c.status else "False"
        old = previous.get(c.type)
        since = old["lastTransitionTime"] if old and old.get("status") == value and old.get(
            "lastTransitionTime") else now
        conditions.append({"type": c.type, "status": value, "reason": c.reason, "message": c.message,
                           "lastTransitionTime": since, "observedGeneration": obs.generation})
    conditions += [c for c in obs.previous_conditions if c.get("type") in _CARRIED]
    return {
        "observedGeneration": obs.generation, "conditions": conditions,
        **{role: _role_status(o) for role, o in obs.roles.items()},
        "gamma": obs.gamma, "targetEndpoint": obs.target_endpoint, "apiEndpoint": obs.api_endpoint,
        **({"targetExternalEndpoint": obs.target_external_endpoint} if obs.target_external_endpoint else {}),
        **({"clusters": _cluster_entries(obs)} if obs.clusters else {}),
    }


def cluster_loop_decisions(status: dict[str, Any], cluster: str,
                           loop: LoopDecisions | None) -> LoopDecisions | None:
    """What the loop decided for the drafts in edge cluster `cluster` (its entry of status.clusters); without a
    decision of its own (no Prometheus there yet) the deployment-wide window and mode, and no node to avoid (the
    deployment-wide avoided nodes are this cluster's)."""
    if loop is None:
        return None
    entry = next((c for c in status.get("clusters") or [] if c.get("name") == cluster), {})
    own = entry.get("speculation")
    if not own or not own.get("gamma"):
        return LoopDecisions(loop.gamma, loop.mode)
    return LoopDecisions(int(own["gamma"]), own.get("mode") or loop.mode,
                                  tuple(a["node"] for a in entry.get("avoidedNodes") or []))
