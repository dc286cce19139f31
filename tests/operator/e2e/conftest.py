"""The operator as users install it: Helm chart (CRDs, ServiceAccount, least-privilege RBAC) on the real control
plane, and `dsd operator run` as a subprocess authenticated with that ServiceAccount's token, so every test
also proves the chart's RBAC is enough. (The chart's own Deployment is installed with 0 replicas: its image
would run nothing on a kwok node; tests/e2e/real_nodes runs it in a pod on a real node.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from dsd_devcluster.toolchain import ensure_toolchain
from tests.conftest import ClusterInfo
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[3]
RELEASE, RELEASE_NS = "dsd-operator", "dsd-system"
GROUP, VERSION = "dsd.dev", "v1alpha1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    return str(ensure_toolchain().path(name))


def kubectl(cluster: ClusterInfo, *args: str, input_text: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([tool("kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args], input=input_text,
                          capture_output=True, text=True, check=False, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc


def install_chart(cluster: ClusterInfo, *values: str, string_values: tuple[str, ...] = ()) -> None:
    """`helm install` of charts/dsd-operator (CRDs + RBAC), replacing an earlier release; waits for the CRDs.

    Helm installs CRDs but never upgrades them, so on a reused cluster (DSD_KEEP_CLUSTER=1) the CRDs are applied
    first, as docs/operator.md tells users to do on an upgrade.
    """
    helm = [tool("helm"), "--kubeconfig", str(cluster.kubeconfig)]
    subprocess.run([*helm, "uninstall", RELEASE, "-n", RELEASE_NS, "--ignore-not-found"], capture_output=True,
                   check=False)
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    sets = [arg for v in values for arg in ("--set", v)] + [a for v in string_values for a in ("--set-string", v)]
    proc = subprocess.run([*helm, "install", RELEASE, str(REPO / "charts" / "dsd-operator"), "-n", RELEASE_NS,
                           "--create-namespace", *sets, "--wait", "--timeout", "180s"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"helm install failed: {proc.stderr}"
    kubectl(cluster, "wait", "--for=condition=Established", "crd/dsddeployments.dsd.dev",
            "crd/dsdrolescalers.dsd.dev", "--timeout=60s")


def uninstall_chart(cluster: ClusterInfo) -> None:
    subprocess.run([tool("helm"), "--kubeconfig", str(cluster.kubeconfig), "uninstall", RELEASE, "-n", RELEASE_NS],
                   capture_output=True, check=False)


@pytest.fixture(scope="session")
def chart_release(cluster: ClusterInfo) -> Iterator[str]:
    """The chart on the kwok cluster, with 0 operator replicas (kwok pods run nothing), for the whole session."""
    install_chart(cluster, "replicaCount=0")
    yield RELEASE
    uninstall_chart(cluster)


def service_account_kubeconfig(cluster: ClusterInfo, path: Path, account: str = RELEASE) -> Path:
    token = client.CoreV1Api(cluster.api_client).create_namespaced_service_account_token(
        account, RELEASE_NS, {"spec": {"expirationSeconds": 86400}}).status.token
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    ctx = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    server = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": "dsd-operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "dsd-operator"}}],
    }))
    return path


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log_path: Path
    metrics_port: int = field(default_factory=_free_port)
    namespaces: list[str] = field(default_factory=list)
    health_port: int = 0
    clusters_namespace: str = RELEASE_NS  # the chart's multiCluster default: edge kubeconfig Secrets there
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        log = self.log_path.open("ab")
        watch = [arg for ns in self.namespaces for arg in ("--namespace", ns)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dsd_cli.main", "operator", "run", "--health-port", str(self.health_port),
             "--metrics-port", str(self.metrics_port), "--resync-s", "2", "--clusters-namespace",
             self.clusters_namespace, *watch], env=env, stdout=log, stderr=log)
        wait_for(lambda: self.metrics_text() is not None, 60, "the operator's /metrics endpoint")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def metrics_text(self) -> str | None:
        assert self.proc is not None and self.proc.poll() is None, f"operator exited; log:\n{self.log_tail()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def counter(self, metric: str, **labels: str) -> float:
        """Sum of a counter's samples whose labels include `labels` (0 when absent)."""
        total = 0.0
        for line in (self.metrics_text() or "").splitlines():
            if not line.startswith(metric + "{") and not line.startswith(metric + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def operator(cluster: ClusterInfo, chart_release: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    work = tmp_path_factory.mktemp("operator")
    op = OperatorProcess(service_account_kubeconfig(cluster, work / "kubeconfig"), work / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()


@dataclass
class Dsd:
    """Helpers for DSDDeployments in one test namespace."""

    cluster: ClusterInfo
    namespace: str

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.cluster.api_client)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "dsddeployments",
                                                                body))

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "dsddeployments",
                                                             name))

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, "dsddeployments", name,
                                                   {"spec": spec})

    def condition(self, name: str, ctype: str) -> dict[str, Any] | None:
        conditions = (self.get(name).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == ctype), None)

    def wait_condition(self, name: str, ctype: str, status: str, timeout_s: float = 60,
                       reason: str | None = None) -> dict[str, Any]:
        def met() -> dict[str, Any] | None:
            c = self.condition(name, ctype)
            ok = c is not None and c["status"] == status and (reason is None or c["reason"] == reason)
            return c if ok else None

        return wait_for(met, timeout_s, f"{name} condition {ctype}={status} ({reason or 'any reason'})")

    def gone(self, name: str) -> bool:
        """The DSDDeployment no longer exists (its finalizers released)."""
        try:
            self.get(name)
        except client.ApiException as e:
            return e.status == 404
        return False

    def pods(self, name: str, role: str) -> list[client.V1Pod]:
        return list(self.cluster.core.list_namespaced_pod(
            self.namespace, label_selector=f"dsd.dev/deployment={name},dsd.dev/role={role}").items)

    def events(self, reason: str | None = None) -> list[client.CoreV1Event]:
        items = self.cluster.core.list_namespaced_event(
            self.namespace, field_selector="involvedObject.kind=DSDDeployment").items
        return [e for e in items if reason is None or e.reason == reason]


@pytest.fixture
def dsd(cluster: ClusterInfo, namespace: str, operator: OperatorProcess) -> Dsd:
    return Dsd(cluster, namespace)


def sample(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "manifests" / "samples" / f"{name}.yaml").read_text()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    op = getattr(item, "funcargs", {}).get("operator")
    if report.failed and isinstance(op, OperatorProcess):
        report.sections.append(("operator log (tail)", op.log_tail()))
    return report
