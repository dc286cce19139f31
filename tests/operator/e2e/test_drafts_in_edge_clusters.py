"""Drafts in an edge cluster: a second real control plane (kwok edge nodes) registered by a kubeconfig Secret with
multicluster-runtime's label, holding a least-privilege identity there (manifests/edge/rbac.yaml). The operator
(under its chart's RBAC) creates the placement's children there, reports the cluster in status and
ClustersReachable, keeps serving this cluster while the edge is unreachable, and removes the remote children
when a placement or the DSDDeployment goes (a finalizer only while they exist)."""

from __future__ import annotations

import base64
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from dsd_devcluster import start_cluster, stop_cluster
from dsd_operator import pki
from tests.operator.e2e.conftest import GROUP, RELEASE_NS, VERSION
from tests.support.edge_clusters import agent_kubeconfig, install_edge_agent, register, remote_leftovers, with_server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster
EDGE = "edge-a"
NAME = "smollm2"
ADDRESS = "cloud-gpu.example.net:30551"


class Edge:
    def __init__(self, kubeconfig_text: str, admin: client.ApiClient) -> None:
        self.kubeconfig_text = kubeconfig_text  # the least-privilege identity the operator gets
        self.admin = admin
        self.core = client.CoreV1Api(admin)
        self.apps = client.AppsV1Api(admin)


@pytest.fixture(scope="module")
def edge(cluster, chart_release, tmp_path_factory) -> Iterator[Edge]:
    nodes = tmp_path_factory.mktemp("edge") / "nodes.yaml"
    nodes.write_text("nodes:\n- name: site-a\n  count: 2\n  labels: {dsd.dev/tier: edge}\n")
    handle = start_cluster("pytest-edge", nodes)
    try:
        install_edge_agent(handle.kubeconfig)
        admin = config.new_client_from_config(config_file=str(handle.kubeconfig))
        text = agent_kubeconfig(handle.kubeconfig)
        _register(cluster, text)
        yield Edge(text, admin)
        admin.close()
    finally:
        cluster.core.delete_namespaced_secret(EDGE, RELEASE_NS)
        stop_cluster("pytest-edge")


def _register(cluster, kubeconfig_text: str) -> None:
    register(cluster.core, RELEASE_NS, EDGE, kubeconfig_text)


def _resource(replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DSDDeployment", "metadata": {"name": NAME},
            "spec": {"target": {"model": {"uri": "builtin:smollm2-135m-instruct"}, "expose": {"address": ADDRESS}},
                     "draft": {"replicas": 0, "placements": [{"cluster": EDGE, "replicas": replicas}]}}}


def _condition(dsd, ctype: str) -> dict[str, Any] | None:
    return dsd.condition(NAME, ctype)


def _edge_deployment(edge: Edge, namespace: str):
    try:
        return edge.apps.read_namespaced_deployment(f"{NAME}-draft", namespace)
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


@pytest.fixture
def placed(edge: Edge, dsd, namespace):
    dsd.create(_resource())
    dsd.wait_condition(NAME, "ClustersReachable", "True", timeout_s=60)
    yield dsd
    with contextlib.suppress(client.ApiException):  # absent when the operator never got to create it
        edge.core.delete_namespace(namespace)


def test_a_placement_runs_its_drafts_in_the_edge_cluster_wired_to_the_exposed_target(placed, edge, cluster,
                                                                                       namespace):
    wait_for(lambda: (d := _edge_deployment(edge, namespace)) is not None and (d.status.ready_replicas or 0) == 2,
             120, "two drafts ready in the edge cluster")
    placed.wait_condition(NAME, "Ready", "True", timeout_s=60)
    status = placed.get(NAME)["status"]
    assert status["clusters"] == [{"name": EDGE, "reachable": True, "message": status["clusters"][0]["message"],
                                   "desiredReplicas": 2, "readyReplicas": 2}]
    assert status["targetExternalEndpoint"] == ADDRESS
    assert "dsd.dev/remote-children" in placed.get(NAME)["metadata"]["finalizers"]

    remote = _edge_deployment(edge, namespace)
    args = remote.spec.template.spec.containers[0].args
    assert args[args.index("--target") + 1] == ADDRESS and "--tls-ca" in args
    assert not remote.metadata.owner_references, "owner references cannot cross clusters"
    assert remote.metadata.annotations["dsd.dev/owner"].startswith(f"{namespace}/{NAME}@")
    nodes = {p.spec.node_name for p in edge.core.list_namespaced_pod(namespace).items}
    assert nodes <= {"site-a-0", "site-a-1"}
    local_tls = cluster.core.read_namespaced_secret(f"{NAME}-draft-tls", namespace).data
    assert edge.core.read_namespaced_secret(f"{NAME}-draft-tls", namespace).data == local_tls
    assert edge.core.read_namespaced_config_map(f"{NAME}-runtime", namespace).data["runtime.yaml"]
    target_tls = cluster.core.read_namespaced_secret(f"{NAME}-target-tls", namespace).data["tls.crt"]
    assert "cloud-gpu.example.net" in pki.names_of(base64.b64decode(target_tls)), "the certificate names it"
    assert cluster.core.read_namespaced_service(f"{NAME}-target", namespace).spec.type == "NodePort"
    assert not cluster.apps.read_namespaced_deployment(f"{NAME}-draft", namespace).spec.replicas


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_edge_is_named_this_cluster_keeps_being_served_and_it_recovers(placed, edge, cluster,
                                                                                        namespace):
    # the edge's API as seen from here: gone
    _register(cluster, with_server(edge.kubeconfig_text, f"https://127.0.0.1:{_closed_port()}"))
    cond = wait_for(lambda: (c := _condition(placed, "ClustersReachable")) and c["status"] == "False" and c,
                    60, "ClustersReachable=False")
    assert cond["reason"] == "Unreachable" and cond["message"].startswith(f"{EDGE}: API server unreachable")
    placed.patch_spec(NAME, {"speculation": {"gamma": 6}})
    wait_for(lambda: "gamma: 6" in cluster.core.read_namespaced_config_map(f"{NAME}-runtime", namespace)
             .data["runtime.yaml"], 60, "this cluster still reconciled")
    _register(cluster, edge.kubeconfig_text)  # back (a rotated kubeconfig: a new client)
    placed.wait_condition(NAME, "ClustersReachable", "True", timeout_s=60)
    wait_for(lambda: "gamma: 6" in edge.core.read_namespaced_config_map(f"{NAME}-runtime", namespace)
             .data["runtime.yaml"], 60, "the edge caught up")


def test_dropping_the_placement_and_deleting_the_resource_remove_the_remote_children(placed, edge, cluster,
                                                                                       namespace):
    wait_for(lambda: _edge_deployment(edge, namespace) is not None, 60, "the remote drafts")
    placed.patch_spec(NAME, {"draft": {"placements": []}})
    wait_for(lambda: _edge_deployment(edge, namespace) is None and not _remote_leftovers(edge, namespace), 60,
             "the dropped placement's drafts, Service, ConfigMap and Secrets removed")
    wait_for(lambda: "dsd.dev/remote-children" not in (placed.get(NAME)["metadata"].get("finalizers") or []), 60,
             "the finalizer released once nothing remote is left")

    placed.patch_spec(NAME, {"draft": {"placements": [{"cluster": EDGE, "replicas": 1}]}})
    wait_for(lambda: _edge_deployment(edge, namespace) is not None, 60, "placed again")
    placed.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "dsddeployments", NAME)

    wait_for(lambda: placed.gone(NAME), 60, "the DSDDeployment deleted (its finalizer released)")
    assert _edge_deployment(edge, namespace) is None and not _remote_leftovers(edge, namespace), \
        "the finalizer is released only after every remote child is gone"


def _remote_leftovers(edge: Edge, namespace: str) -> list[str]:
    return remote_leftovers(edge.core, namespace, NAME)


def test_a_restarted_operator_rewrites_nothing_in_the_edge_cluster(placed, edge, operator, namespace):
    wait_for(lambda: _edge_deployment(edge, namespace) is not None, 60, "the remote drafts")
    placed.wait_condition(NAME, "ClustersReachable", "True", timeout_s=60)

    def versions() -> dict[str, str]:
        selector = f"dsd.dev/deployment={NAME}"  # list items carry no kind: name it
        objs = [("Deployment", edge.apps.list_namespaced_deployment(namespace).items),
                ("Service", edge.core.list_namespaced_service(namespace).items),
                ("ConfigMap", edge.core.list_namespaced_config_map(namespace, label_selector=selector).items),
                ("Secret", edge.core.list_namespaced_secret(namespace, label_selector=selector).items)]
        return {f"{kind}/{o.metadata.name}": o.metadata.resource_version for kind, items in objs for o in items}

    wait_for(lambda: (_edge_deployment(edge, namespace).status.ready_replicas or 0) == 2, 120, "drafts ready")
    before = versions()
    operator.stop()
    operator.start()
    resyncs = operator.counter("dsd_operator_reconciles_total", namespace=namespace)
    wait_for(lambda: operator.counter("dsd_operator_reconciles_total", namespace=namespace) >= resyncs + 3, 60,
             "three reconciles after the restart")
    after = versions()
    assert after == before, "no remote child rewritten, none duplicated"
    assert len([k for k in after if k.startswith("Deployment/")]) == 1
