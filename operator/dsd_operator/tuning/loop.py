"""The metrics-driven loop of every DSDDeployment: observe Prometheus, decide, act, every autotune interval.

Per resource and interval: read `Signals` (observing), decide the window and mode (planning.tuning), replicas
(planning.scaling) and the nodes drafts avoid (planning.moving), record each decision with its reason in status
and as an Event when it changes, then act: patch the role's DSDRoleScaler, and reconcile, which renders the
runtime ConfigMap (reaching running drafts without a restart) and the drafts' node affinity from status.
Decisions live in status, so a restarted operator continues where it stopped. When Prometheus fails the last
decision stays, `MetricsAvailable=False` says why, and replicas are not touched.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pydantic
from kubernetes.dynamic.exceptions import NotFoundError

from dsd_operator import labels
from dsd_operator.api import v1alpha1 as api
from dsd_operator.applying.cluster import Cluster, Manifest, covers, now_rfc3339
from dsd_operator.applying.reconciling import DSD_API_VERSION, Reconciler
from dsd_operator.labels import Condition, Reason
from dsd_operator.observing import statistics
from dsd_operator.observing.prometheus import MetricsUnavailable, PrometheusClient
from dsd_operator.planning import moving, placing, scaling, statuses, tuning
from dsd_operator.planning.signals import Signals

log = logging.getLogger(__name__)
LEASE_NAMESPACE = "kube-node-lease"


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _rfc3339(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _speculation_from_status(status: dict[str, Any]) -> tuning.Speculation | None:
    s = status.get("speculation")
    if not s or not s.get("gamma"):
        return None
    return tuning.Speculation(int(s["gamma"]), s.get("mode") or tuning.SPECULATE, s.get("reason") or "",
                              s.get("message") or "", _epoch(s.get("since")) or time.time(),
                              int(s.get("probeAfterSeconds") or 0), int(s.get("specGamma") or 0))


def speculation_status(d: tuning.Speculation) -> dict[str, Any]:
    return {"gamma": d.gamma, "mode": d.mode, "reason": d.reason, "message": d.message, "since": _rfc3339(d.since),
            "probeAfterSeconds": d.probe_after_s, "specGamma": d.spec_gamma}


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def _ms(x: float | None) -> float | None:
    return None if x is None else round(1e3 * x, 1)


def metrics_status(signals: Signals) -> dict[str, Any]:
    return {"acceptance": _round(signals.acceptance), "tokensPerRound": _round(signals.tokens_per_round, 2),
            "ttftP95Ms": _ms(signals.ttft_p95_s), "tpotP95Ms": _ms(signals.tpot_p95_s),
            "rttP90Ms": _ms(signals.rtt_p90_s), "requestsPerSecond": _round(signals.requests_per_s),
            "tokensPerSecond": _round(signals.tokens_per_s, 2),
            "targetUtilization": _round(signals.target_utilization), "sampledAt": signals.sampled_at,
            "sites": [{"node": site.node, "roundTripMs": _ms(site.round_trip_s),
                       "roundsPerSecond": _round(site.rounds_per_s)} for site in signals.sites]}


def avoided_status(avoided: list[moving.Avoided]) -> list[dict[str, Any]]:
    out = []
    for a in avoided:
        item = {"node": a.node, "reason": a.reason, "since": _rfc3339(a.since)}
        if a.healthy_since is not None:
            item["healthySince"] = _rfc3339(a.healthy_since)
        out.append(item)
    return out


def _condition(old: list[dict[str, Any]], status: bool, reason: str, message: str, generation: int,
               now: str) -> list[dict[str, Any]]:
    value = "True" if status else "False"
    prev = next((c for c in old if c.get("type") == Condition.METRICS_AVAILABLE), None)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == value else now
    cond = {"type": Condition.METRICS_AVAILABLE, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": since, "observedGeneration": generation}
    return [c for c in old if c.get("type") != Condition.METRICS_AVAILABLE] + [cond]


class Tuner:
    """Runs `tune` for each DSDDeployment when its interval has passed; `tick` lists them every `period_s`."""

    def __init__(self, reconciler: Reconciler, default_prometheus_url: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.reconciler = reconciler
        self.cluster = reconciler.cluster
        self.default_prometheus_url = default_prometheus_url
        self.clock = clock
        self._due: dict[tuple[str, str], float] = {}
        self._clients: dict[str, PrometheusClient] = {}

    def run(self, namespaces: list[str], stop: threading.Event, period_s: float = 2.0) -> None:
        while not stop.wait(period_s):
            try:
                self.tick(namespaces)
            except Exception:  # one failed pass must not end the loop
                log.exception("metrics loop pass failed")

    def tick(self, namespaces: list[str]) -> None:
        now_s = self.clock()
        for ns in namespaces or [None]:
            for cr in self.cluster.list(DSD_API_VERSION, api.DEPLOYMENT_KIND, ns):
                key = (cr["metadata"]["namespace"], cr["metadata"]["name"])
                if now_s >= self._due.get(key, 0.0):
                    interval = int(((cr.get("spec") or {}).get("autotune") or {}).get("intervalSeconds") or 15)
                    self._due[key] = now_s + interval
                    try:
                        self.tune(*key)
                    except Exception:
                        log.exception("metrics loop of %s/%s failed", *key)

    def _prometheus(self, url: str) -> PrometheusClient:
        if url not in self._clients:
            self._clients[url] = PrometheusClient(url)
        return self._clients[url]

    def tune(self, namespace: str, name: str) -> None:
        with self.reconciler.lock(namespace, name):
            changed = self._tune_locked(namespace, name)
        if changed:
            self.reconciler.reconcile(namespace, name)  # renders the ConfigMap and affinity from the new status

    def _tune_locked(self, namespace: str, name: str) -> bool:
        cr = self.cluster.get(DSD_API_VERSION, api.DEPLOYMENT_KIND, namespace, name)
        if cr is None or cr["metadata"].get("deletionTimestamp"):
            return False
        try:
            spec = api.DSDDeploymentSpec.model_validate(cr["spec"])
        except pydantic.ValidationError:
            return False  # the reconciler reports the invalid spec
        old: dict[str, Any] = cr.get("status") or {}
        url = spec.metrics.prometheus_url or self.default_prometheus_url
        if not spec.autotune.enabled or not url:
            return self._stand_down(cr, old)
        now_s, now = self.clock(), now_rfc3339()
        generation = int(cr["metadata"].get("generation") or 0)
        previous = _speculation_from_status(old) or tuning.initial(spec, now_s)
        new: dict[str, Any] = {}
        try:
            signals = statistics.read(self._prometheus(url), namespace, name, spec.autotune.rate_window_seconds, now)
        except MetricsUnavailable as e:
            signals = None
            new["conditions"] = _condition(old.get("conditions") or [], False, e.reason,
                                           f"{e.message}; keeping gamma {previous.gamma}, mode {previous.mode} "
                                           "and replicas", generation, now)
            decision = previous
        else:
            decision = tuning.decide(spec, signals, previous, now_s)
            new["metrics"] = metrics_status(signals)
            if signals.acceptance is not None:
                new["acceptance"] = f"{signals.acceptance:.2f}"
            if signals.tpot_p95_s is not None:
                new["tpotP95Ms"] = f"{1e3 * signals.tpot_p95_s:.0f}"
            ok, reason = (True, Reason.METRICS_READ) if signals.has_traffic else (True, Reason.NO_TRAFFIC)
            message = (f"{signals.drafts_up} draft and {signals.targets_up} target pods scraped, "
                       f"{signals.tokens_per_s:.1f} tokens/s over {spec.autotune.rate_window_seconds} s")
            new["conditions"] = _condition(old.get("conditions") or [], ok, reason, message, generation, now)
        new["speculation"] = speculation_status(decision)
        new["gamma"] = decision.gamma
        slow = {}
        if signals is not None:
            crossover = tuning.crossover_rtt_s(spec, signals)
            compute = signals.compute_s or 0.0
            slow = moving.slow_sites({site.node: max(0.0, site.round_trip_s - compute) for site in signals.sites
                                      if site.round_trip_s is not None and site.node}, crossover)
        avoided = self._placement(cr, spec, old, now_s, slow)
        if avoided is not None:
            new["placement"] = {"avoidedNodes": avoided}
        if signals is not None:
            new["scaling"] = self._scaling(cr, spec, signals, old, now_s)
        clusters = self._tune_clusters(cr, spec, old, signals, now_s, now)
        if clusters is not None:
            new["clusters"] = clusters
        self._announce(cr, old, new, previous, decision)
        if covers(old, new):
            return False
        self.cluster.patch_merge(DSD_API_VERSION, api.DEPLOYMENT_KIND, namespace, name, {"status": new}, status=True)
        return True

    def _stand_down(self, cr: Manifest, old: dict[str, Any]) -> bool:
        """The loop is off (disabled, or no Prometheus): drop its decisions so the spec applies as written."""
        entries = old.get("clusters") or []
        tuned = any(k in entry for entry in entries for k in statuses.CLUSTER_LOOP_FIELDS)
        if not tuned and not any(old.get(k) for k in ("speculation", "placement", "scaling", "metrics")):
            return False
        conditions = [c for c in old.get("conditions") or [] if c.get("type") != Condition.METRICS_AVAILABLE]
        patch = {"speculation": None, "placement": None, "scaling": None, "metrics": None, "acceptance": "",
                 "tpotP95Ms": "", "conditions": conditions}
        if tuned:
            patch["clusters"] = [{k: v for k, v in entry.items() if k not in statuses.CLUSTER_LOOP_FIELDS}
                                 for entry in entries]
        meta = cr["metadata"]
        self.cluster.patch_merge(DSD_API_VERSION, api.DEPLOYMENT_KIND, meta["namespace"], meta["name"],
                                 {"status": patch}, status=True)
        return True

    # -- placement ----------------------------------------------------------------------------------------------

    def _placement(self, cr: Manifest, spec: api.DSDDeploymentSpec, old: dict[str, Any], now_s: float,
                   slow: dict[str, float]) -> list[dict[str, Any]] | None:
        previous = (old.get("placement") or {}).get("avoidedNodes") or []
        return self._avoided(self.cluster, spec, spec.draft.placement, previous, now_s, slow)

    def _avoided(self, cluster: Cluster, spec: api.DSDDeploymentSpec, p: api.Placement,
                 previous_status: list[dict[str, Any]], now_s: float,
                 slow: dict[str, float]) -> list[dict[str, Any]] | None:
        """The nodes of `cluster` the drafts placed by `p` avoid: unhealthy (NotReady, lease expired) or slow."""
        if p.affinity is not None:
            return None  # a user's own affinity is not edited
        nodes = cluster.list("v1", "Node")
        leases = {lease["metadata"]["name"]: lease for lease in cluster.list(
            "coordination.k8s.io/v1", "Lease", LEASE_NAMESPACE)}
        health = []
        for n in nodes:
            node_labels = n["metadata"].get("labels") or {}
            edge = (placing.is_edge_node(node_labels) if p.node_selector is None
                    else all(node_labels.get(k) == v for k, v in p.node_selector.items()))
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (n.get("status") or {}).get("conditions") or [])
            renewed = _epoch(((leases.get(n["metadata"]["name"]) or {}).get("spec") or {}).get("renewTime"))
            health.append(moving.NodeHealth(n["metadata"]["name"], ready,
                                            None if renewed is None else now_s - renewed, edge))
        previous = [moving.Avoided(a["node"], a.get("reason", ""), _epoch(a.get("since")) or now_s,
                                   _epoch(a.get("healthySince"))) for a in previous_status]
        return avoided_status(moving.avoided_nodes(health, previous, spec.autotune.node_grace_seconds, now_s, slow,
                                                   release_s=spec.autotune.probe_after_seconds))

    # -- edge clusters ------------------------------------------------------------------------------------------

    def _tune_clusters(self, cr: Manifest, spec: api.DSDDeploymentSpec, old: dict[str, Any], here: Signals | None,
                       now_s: float, now: str) -> list[dict[str, Any]] | None:
        """Per edge cluster of spec.draft.placements: its drafts' statistics from its own Prometheus, its own
        window and mode, and the nodes its drafts avoid there, in its entry of status.clusters (the reconciler
        renders that cluster's ConfigMap and affinity from them). None: no edge cluster to tune."""
        entries: list[dict[str, Any]] = old.get("clusters") or []
        placements = {p.cluster: p for p in spec.draft.placements}
        if not entries or not placements:
            return None
        return [{**entry, **self._tune_cluster(cr, spec, entry, placements[entry["name"]], here, now_s, now)}
                if entry.get("name") in placements else entry for entry in entries]

    def _tune_cluster(self, cr: Manifest, spec: api.DSDDeploymentSpec, entry: dict[str, Any],
                      placement: api.DraftPlacement, here: Signals | None, now_s: float,
                      now: str) -> dict[str, Any]:
        name = placement.cluster
        registry = self.reconciler.remote.registry
        url = registry.prometheus_url(name)
        if not url:
            return {"metricsAvailable": False, "metricsMessage": (
                f"no Prometheus registered for cluster {name} (annotation {labels.PROMETHEUS_URL_ANNOTATION} on "
                "its kubeconfig Secret): its drafts follow this cluster's window and mode")}
        if here is None:
            return {"metricsAvailable": False, "metricsMessage": (
                "this cluster's Prometheus failed (the target's side is unknown): keeping the last decision")}
        meta = cr["metadata"]
        previous = _speculation_from_status(entry)
        try:
            signals = statistics.read_edge(self._prometheus(url), name, meta["namespace"], meta["name"],
                                           spec.autotune.rate_window_seconds, now, here)
        except MetricsUnavailable as e:
            kept = f"gamma {previous.gamma}, mode {previous.mode}" if previous else "this cluster's decisions"
            return {"metricsAvailable": False, "metricsMessage": f"{e.message}; keeping {kept}"}
        start = previous or tuning.initial(spec, now_s)
        decision = tuning.decide(spec, signals, start, now_s)
        if previous is None or (decision.gamma, decision.mode) != (previous.gamma, previous.mode):
            what = f"gamma {decision.gamma}" if decision.mode == tuning.SPECULATE else "mode off (target alone)"
            self.cluster.event(cr, "Normal", Reason.SPECULATION,
                               f"cluster {name}: {what}: {decision.reason}: {decision.message}")
        out: dict[str, Any] = {
            "speculation": speculation_status(decision), "metrics": metrics_status(signals),
            "metricsAvailable": True, "metricsMessage": (
                f"{signals.drafts_up} draft pods scraped by {url}, {signals.tokens_per_s:.1f} tokens/s")}
        edge, _ = registry.get(name)
        was = entry.get("avoidedNodes") or []
        if edge is None:
            if was:
                out["avoidedNodes"] = was  # its nodes cannot be looked at now: keep what was decided
            return out
        crossover = tuning.crossover_rtt_s(spec, signals)
        compute = signals.compute_s or 0.0
        slow = moving.slow_sites({site.node: max(0.0, site.round_trip_s - compute) for site in signals.sites
                                  if site.round_trip_s is not None and site.node}, crossover)
        try:
            avoided = self._avoided(edge, spec, placement.placement, was, now_s, slow)
        except Exception as e:  # an edge that fails mid-pass: keep its last placement
            log.warning("cluster %s: reading its nodes failed: %s", name, e)
            avoided = was
        if avoided:
            out["avoidedNodes"] = avoided
        self._announce_avoided(cr, was, avoided or [], f"cluster {name}: ")
        return out

    # -- scaling ------------------------------------------------------------------------------------------------

    def _externally_scaled(self, namespace: str, scaler: str) -> bool:
        """An HPA (KEDA's ScaledObjects create one) targets the role's scaler: the loop leaves it alone."""
        for hpa in self.cluster.list("autoscaling/v2", "HorizontalPodAutoscaler", namespace):
            ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == api.SCALER_KIND and ref.get("name") == scaler:
                return True
        return False

    def _scaling(self, cr: Manifest, spec: api.DSDDeploymentSpec, signals: Signals, old: dict[str, Any],
                 now_s: float) -> dict[str, Any]:
        meta = cr["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        previous: dict[str, Any] = old.get("scaling") or {}
        out: dict[str, Any] = {}
        for role, decide in ((labels.TARGET, scaling.target), (labels.DRAFT, scaling.draft)):
            scaler_name = labels.role_object_name(name, role)
            role_prev = previous.get(role) or {}
            last = _epoch(role_prev.get("lastScaleTime"))
            if (spec.target if role == labels.TARGET else spec.draft).autoscaling is None:
                if role in previous:
                    out[role] = None  # autoscaling was removed: so is its status (merge patch null)
                continue
            if self._externally_scaled(namespace, scaler_name):
                out[role] = {**role_prev, "reason": "ExternalAutoscaler",
                             "message": f"an HPA targets DSDRoleScaler {scaler_name}: the loop leaves it alone"}
                continue
            scaler = self.cluster.get(DSD_API_VERSION, api.SCALER_KIND, namespace, scaler_name)
            deployment = self.cluster.get("apps/v1", "Deployment", namespace, scaler_name)
            if scaler is None or deployment is None:
                continue
            current = int(scaler["spec"].get("replicas") or 0)
            ds = deployment.get("status") or {}
            settled = (int(ds.get("observedGeneration") or 0) >= int(deployment["metadata"].get("generation") or 0)
                       and int(deployment["spec"].get("replicas") or 0) == current
                       and int(ds.get("readyReplicas") or 0) == current
                       and int(ds.get("updatedReplicas") or 0) == current and int(ds.get("replicas") or 0) == current)
            state = scaling.RoleState(current, settled, None if last is None else now_s - last)
            decision = decide(spec, signals, state)
            if decision is None:
                continue
            entry = {"lastScaleTime": role_prev.get("lastScaleTime", ""), "reason": decision.reason,
                     "message": decision.message}
            if decision.changes(current):
                try:
                    self.cluster.patch_merge(DSD_API_VERSION, api.SCALER_KIND, namespace, scaler_name,
                                             {"spec": {"replicas": decision.replicas}})
                except NotFoundError:
                    continue
                entry["lastScaleTime"] = _rfc3339(now_s)
                self.cluster.event(cr, "Normal", Reason.AUTOSCALED,
                                   f"{role}: {current} -> {decision.replicas} replicas ({decision.reason}: "
                                   f"{decision.message})")
            out[role] = entry
        return out

    # -- events -------------------------------------------------------------------------------------------------

    def _announce(self, cr: Manifest, old: dict[str, Any], new: dict[str, Any], previous: tuning.Speculation,
                  decision: tuning.Speculation) -> None:
        if (decision.gamma, decision.mode) != (previous.gamma, previous.mode) or not old.get("speculation"):
            what = f"gamma {decision.gamma}" if decision.mode == tuning.SPECULATE else "mode off (target alone)"
            self.cluster.event(cr, "Normal", Reason.SPECULATION, f"{what}: {decision.reason}: {decision.message}")
        before = {c["type"]: c for c in old.get("conditions") or []}.get(Condition.METRICS_AVAILABLE)
        after = {c["type"]: c for c in new.get("conditions") or []}.get(Condition.METRICS_AVAILABLE)
        if after and (before is None or before.get("status") != after["status"]):
            self.cluster.event(cr, "Normal" if after["status"] == "True" else "Warning", after["reason"],
                               f"MetricsAvailable={after['status']}: {after['message']}")
        self._announce_avoided(cr, (old.get("placement") or {}).get("avoidedNodes") or [],
                               (new.get("placement") or {}).get("avoidedNodes") or [])

    def _announce_avoided(self, cr: Manifest, was_status: list[dict[str, Any]], now_status: list[dict[str, Any]],
                          where: str = "") -> None:
        was, now = {a["node"] for a in was_status}, {a["node"]: a.get("reason", "") for a in now_status}
        for node in sorted(set(now) - was):
            why = "its round trip to the target is above the crossover" if now[node] == moving.SLOW else (
                f"it is unhealthy ({now[node]})")
            self.cluster.event(cr, "Warning", Reason.PLACEMENT,
                               f"{where}node {node}: {why}: drafts move to other edge nodes")
        for node in sorted(was - set(now)):
            self.cluster.event(cr, "Normal", Reason.PLACEMENT,
                               f"{where}node {node} is healthy again: drafts may use it")



