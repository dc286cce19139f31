"""Where each role's pods may run: default edge/GPU placement, overridden part by part by spec.placement.

Draft default: nodes labelled node-role.kubernetes.io/edge (KubeEdge's convention) OR dsd.dev/tier=edge (a label a
k3s agent can set on itself, unlike node-role.*), tolerating the configurable edge taint, spread across zones.
Target default: the nvidia.com/gpu resource limit selects GPU nodes; the usual GPU taint is tolerated.
"""

from __future__ import annotations

from typing import Any

from dsd_operator import labels
from dsd_operator.api import v1alpha1 as api


def _toleration(t: api.Toleration) -> dict[str, Any]:
    out: dict[str, Any] = {"operator": t.operator}
    if t.key:
        out["key"] = t.key
    if t.operator == "Equal":
        out["value"] = t.value
    if t.effect:
        out["effect"] = t.effect
    return out


def edge_node_affinity(avoid: tuple[str, ...] = ()) -> dict[str, Any]:
    """Edge nodes by either label; `avoid`: node names the metrics loop excludes (unhealthy nodes)."""
    exclude = {"matchFields": [_not_named(avoid)]} if avoid else {}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": api.EDGE_ROLE_LABEL, "operator": "Exists"}], **exclude},
        {"matchExpressions": [{"key": api.EDGE_TIER_LABEL, "operator": "In", "values": [api.EDGE_TIER_VALUE]}],
         **exclude},
    ]}}}


def _not_named(avoid: tuple[str, ...]) -> dict[str, Any]:
    return {"key": "metadata.name", "operator": "NotIn", "values": sorted(avoid)}


def avoid_affinity(avoid: tuple[str, ...]) -> dict[str, Any]:
    """Node affinity that only excludes nodes (beside a nodeSelector, which it does not replace)."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [_not_named(avoid)]},
    ]}}}


def is_edge_node(node_labels: dict[str, str]) -> bool:
    """True for nodes the draft's default affinity accepts."""
    return api.EDGE_ROLE_LABEL in node_labels or node_labels.get(api.EDGE_TIER_LABEL) == api.EDGE_TIER_VALUE


def uses_default_draft_affinity(spec: api.DSDDeploymentSpec) -> bool:
    p = spec.draft.placement
    return p.node_selector is None and p.affinity is None


def pod_placement(spec: api.DSDDeploymentSpec, name: str, role: str, avoid: tuple[str, ...] = ()) -> dict[str, Any]:
    """nodeSelector / affinity / tolerations / topologySpreadConstraints for a role's pod spec.

    `avoid` (drafts): nodes to exclude; a user's own `affinity` is left as written (the loop does not edit it).
    """
    r: api.TargetRole | api.DraftRole = spec.target if role == labels.TARGET else spec.draft
    p = r.placement
    out: dict[str, Any] = {}
    if p.node_selector is not None:
        out["nodeSelector"] = dict(p.node_selector)
    if p.affinity is not None:
        out["affinity"] = p.affinity
    elif role == labels.DRAFT and p.node_selector is None:
        out["affinity"] = edge_node_affinity(avoid)
    elif role == labels.DRAFT and avoid:
        out["affinity"] = avoid_affinity(avoid)
    if p.tolerations is not None:
        out["tolerations"] = [_toleration(t) for t in p.tolerations]
    elif role == labels.TARGET:
        out["tolerations"] = [{"key": api.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    else:
        out["tolerations"] = [{"key": spec.draft.edge_taint_key, "operator": "Exists"}]
    if p.spread_across_zones:
        out["topologySpreadConstraints"] = [{
            "maxSkew": 1, "topologyKey": api.ZONE_LABEL, "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": labels.role_selector(name, role)},
        }]
    return out
