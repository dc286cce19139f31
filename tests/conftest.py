"""Session fixtures: the real local control plane (or a user-provided cluster) and failure diagnostics.

Set DSD_TEST_KUBECONFIG to run the cluster tests against an existing cluster (k3s, kind) instead of starting
the local one; it must have the default node set's labels (see docs/dev-cluster.md). DSD_KEEP_CLUSTER=1 leaves
the local test cluster running after the session (a later session reuses it: warm start).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

from dsd_devcluster import ClusterHandle, start_cluster, stop_cluster

pytest_plugins = ["tests.support.runtime_fixtures"]

TEST_CLUSTER = os.environ.get("DSD_TEST_CLUSTER_NAME", "pytest")


@dataclass
class ClusterInfo:
    kubeconfig: Path
    handle: ClusterHandle | None  # None when the user supplied a cluster
    api_client: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api_client)

    def log_tails(self) -> str:
        return self.handle.log_tails(25) if self.handle else "(external cluster: no component logs)"


_active: ClusterInfo | None = None


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterInfo]:
    global _active
    external = os.environ.get("DSD_TEST_KUBECONFIG")
    if external:
        info = ClusterInfo(Path(external), None, config.new_client_from_config(config_file=external))
        _active = info
        yield info
        return
    handle = start_cluster(TEST_CLUSTER)
    info = ClusterInfo(handle.kubeconfig, handle, config.new_client_from_config(config_file=str(handle.kubeconfig)))
    _active = info
    try:
        yield info
    finally:
        _active = None
        info.api_client.close()
        if os.environ.get("DSD_KEEP_CLUSTER") != "1":
            stop_cluster(TEST_CLUSTER)


@pytest.fixture
def namespace(cluster: ClusterInfo, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    unique = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]  # parametrised ids share a prefix
    name = f"t-{request.node.name.lower().replace('_', '-')[:36].strip('-')}-{unique}-{os.getpid() % 10000}"
    name = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name)
    cluster.core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        cluster.core.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed and _active is not None and "cluster" in getattr(item, "fixturenames", ()):
        report.sections.append(("control-plane component logs (tails)", _active.log_tails()))
    return report
