"""A reconcile of an unchanged world writes nothing: a restarted operator creates no duplicates and rolls out
nothing, and its API-write counter for the namespace stays at zero while it reconciles again and again."""

from __future__ import annotations

import pytest

from tests.operator.e2e.conftest import GROUP, VERSION, sample
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def _snapshot(cluster, dsd, namespace: str, name: str) -> dict[str, str]:
    """kind/name -> resourceVersion of the resource and everything it owns, plus pod uids."""
    selector = f"dsd.dev/deployment={name}"
    out = {f"DSDDeployment/{name}": dsd.get(name)["metadata"]["resourceVersion"]}
    for d in cluster.apps.list_namespaced_deployment(namespace, label_selector=selector).items:
        out[f"Deployment/{d.metadata.name}"] = d.metadata.resource_version
    for s in cluster.core.list_namespaced_service(namespace, label_selector=selector).items:
        out[f"Service/{s.metadata.name}"] = s.metadata.resource_version
    for c in cluster.core.list_namespaced_config_map(namespace, label_selector=selector).items:
        out[f"ConfigMap/{c.metadata.name}"] = c.metadata.resource_version
    for s in dsd.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "dsdrolescalers",
                                                      label_selector=selector)["items"]:
        out[f"DSDRoleScaler/{s['metadata']['name']}"] = s["metadata"]["resourceVersion"]
    for p in cluster.core.list_namespaced_pod(namespace, label_selector=selector).items:
        out[f"Pod/{p.metadata.name}"] = p.metadata.uid
    return out


@pytest.mark.parametrize("sample_name", ["minimal", "cpu-edge"])  # full.yaml needs a PVC to become Ready
def test_restarted_operator_writes_nothing_and_duplicates_nothing(cluster, dsd, namespace, operator, sample_name):
    """Every sample: list-valued fields the API server drops (cpu-edge's `tolerations: []`) are no drift."""
    body = sample(sample_name)
    name = body["metadata"]["name"]
    dsd.create(body)
    dsd.wait_condition(name, "Ready", "True")
    dsd.wait_condition(name, "Progressing", "False")
    before = _snapshot(cluster, dsd, namespace, name)
    assert len([k for k in before if k.startswith("Deployment/")]) == 2

    operator.stop()
    operator.start()
    # The new process reconciles on its initial listing, then every resync (2 s): wait for several passes.
    wait_for(lambda: operator.counter("dsd_operator_reconciles_total", namespace=namespace, name=name) >= 3,
             60, "three reconciles by the restarted operator")

    # In a quiet world only the periodic resync reconciles: three more passes prove it runs (every 2 s here).
    seen = operator.counter("dsd_operator_reconciles_total", namespace=namespace, name=name)
    wait_for(lambda: operator.counter("dsd_operator_reconciles_total", namespace=namespace, name=name)
             >= seen + 3, 30, "three resync passes")

    writes = [line for line in (operator.metrics_text() or "").splitlines()
              if line.startswith("dsd_operator_api_writes_total{") and f'namespace="{namespace}"' in line]
    assert operator.counter("dsd_operator_api_writes_total", namespace=namespace) == 0, writes
    assert _snapshot(cluster, dsd, namespace, name) == before
