"""The operator's only door to the API server: reads, server-side apply, status patches, Events.

Writes happen only when the desired object is not already covered by the live one (`covers`), so a reconcile of
an unchanged world makes no API writes; every write is counted in `dsd_operator_api_writes_total`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from typing import Any

from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError
from kubernetes.utils import parse_quantity
from prometheus_client import Counter

from dsd_operator import labels

log = logging.getLogger(__name__)
Manifest = dict[str, Any]

API_WRITES = Counter("dsd_operator_api_writes", "API writes by the operator", ["verb", "kind", "namespace"])


def _same_scalar(actual: Any, desired: Any) -> bool:
    if actual == desired:
        return True
    if isinstance(actual, str | int) and isinstance(desired, str | int):  # "1" vs 1, "1000m" vs "1"
        try:
            return bool(parse_quantity(actual) == parse_quantity(desired))
        except ValueError:
            return False
    return False


def covers(actual: Any, desired: Any) -> bool:
    """True when every field of `desired` has the same value in `actual` (server defaults may add more).

    An empty list or map in `desired` is covered by an absent field: the API server drops empty lists and maps
    (`tolerations: []`), and counting that as drift would re-apply the object on every reconcile.
    """
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            covers(actual[k], v) if k in actual else v in ([], {}) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(actual, list) and len(actual) == len(desired)
                and all(covers(a, d) for a, d in zip(actual, desired, strict=True)))
    return _same_scalar(actual, desired)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self._dynamic: DynamicClient | None = None  # built on first use: it asks the API server at once
        self.core = client.CoreV1Api(api_client)
        self._resources: dict[tuple[str, str], Any] = {}

    def _resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._resources:
            if self._dynamic is None:
                self._dynamic = DynamicClient(self.api_client)
            self._resources[key] = self._dynamic.resources.get(api_version=api_version, kind=kind)
        return self._resources[key]

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        try:
            obj: Manifest = self._resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
            return obj
        except NotFoundError:
            return None

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[Manifest]:
        res = self._resource(api_version, kind)
        items = res.get(namespace=namespace, label_selector=label_selector).to_dict()["items"]
        return list(items)

    def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply with our field manager: fields we stop setting are removed, others' fields kept."""
        namespace = manifest["metadata"].get("namespace")  # None: a cluster-scoped object (a Namespace)
        API_WRITES.labels("apply", manifest["kind"], namespace or "").inc()
        res = self._resource(manifest["apiVersion"], manifest["kind"])
        out: Manifest = res.server_side_apply(body=manifest, namespace=namespace, field_manager=labels.MANAGER,
                                              force_conflicts=True).to_dict()
        return out

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Only for children the spec no longer asks for that owner references would keep (a switched-off
        feature); the garbage collector removes the rest with their DSDDeployment."""
        API_WRITES.labels("delete", kind, namespace).inc()
        with contextlib.suppress(NotFoundError):
            self._resource(api_version, kind).delete(name=name, namespace=namespace)

    def patch_merge(self, api_version: str, kind: str, namespace: str, name: str, patch: Manifest,
                    status: bool = False) -> None:
        API_WRITES.labels("patch-status" if status else "patch", kind, namespace).inc()
        res = self._resource(api_version, kind)
        target = res.status if status else res
        target.patch(body=patch, name=name, namespace=namespace, content_type="application/merge-patch+json")

    def event(self, owner: Manifest, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the DSDDeployment (what `kubectl describe dsd` lists)."""
        meta = owner["metadata"]
        now = datetime.datetime.now(datetime.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(api_version=owner["apiVersion"], kind=owner["kind"],
                                                     name=meta["name"], namespace=meta["namespace"],
                                                     uid=meta["uid"]),
            reason=reason, message=message[:1024], type=type_, first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component=labels.MANAGER), reporting_component=labels.MANAGER)
        API_WRITES.labels("create", "Event", meta["namespace"]).inc()
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except client.ApiException as e:  # an Event is best effort; never fail a reconcile over it
            log.warning("could not post event %s on %s: %s", reason, meta["name"], e.reason)
