"""Drafts in edge clusters: the children of spec.draft.placements, applied level-based through each cluster's
client, and removed when a placement (or the DSDDeployment) goes.

Per placement: the namespace (same name as here), copies of the draft's certificate Secret and of the API-key
Secret, then ConfigMap, Service and Deployment from the pure planner. Owner references cannot cross clusters,
so each child carries the `dsd.dev/owner` annotation and clean-up deletes only children that name this owner.
An unreachable or unknown cluster is reported (ClustersReachable=False) and skipped; the other edges go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kubernetes.dynamic.exceptions import DynamicApiError
from urllib3.exceptions import HTTPError

from dsd_operator import labels
from dsd_operator.api import v1alpha1 as api
from dsd_operator.applying.cluster import Cluster, Manifest, covers
from dsd_operator.applying.clusters import ClusterRegistry
from dsd_operator.labels import Reason
from dsd_operator.planning import children
from dsd_operator.planning.statuses import ClusterObservation, cluster_loop_decisions

log = logging.getLogger(__name__)
# What a remote placement consists of, in the order clean-up deletes it.
_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"), ("v1", "Secret"))
_CALL_ERRORS = (DynamicApiError, HTTPError, OSError)


@dataclass(frozen=True)
class _Names:
    """The names of one DSDDeployment's children in an edge cluster."""

    owner: children.Owner
    auth: str | None

    def of(self, kind: str) -> list[str]:
        n = self.owner.name
        if kind == "Deployment" or kind == "Service":
            return [labels.role_object_name(n, labels.DRAFT)]
        if kind == "ConfigMap":
            return [labels.config_map_name(n)]
        return [labels.tls_secret_name(n, labels.DRAFT), *([self.auth] if self.auth else [])]


class RemoteDrafts:
    def __init__(self, local: Cluster, registry: ClusterRegistry) -> None:
        self.local = local
        self.registry = registry

    def ensure(self, cr: Manifest, owner: children.Owner, spec: api.DSDDeploymentSpec,
               loop: children.LoopDecisions | None) -> tuple[ClusterObservation, ...]:
        seen = []
        for placement in spec.draft.placements:
            edge, reach = self.registry.get(placement.cluster)
            if edge is None:
                seen.append(ClusterObservation(placement.cluster, False, reach.message, placement.replicas))
                continue
            try:
                ready = self._apply(cr, edge, owner, spec, placement,
                                    cluster_loop_decisions(cr.get("status") or {}, placement.cluster, loop))
            except Exception as e:  # one edge's failure must not stop this cluster's or the other edges' work
                if not isinstance(e, _CALL_ERRORS):
                    log.exception("cluster %s: applying the drafts failed", placement.cluster)
                self.registry.forget_probe(placement.cluster)
                detail = e.summary() if isinstance(e, DynamicApiError) else str(e)
                message = f"applying the drafts failed: {detail[:200]}"
                log.warning("%s/%s: cluster %s: %s", owner.namespace, owner.name, placement.cluster, message)
                seen.append(ClusterObservation(placement.cluster, False, message, placement.replicas))
                continue
            seen.append(ClusterObservation(placement.cluster, True, reach.message, placement.replicas, ready))
        return tuple(seen)

    def _apply(self, cr: Manifest, edge: Cluster, owner: children.Owner, spec: api.DSDDeploymentSpec,
               placement: api.DraftPlacement, loop: children.LoopDecisions | None) -> int:
        if edge.get("v1", "Namespace", "", owner.namespace) is None:
            edge.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": owner.namespace, "labels": {"app.kubernetes.io/part-of": "dsd"}}})
        wanted = [*self._secret_copies(owner, spec), *children.remote_drafts(owner, spec, placement, loop)]
        deployment = None
        for m in wanted:
            meta = m["metadata"]
            live = edge.get(m["apiVersion"], m["kind"], meta["namespace"], meta["name"])
            if live is None or not covers(live, m):
                verb = "created" if live is None else "updated"
                live = edge.apply(m)
                self.local.event(cr, "Normal", Reason.CREATED if verb == "created" else Reason.UPDATED,
                                 f"cluster {placement.cluster}: {verb} {m['kind']} {meta['name']}")
            if m["kind"] == "Deployment":
                deployment = live
        return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)

    def _secret_copies(self, owner: children.Owner, spec: api.DSDDeploymentSpec) -> list[Manifest]:
        """The draft's certificate (and the API keys) as they are here: the edge's kubelet mounts the copies,
        so a renewal here reaches the edge at the next reconcile."""
        names = []
        if children.uses_tls(spec):
            names.append(labels.tls_secret_name(owner.name, labels.DRAFT))
        if spec.api.auth is not None:
            names.append(spec.api.auth.secret_ref.name)
        out = []
        for name in names:
            source = self.local.get("v1", "Secret", owner.namespace, name)
            if source is None:
                continue  # not issued yet / the user's Secret is missing: the next reconcile copies it
            out.append({"apiVersion": "v1", "kind": "Secret", "type": source.get("type") or "Opaque",
                        "metadata": owner.remote_metadata(name, "tls" if name.endswith("-tls") else "api-keys"),
                        "data": source.get("data") or {}})
        return out

    def remove(self, cr: Manifest, owner: children.Owner, spec: api.DSDDeploymentSpec | None,
               clusters: list[str]) -> list[str]:
        """Deletes this owner's children in `clusters`; the clusters it could not clean (unreachable) are
        returned. A cluster whose kubeconfig Secret is gone cannot be cleaned and is let go, with an Event."""
        auth = spec.api.auth.secret_ref.name if spec is not None and spec.api.auth is not None else None
        names = _Names(owner, auth)
        left = []
        for name in clusters:
            if name not in self.registry.names():
                self.local.event(cr, "Warning", Reason.UNKNOWN_CLUSTER,
                                 f"cluster {name} is no longer registered: its drafts cannot be removed from here")
                continue
            edge, _ = self.registry.get(name)
            if edge is None:
                left.append(name)
                continue
            try:
                for api_version, kind in _KINDS:
                    for obj in names.of(kind):
                        live = edge.get(api_version, kind, owner.namespace, obj)
                        if live is not None and (live["metadata"].get("annotations") or {}).get(
                                labels.OWNER_ANNOTATION) == owner.remote_id:
                            edge.delete(api_version, kind, owner.namespace, obj)
            except _CALL_ERRORS as e:
                log.warning("%s/%s: cleaning cluster %s failed: %s", owner.namespace, owner.name, name, e)
                self.registry.forget_probe(name)
                left.append(name)
                continue
            self.local.event(cr, "Normal", Reason.DELETED, f"cluster {name}: removed the drafts of {owner.name}")
        return left
