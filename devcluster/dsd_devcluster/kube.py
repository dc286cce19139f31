"""The few API calls the harness makes (create nodes, wait for readiness), via the kubernetes client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

NOT_READY_TAINTS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}


class Client:
    def __init__(self, kubeconfig: Path) -> None:
        self.api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api_client)

    def wait_for_default_service_account(self, timeout_s: float) -> None:
        """Pods need `default` SA (created by kcm's serviceaccount controller) before they can be admitted."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.core.read_namespaced_service_account("default", "default")
                return
            except ApiException as e:
                if e.status != 404:
                    raise
            time.sleep(0.25)
        raise TimeoutError(f"ServiceAccount default/default not created within {timeout_s}s")

    def create_nodes(self, manifests: list[dict[str, Any]]) -> None:
        for m in manifests:
            try:
                self.core.create_node(m)
            except ApiException as e:
                if e.status != 409:
                    raise

    def nodes_ready(self, names: list[str]) -> bool:
        """Ready=True and the lifecycle controller's not-ready taint gone (else pods stay Pending)."""
        items = {n.metadata.name: n for n in self.core.list_node().items}
        for name in names:
            node = items.get(name)
            if node is None:
                return False
            ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
            tainted = any(t.key in NOT_READY_TAINTS for t in (node.spec.taints or []))
            if not ready or tainted:
                return False
        return True

    def wait_nodes_ready(self, names: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.nodes_ready(names):
                return
            time.sleep(0.25)
        raise TimeoutError(f"nodes {names} not Ready (and untainted) within {timeout_s}s")

    def node_exists(self, name: str) -> bool:
        try:
            self.core.read_node(name)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    def label_node(self, name: str, labels: dict[str, str]) -> None:
        self.core.patch_node(name, {"metadata": {"labels": labels}})

    def advertise_extended_resources(self, name: str, resources: dict[str, str]) -> None:
        """Extended resources are patched into the node's status capacity (as the Kubernetes docs describe)."""
        if resources:
            self.core.patch_node_status(name, {"status": {"capacity": resources}})

    def create_or_replace(self, manifest: dict[str, Any]) -> None:
        """Server-side apply of one object (the harness's own kube-system objects)."""
        from kubernetes import dynamic

        dyn = dynamic.DynamicClient(self.api_client)
        api = dyn.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        api.server_side_apply(body=manifest, name=manifest["metadata"]["name"],
                              namespace=manifest["metadata"].get("namespace"), field_manager="dsd-dev-cluster",
                              force_conflicts=True)
