"""The edge clusters the operator may place drafts in, registered by kubeconfig Secrets.

multicluster-runtime's convention: a Secret labelled `sigs.k8s.io/multicluster-runtime-kubeconfig: "true"` with
the key `kubeconfig`, in the operator's clusters namespace; the Secret's name is the cluster's name in
`spec.draft.placements[].cluster`. Chosen over a DSDCluster resource because other multi-cluster controllers
read the same Secrets. One client per Secret, rebuilt when the kubeconfig's hash changes (rotation) and dropped
when the Secret goes. The Secrets are listed at most every REFRESH_S; reachability is a GET /version with a short
timeout, remembered for PROBE_TTL_S, so an unreachable edge delays a reconcile by seconds, not minutes.
The Secret's `dsd.dev/prometheus-url` annotation names the edge's own Prometheus: the metrics loop reads that
cluster's drafts there (an edge cluster's pods are scraped where they run).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from dataclasses import dataclass

import yaml
from kubernetes import client, config

from dsd_operator import labels
from dsd_operator.applying.cluster import Cluster

log = logging.getLogger(__name__)
REFRESH_S = 5.0
PROBE_TTL_S = 5.0
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Reachability:
    reachable: bool
    message: str


@dataclass
class _Member:
    fingerprint: str
    api_client: client.ApiClient
    cluster: Cluster
    prometheus_url: str = ""
    probed_at: float = 0.0
    last: Reachability = Reachability(False, "not probed yet")


class ClusterRegistry:
    def __init__(self, local: Cluster, namespace: str) -> None:
        """`namespace`: where the kubeconfig Secrets live; empty = no edge clusters (single-cluster mode)."""
        self.local = local
        self.namespace = namespace
        self._members: dict[str, _Member] = {}
        self._listed_at = float("-inf")
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        if not self.namespace or time.monotonic() - self._listed_at < REFRESH_S:
            return
        secrets = self.local.list("v1", "Secret", self.namespace, f"{labels.KUBECONFIG_SECRET_LABEL}=true")
        seen = set()
        for secret in secrets:
            name = secret["metadata"]["name"]
            raw = (secret.get("data") or {}).get(labels.KUBECONFIG_SECRET_KEY)
            if not raw:
                log.warning("kubeconfig Secret %s/%s has no key %r", self.namespace, name,
                            labels.KUBECONFIG_SECRET_KEY)
                continue
            seen.add(name)
            fingerprint = hashlib.sha256(raw.encode()).hexdigest()
            prometheus_url = (secret["metadata"].get("annotations") or {}).get(labels.PROMETHEUS_URL_ANNOTATION, "")
            member = self._members.get(name)
            if member is not None and member.fingerprint == fingerprint:
                member.prometheus_url = prometheus_url
                continue
            try:
                api_client = config.new_client_from_config_dict(yaml.safe_load(base64.b64decode(raw)))
            except (config.ConfigException, yaml.YAMLError, ValueError, TypeError) as e:
                log.warning("cluster %s: unusable kubeconfig: %s", name, e)
                seen.discard(name)
                continue
            if member is not None:
                member.api_client.close()
                log.info("cluster %s: kubeconfig changed, new client", name)
            self._members[name] = _Member(fingerprint, api_client, Cluster(api_client), prometheus_url)
        for gone in set(self._members) - seen:
            self._members.pop(gone).api_client.close()
            log.info("cluster %s: kubeconfig Secret removed", gone)
        self._listed_at = time.monotonic()

    def names(self) -> list[str]:
        with self._lock:
            self._refresh()
            return sorted(self._members)

    def prometheus_url(self, name: str) -> str:
        """The edge cluster's Prometheus from its Secret's annotation; empty when none is registered."""
        with self._lock:
            self._refresh()
            member = self._members.get(name)
            return member.prometheus_url if member is not None else ""

    def get(self, name: str) -> tuple[Cluster | None, Reachability]:
        """The cluster's client when it is registered and answers; else None and why not."""
        with self._lock:
            self._refresh()
            member = self._members.get(name)
            if member is None and not self.namespace:
                return None, Reachability(False, "no kubeconfig Secret: the operator runs without "
                                                 "--clusters-namespace (the chart's multiCluster: false)")
            if member is None:
                return None, Reachability(False, f"no kubeconfig Secret {self.namespace}/{name} labelled "
                                                 f"{labels.KUBECONFIG_SECRET_LABEL}=true")
            if time.monotonic() - member.probed_at >= PROBE_TTL_S:
                member.last = self._probe(member.api_client)
                member.probed_at = time.monotonic()
            return (member.cluster if member.last.reachable else None), member.last

    @staticmethod
    def _probe(api_client: client.ApiClient) -> Reachability:
        try:
            version = client.VersionApi(api_client).get_code(_request_timeout=PROBE_TIMEOUT_S)
        except Exception as e:  # connection refused, timeout, TLS, 401: all mean "cannot manage it now"
            reason = getattr(e, "reason", None) or type(e).__name__
            return Reachability(False, f"API server unreachable: {str(reason)[:200]}")
        return Reachability(True, f"API server {version.git_version} reachable")

    def forget_probe(self, name: str) -> None:
        """After a failed call: probe again at the next look instead of trusting the cached answer."""
        with self._lock:
            if (member := self._members.get(name)) is not None:
                member.probed_at = 0.0
