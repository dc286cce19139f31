"""A dev cluster with real kubelet nodes (edge-0, edge-1, gpu-0; the other groups stay kwok) and the operator
installed by its Helm chart and running in the cluster: the chart's Deployment, in a pod on a real node, with its
ServiceAccount, reaching the apiserver through `kubernetes.default` (the kwok suite runs it as a local process),
with the cluster's Prometheus as its default (so the metrics loop runs). One cluster for the whole package:
starting real nodes and loading models in pods takes minutes; each module has its own namespace, and the last
module takes the cluster down."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import config

from dsd_devcluster import ClusterHandle, start_cluster, stop_cluster
from dsd_devcluster.images import RUNTIME_IMAGE
from tests.conftest import ClusterInfo
from tests.operator.e2e.conftest import RELEASE, RELEASE_NS, Dsd, install_chart, tool, uninstall_chart
from tests.support.waiting import wait_for

REAL_CLUSTER = "pytest-real"
REAL_NODES = {"edge": 2, "gpu": 1}


@pytest.fixture(scope="package")
def real_cluster() -> Iterator[ClusterInfo]:
    handle = start_cluster(REAL_CLUSTER, real_nodes=REAL_NODES)
    info = ClusterInfo(handle.kubeconfig, handle, config.new_client_from_config(config_file=str(handle.kubeconfig)))
    try:
        yield info
    finally:
        info.api_client.close()
        if os.environ.get("DSD_KEEP_CLUSTER") != "1":
            stop_cluster(REAL_CLUSTER)


@dataclass
class InClusterOperator:
    """The chart's operator Deployment; its pod's log is what a failing test reports."""

    cluster: ClusterInfo

    def log_tail(self, lines: int = 40) -> str:
        proc = subprocess.run([tool("kubectl"), "--kubeconfig", str(self.cluster.kubeconfig), "-n", RELEASE_NS,
                               "logs", f"deploy/{RELEASE}", f"--tail={lines}"], capture_output=True, text=True,
                              check=False)
        return proc.stdout + proc.stderr


@pytest.fixture(scope="package")
def real_operator(real_cluster: ClusterInfo) -> Iterator[InClusterOperator]:
    """The operator in a pod: the runtime image (it carries the whole `dsd` distribution) on a real node."""
    assert real_cluster.handle is not None
    install_chart(real_cluster, "replicaCount=1", f"image.repository={RUNTIME_IMAGE.rsplit(':', 1)[0]}",
                  f"image.tag={RUNTIME_IMAGE.rsplit(':', 1)[1]}", "image.pullPolicy=Never", "resyncSeconds=5",
                  f"prometheusUrl={real_cluster.handle.prometheus_url}",
                  string_values=("nodeSelector.dsd\\.dev/real-node=true",))
    operator = InClusterOperator(real_cluster)
    try:
        wait_for(lambda: _available(real_cluster), 180, "the operator Deployment Available on a real node",
                 interval_s=1)
        yield operator
    finally:
        if _still_up():
            uninstall_chart(real_cluster)


def _still_up() -> bool:
    return ClusterHandle.load(REAL_CLUSTER) is not None


def _available(cluster: ClusterInfo) -> bool:
    dep = cluster.apps.read_namespaced_deployment(RELEASE, RELEASE_NS)
    return bool(dep.status.available_replicas)


@pytest.fixture(scope="module")
def real_namespace(real_cluster: ClusterInfo, request: pytest.FixtureRequest) -> Iterator[str]:
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    name = f"real-{os.getpid() % 100000}-{module[:16].strip('-')}"
    # The restricted Pod Security Standard, enforced: DSD's pods must run under it on real nodes.
    real_cluster.core.create_namespace({"metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    yield name
    if _still_up():  # the package's last test takes the cluster down
        real_cluster.core.delete_namespace(name)


@pytest.fixture(scope="module")
def real_dsd(real_cluster: ClusterInfo, real_namespace: str, real_operator: InClusterOperator) -> Dsd:
    return Dsd(real_cluster, real_namespace)


@contextmanager
def port_forward(cluster: ClusterInfo, namespace: str, target: str, port: int) -> Iterator[int]:
    """`kubectl port-forward` (apiserver -> kubelet streaming on the real node); yields the local port."""
    proc = subprocess.Popen([tool("kubectl"), "--kubeconfig", str(cluster.kubeconfig), "-n", namespace,
                             "port-forward", target, f"0:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, f"kubectl port-forward said {line!r}; stderr: {proc.stderr.read() if proc.poll() else ''}"
        yield int(match.group(1))
    finally:
        proc.terminate()
        proc.wait(10)


def node_ready(cluster: ClusterInfo, name: str) -> bool:
    node = cluster.core.read_node(name)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def wait_node(cluster: ClusterInfo, name: str, ready: bool, timeout_s: float) -> None:
    wait_for(lambda: node_ready(cluster, name) == ready, timeout_s, f"node {name} Ready={ready}", interval_s=1)


def state_dir(cluster: ClusterInfo) -> Path:
    assert cluster.handle is not None
    return cluster.handle.directory
