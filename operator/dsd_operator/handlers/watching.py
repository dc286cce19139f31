"""Watch the DSDDeployments, their scalers, Deployments and pods; reconcile the owning resource on any event.

Only `on.event` handlers are used: kopf then keeps no per-object state (no annotations, no finalizers), so the
operator can be stopped and restarted at any time and deleting a resource never waits for it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import kopf
from kubernetes import client, config

from dsd_operator import labels
from dsd_operator.api import v1alpha1 as api
from dsd_operator.applying.cluster import Cluster
from dsd_operator.applying.reconciling import Reconciler
from dsd_operator.settings import OperatorSettings
from dsd_operator.tuning.loop import Tuner

log = logging.getLogger(__name__)
_state: dict[str, Any] = {}
MANAGED = {"app.kubernetes.io/managed-by": labels.MANAGER}


def _reconciler() -> Reconciler:
    return _state["reconciler"]  # type: ignore[no-any-return]


def _load_kube_config() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def use_settings(own: OperatorSettings) -> None:
    """The settings `dsd operator run` was given (flags over environment); the startup handler applies them."""
    _state["settings"] = own


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    own: OperatorSettings = _state.get("settings") or OperatorSettings()
    settings.peering.standalone = True  # one replica (Recreate strategy); no peering objects to manage
    settings.posting.enabled = False  # we post our own Events, one per decision
    settings.execution.max_workers = own.workers
    settings.watching.server_timeout = 300
    reconciler = _state["reconciler"] = Reconciler(Cluster(_load_kube_config()), own.clusters_namespace)
    # The resync and the metrics loop make blocking API calls: threads beside kopf's event loop, like its sync
    # handlers. The loop has its own thread, so a slow Prometheus never delays a reconcile; it shares the
    # reconciler, whose per-resource lock orders the two writers of a status.
    stop_event = threading.Event()
    tuner = Tuner(reconciler, own.prometheus_url)
    threads = [threading.Thread(target=_resync_forever, args=(own.resync_s, own.namespaces, stop_event),
                                name="dsd-resync", daemon=True),
               threading.Thread(target=tuner.run, args=(own.namespaces, stop_event), name="dsd-metrics-loop",
                                daemon=True)]
    _state["stop"] = stop_event
    for thread in threads:
        thread.start()


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    stop_event = _state.pop("stop", None)
    if stop_event is not None:
        stop_event.set()


def _resync_forever(interval_s: float, namespaces: list[str], stop_event: threading.Event) -> None:
    while not stop_event.wait(interval_s):
        try:
            _resync_all(namespaces)
        except Exception:  # a failed resync must not end the loop; the next one retries
            log.exception("periodic resync failed")


def _resync_all(namespaces: list[str]) -> None:
    """Lists per watched namespace (RoleBindings grant no cluster-wide list), or cluster-wide."""
    r = _reconciler()
    for ns in namespaces or [None]:
        for item in r.cluster.list(f"{api.GROUP}/{api.VERSION}", api.DEPLOYMENT_KIND, ns):
            r.reconcile(item["metadata"]["namespace"], item["metadata"]["name"])


@kopf.on.event(api.GROUP, api.VERSION, api.DEPLOYMENT_PLURAL)
def deployment_changed(type: str | None, name: str, namespace: str, **_: Any) -> None:
    if type != "DELETED":
        _reconciler().reconcile(namespace, name)


@kopf.on.event(api.GROUP, api.VERSION, api.SCALER_PLURAL, labels=MANAGED)
@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "pods", labels={labels.DEPLOYMENT_LABEL: kopf.PRESENT})
def child_changed(meta: kopf.Meta, namespace: str, **_: Any) -> None:
    _reconciler().reconcile(namespace, meta.labels[labels.DEPLOYMENT_LABEL])
