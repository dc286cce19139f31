"""Registering a dev cluster as an edge cluster of another: the least-privilege identity of
manifests/edge/rbac.yaml, turned into a kubeconfig Secret with multicluster-runtime's label."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import yaml
from kubernetes import client, config

from tests.operator.e2e.conftest import REPO, tool

REGISTRATION_LABEL = "sigs.k8s.io/multicluster-runtime-kubeconfig"


def install_edge_agent(admin_kubeconfig: Path) -> None:
    """manifests/edge/rbac.yaml applied in the edge cluster, as its admin would."""
    subprocess.run([tool("kubectl"), "--kubeconfig", str(admin_kubeconfig), "apply", "-f",
                    str(REPO / "manifests/edge/rbac.yaml")], check=True, capture_output=True, timeout=60)


def agent_kubeconfig(admin_kubeconfig: Path, server: str | None = None) -> str:
    """A self-contained kubeconfig (CA inlined: it travels in a Secret) for the edge's dsd-edge-agent
    ServiceAccount; `server` replaces the admin's address (what the operator can reach, e.g. from a pod)."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    api = config.new_client_from_config(config_file=str(admin_kubeconfig))
    try:
        token = client.CoreV1Api(api).create_namespaced_service_account_token(
            "dsd-edge-agent", "dsd-system", {"spec": {"expirationSeconds": 86400}}).status.token
    finally:
        api.close()
    ctx = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = dict(next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])["cluster"])
    if "certificate-authority" in cluster:
        ca = Path(cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    if server:
        cluster["server"] = server
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": "edge",
                           "clusters": [{"name": "edge", "cluster": cluster}],
                           "users": [{"name": "dsd", "user": {"token": token}}],
                           "contexts": [{"name": "edge", "context": {"cluster": "edge", "user": "dsd"}}]})


def with_server(kubeconfig_text: str, server: str) -> str:
    """The same identity pointed at another address (a broken one, to make the edge unreachable)."""
    data = yaml.safe_load(kubeconfig_text)
    data["clusters"][0]["cluster"]["server"] = server
    return yaml.safe_dump(data)


def register(core: client.CoreV1Api, namespace: str, name: str, kubeconfig_text: str,
             prometheus_url: str = "") -> None:
    """Creates or replaces the registration Secret `name` (the cluster's name in placements); `prometheus_url`:
    the edge's own Prometheus, where the operator's metrics loop reads that cluster's drafts."""
    annotations = {"dsd.dev/prometheus-url": prometheus_url} if prometheus_url else {}
    body = {"metadata": {"name": name, "labels": {REGISTRATION_LABEL: "true"}, "annotations": annotations},
            "data": {"kubeconfig": base64.b64encode(kubeconfig_text.encode()).decode()}}
    try:
        core.create_namespaced_secret(namespace, body)
    except client.ApiException as e:
        if e.status != 409:
            raise
        core.patch_namespaced_secret(name, namespace, body)


def remote_leftovers(core: client.CoreV1Api, namespace: str, name: str) -> list[str]:
    """The Services, ConfigMaps and Secrets of DSDDeployment `name` still in an edge cluster's `namespace`."""
    selector = f"dsd.dev/deployment={name}"
    objs = [*core.list_namespaced_service(namespace, label_selector=selector).items,
            *core.list_namespaced_config_map(namespace, label_selector=selector).items,
            *core.list_namespaced_secret(namespace, label_selector=selector).items]
    return [o.metadata.name for o in objs]
