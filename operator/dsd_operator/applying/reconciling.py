"""Level-based reconcile of one DSDDeployment: scalers, children, then status. Idempotent; no-op = no writes.

Called by the kopf handlers (for the resource, its children, its pods) and by the periodic resync. Replicas flow
spec.<role>.replicas -> DSDRoleScaler (only when the spec value changes) -> Deployment, so `kubectl scale`,
HPA and KEDA act on the scaler and the operator never resets what they chose.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from typing import Any

import pydantic
from kubernetes.dynamic.exceptions import DynamicApiError, ForbiddenError
from prometheus_client import Counter

from dsd_operator import labels
from dsd_operator.api import v1alpha1 as api
from dsd_operator.applying.certificates import Certificates
from dsd_operator.applying.cluster import Cluster, Manifest, covers, now_rfc3339
from dsd_operator.applying.clusters import ClusterRegistry
from dsd_operator.applying.remote import RemoteDrafts
from dsd_operator.labels import Reason
from dsd_operator.planning import children, placing, statuses

log = logging.getLogger(__name__)
RECONCILES = Counter("dsd_operator_reconciles", "Reconciles of DSDDeployments", ["namespace", "name"])
DSD_API_VERSION = f"{api.GROUP}/{api.VERSION}"
EDGE_NODES_TTL_S = 2.0


def _without_replicas(deployment: Manifest) -> Manifest:
    return {**deployment, "spec": {k: v for k, v in deployment["spec"].items() if k != "replicas"}}


def _unschedulable_messages(pods: list[Manifest], role: str) -> tuple[str, ...]:
    seen: list[str] = []
    for pod in pods:
        if pod["metadata"].get("labels", {}).get(labels.ROLE_LABEL) != role:
            continue
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                msg = (c.get("message") or "unschedulable").strip()
                if msg not in seen:
                    seen.append(msg)
    return tuple(seen)


def loop_decisions(spec: api.DSDDeploymentSpec, status: dict[str, Any]) -> children.LoopDecisions | None:
    """The metrics loop's decisions kept in status; None while the loop does not run for this resource."""
    speculation = status.get("speculation")
    if not spec.autotune.enabled or not speculation:
        return None
    avoid = tuple(a["node"] for a in (status.get("placement") or {}).get("avoidedNodes") or [])
    return children.LoopDecisions(int(speculation.get("gamma") or spec.speculation.gamma),
                                  speculation.get("mode") or "speculate", avoid)


def _api_error(e: DynamicApiError) -> str:
    """The API server's own message (a webhook's denial, an invalid field), not the whole HTTP response."""
    try:
        return str(json.loads(e.body).get("message") or e.summary())
    except (TypeError, ValueError):
        return e.summary()


class Reconciler:
    def __init__(self, cluster: Cluster, clusters_namespace: str = "") -> None:
        self.cluster = cluster
        self.certificates = Certificates(cluster)
        self.remote = RemoteDrafts(cluster, ClusterRegistry(cluster, clusters_namespace))
        self._locks: collections.defaultdict[tuple[str, str], threading.Lock] = collections.defaultdict(
            threading.Lock)
        self._nodes_lock = threading.Lock()
        self._edge_count: tuple[float, int] | None = None  # (when counted, edge nodes)

    def lock(self, namespace: str, name: str) -> threading.Lock:
        """Held by every writer of one DSDDeployment's status (reconciles and the metrics loop)."""
        return self._locks[(namespace, name)]

    def reconcile(self, namespace: str, name: str) -> None:
        try:
            self._reconcile(namespace, name)
        except ForbiddenError as e:
            if "NamespaceTerminating" not in str(e.body):
                raise
            log.debug("%s/%s: namespace is being deleted; nothing to do", namespace, name)

    def _reconcile(self, namespace: str, name: str) -> None:
        with self._locks[(namespace, name)]:  # events of several children may arrive on several workers
            cr = self.cluster.get(DSD_API_VERSION, api.DEPLOYMENT_KIND, namespace, name)
            if cr is None:
                return
            if cr["metadata"].get("deletionTimestamp"):
                self._finalize(cr)  # owner references let the garbage collector remove the local children
                return
            try:
                spec = api.DSDDeploymentSpec.model_validate(cr["spec"])
            except pydantic.ValidationError as e:  # the CRD should have rejected it; say what is wrong
                self._invalid(cr, e)
                return
            owner = children.Owner(name, namespace, cr["metadata"]["uid"])
            scalers = {role: self._ensure_scaler(cr, owner, spec, role) for role in labels.ROLES}
            replicas = {role: int(s["spec"].get("replicas", 1)) for role, s in scalers.items()}
            loop = loop_decisions(spec, cr.get("status") or {})
            live: dict[str, Manifest | None] = {}
            failures: list[str] = []
            try:  # before the pods that mount them
                self.certificates.ensure(cr, owner, spec)
            except DynamicApiError as e:
                failures.append(f"certificates: {_api_error(e)}")
                log.warning("%s/%s: could not write certificates: %s", namespace, name, failures[-1])
            for m in children.workload(owner, spec, replicas, loop):
                key = m["kind"] + "/" + m["metadata"]["name"]
                try:
                    live[key] = self._ensure(cr, m)
                except DynamicApiError as e:  # a webhook's denial, a port clash: tell the user, go on with the rest
                    failures.append(f"{key}: {_api_error(e)}")
                    log.warning("%s/%s: the API server refused %s", namespace, name, failures[-1])
                    live[key] = self.cluster.get(m["apiVersion"], m["kind"], namespace, m["metadata"]["name"])
            if not spec.security.network_policies:
                self._remove_network_policies(cr, owner)
            edges = self._ensure_remote(cr, owner, spec, loop)
            deployments = {role: live["Deployment/" + labels.role_object_name(name, role)] for role in labels.ROLES}
            self._update_status(cr, owner, spec, replicas, deployments, loop, tuple(failures), edges)
            for role in labels.ROLES:
                if (d := deployments[role]) is not None:
                    self._update_scaler_status(scalers[role], d)
            RECONCILES.labels(namespace, name).inc()

    def _ensure_remote(self, cr: Manifest, owner: children.Owner, spec: api.DSDDeploymentSpec,
                       loop: children.LoopDecisions | None) -> tuple[statuses.ClusterObservation, ...]:
        """The drafts of spec.draft.placements in their clusters, those of dropped placements removed, and the
        finalizer held exactly while any may exist elsewhere."""
        placed = {p.cluster for p in spec.draft.placements}
        if placed:  # before creating anything remote: a deletion must find the finalizer
            self._set_finalizer(cr, True)
        edges = self.remote.ensure(cr, owner, spec, loop) if placed else ()
        dropped = [c["name"] for c in (cr.get("status") or {}).get("clusters") or [] if c["name"] not in placed]
        left = self.remote.remove(cr, owner, spec, dropped) if dropped else []
        edges += tuple(statuses.ClusterObservation(c, False, "placement removed; its drafts are still there "
                                                            "(cluster unreachable)", 0) for c in left)
        if not edges:
            self._set_finalizer(cr, False)
        return edges

    def _finalize(self, cr: Manifest) -> None:
        """A DSDDeployment being deleted: its drafts in other clusters go, then the finalizer."""
        meta = cr["metadata"]
        if labels.REMOTE_FINALIZER not in (meta.get("finalizers") or []):
            return
        owner = children.Owner(meta["name"], meta["namespace"], meta["uid"])
        try:
            spec: api.DSDDeploymentSpec | None = api.DSDDeploymentSpec.model_validate(cr["spec"])
        except pydantic.ValidationError:
            spec = None
        clusters = sorted({c["name"] for c in (cr.get("status") or {}).get("clusters") or []} |
                          {p.cluster for p in (spec.draft.placements if spec else [])})
        left = self.remote.remove(cr, owner, spec, clusters)
        if left:
            log.warning("%s/%s: deletion waits for clusters %s (unreachable) to remove its drafts",
                        owner.namespace, owner.name, left)
            return  # the resync retries
        self._set_finalizer(cr, False)

    def _set_finalizer(self, cr: Manifest, present: bool) -> None:
        meta = cr["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if (labels.REMOTE_FINALIZER in finalizers) == present:
            return
        finalizers = [*finalizers, labels.REMOTE_FINALIZER] if present else [
            f for f in finalizers if f != labels.REMOTE_FINALIZER]
        # resourceVersion: a concurrent change to the list conflicts (409) instead of being overwritten
        self.cluster.patch_merge(DSD_API_VERSION, api.DEPLOYMENT_KIND, meta["namespace"], meta["name"],
                                 {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}})
        meta["finalizers"] = finalizers

    def _remove_network_policies(self, cr: Manifest, owner: children.Owner) -> None:
        """spec.security.networkPolicies switched off: the policies made earlier go (owner references would
        keep them until the DSDDeployment itself goes)."""
        for role in labels.ROLES:
            policy = labels.role_object_name(owner.name, role)
            live = self.cluster.get("networking.k8s.io/v1", "NetworkPolicy", owner.namespace, policy)
            if live is not None and any(r.get("uid") == owner.uid for r in live["metadata"].get("ownerReferences")
                                        or []):
                self.cluster.delete("networking.k8s.io/v1", "NetworkPolicy", owner.namespace, policy)
                self.cluster.event(cr, "Normal", Reason.DELETED, f"deleted NetworkPolicy {policy}")

    def _ensure_scaler(self, cr: Manifest, owner: children.Owner, spec: api.DSDDeploymentSpec, role: str) -> Manifest:
        name = labels.role_object_name(owner.name, role)
        wanted = children.role_replicas(spec, role)
        current = self.cluster.get(DSD_API_VERSION, api.SCALER_KIND, owner.namespace, name)
        if current is None:
            current = self.cluster.apply(children.scaler(owner, role, wanted))
            self.cluster.event(cr, "Normal", Reason.CREATED, f"created {api.SCALER_KIND} {name} ({wanted} replicas)")
            return current
        seeded = (current["metadata"].get("annotations") or {}).get(labels.SEEDED_REPLICAS_ANNOTATION)
        if seeded != str(wanted):  # the spec's replicas changed since we last copied it: the spec wins this time
            patch = {"metadata": {"annotations": {labels.SEEDED_REPLICAS_ANNOTATION: str(wanted)}},
                     "spec": {"replicas": wanted}}
            self.cluster.patch_merge(DSD_API_VERSION, api.SCALER_KIND, owner.namespace, name, patch)
            self.cluster.event(cr, "Normal", Reason.SCALED, f"{role}: spec.{role}.replicas set to {wanted}")
            current["spec"]["replicas"] = wanted
        return current

    def _ensure(self, cr: Manifest, desired: Manifest) -> Manifest:
        meta = desired["metadata"]
        kind, name = desired["kind"], meta["name"]
        live = self.cluster.get(desired["apiVersion"], kind, meta["namespace"], name)
        if live is not None and covers(live, desired):
            return live
        applied = self.cluster.apply(desired)
        if live is None:
            self.cluster.event(cr, "Normal", Reason.CREATED, f"created {kind} {name}")
        elif kind == "ConfigMap":
            self.cluster.event(cr, "Normal", Reason.CONFIG_UPDATED,
                               f"updated {name}: drafts reload the speculation window without restarting")
        elif kind == "Deployment" and covers(live, _without_replicas(desired)):
            self.cluster.event(cr, "Normal", Reason.SCALED,
                               f"scaled {name} to {desired['spec']['replicas']} replicas")
        else:
            self.cluster.event(cr, "Normal", Reason.UPDATED,
                               f"updated {kind} {name}" + (" (rolling out)" if kind == "Deployment" else ""))
        return applied

    def _edge_nodes(self, spec: api.DSDDeploymentSpec) -> int | None:
        """Edge nodes in the cluster; one node list serves every reconcile for EDGE_NODES_TTL_S (a resync of
        many resources would otherwise list all nodes once per resource)."""
        if not placing.uses_default_draft_affinity(spec):
            return None
        now = time.monotonic()
        with self._nodes_lock:
            if self._edge_count is None or now - self._edge_count[0] > EDGE_NODES_TTL_S:
                nodes = self.cluster.list("v1", "Node")
                self._edge_count = (now, sum(1 for n in nodes if placing.is_edge_node(
                    n["metadata"].get("labels") or {})))
            return self._edge_count[1]

    def _update_status(self, cr: Manifest, owner: children.Owner, spec: api.DSDDeploymentSpec,
                       replicas: dict[str, int], deployments: dict[str, Manifest | None],
                       loop: children.LoopDecisions | None, failures: tuple[str, ...],
                       edges: tuple[statuses.ClusterObservation, ...] = ()) -> None:
        pods = self.cluster.list("v1", "Pod", owner.namespace, f"{labels.DEPLOYMENT_LABEL}={owner.name}")
        old: dict[str, Any] = cr.get("status") or {}
        obs = statuses.Observation(
            generation=int(cr["metadata"].get("generation") or 0),
            gamma=loop.gamma if loop is not None else spec.speculation.gamma,
            target_endpoint=children.target_address(owner, spec), api_endpoint=children.api_url(owner, spec),
            roles={role: statuses.RoleObservation(
                desired=replicas[role], deployment_generation=int((d or {}).get("metadata", {}).get("generation") or 0),
                deployment_status=(d or {}).get("status"), unschedulable=_unschedulable_messages(pods, role))
                for role, d in deployments.items()},
            edge_nodes=self._edge_nodes(spec), previous_conditions=list(old.get("conditions") or []),
            apply_failures=failures, clusters=edges,
            target_external_endpoint=spec.target.expose.address if spec.target.expose else "",
            previous_clusters=list(old.get("clusters") or []))
        new = statuses.status(obs, now_rfc3339())
        # A merge patch keeps fields it does not mention: clear what this status no longer has (the CRD's
        # defaults fill an empty value back in, which is no drift).
        gone = {k: None for k in ("clusters", "targetExternalEndpoint") if old.get(k) and k not in new}
        if covers(old, new) and not gone:
            return
        self._announce_changes(cr, old, new)
        self.cluster.patch_merge(DSD_API_VERSION, api.DEPLOYMENT_KIND, owner.namespace, owner.name,
                                 {"status": {**new, **gone}}, status=True)

    def _announce_changes(self, cr: Manifest, old: dict[str, Any], new: dict[str, Any]) -> None:
        """One Event per condition that changed status (e.g. Degraded=True with the scheduler's reason). The
        first status of a new resource announces only a problem: its Created events tell the rest."""
        before = {c["type"]: c.get("status") for c in old.get("conditions") or []}
        for c in new["conditions"]:
            problem = c["type"] == labels.Condition.DEGRADED and c["status"] == "True"
            if (before or problem) and before.get(c["type"]) != c["status"]:
                bad = c["type"] != labels.Condition.PROGRESSING and (
                    (c["type"] == labels.Condition.DEGRADED) == (c["status"] == "True"))
                self.cluster.event(cr, "Warning" if bad else "Normal", c["reason"],
                                   f"{c['type']}={c['status']}: {c['message']}")

    def _update_scaler_status(self, scaler: Manifest, deployment: Manifest) -> None:
        meta = scaler["metadata"]
        role = meta["labels"][labels.ROLE_LABEL]
        selector = ",".join(f"{k}={v}" for k, v in labels.role_selector(meta["labels"][labels.DEPLOYMENT_LABEL],
                                                                         role).items())
        new = {"replicas": int((deployment.get("status") or {}).get("replicas") or 0), "selector": selector}
        if not covers(scaler.get("status") or {}, new):
            self.cluster.patch_merge(DSD_API_VERSION, api.SCALER_KIND, meta["namespace"], meta["name"],
                                     {"status": new}, status=True)

    def _invalid(self, cr: Manifest, error: pydantic.ValidationError) -> None:
        problems = "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        log.error("%s/%s has an invalid spec: %s", cr["metadata"]["namespace"], cr["metadata"]["name"], problems)
        status = {"observedGeneration": cr["metadata"].get("generation", 0), "conditions": [
            {"type": labels.Condition.READY, "status": "False", "reason": Reason.INVALID_SPEC, "message": problems,
             "lastTransitionTime": now_rfc3339()}]}
        old = cr.get("status") or {}
        if [c.get("message") for c in old.get("conditions") or []][:1] != [problems]:
            self.cluster.event(cr, "Warning", Reason.INVALID_SPEC, problems)
            self.cluster.patch_merge(DSD_API_VERSION, api.DEPLOYMENT_KIND, cr["metadata"]["namespace"],
                                     cr["metadata"]["name"], {"status": status}, status=True)
