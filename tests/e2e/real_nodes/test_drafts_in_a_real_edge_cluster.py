"""Two clusters with real nodes: the cloud cluster of this package (the operator in a pod, the target on the real
GPU node) and an edge cluster of its own (its own control plane, one real edge node in its own network
namespace). The edge is registered by a kubeconfig Secret holding the least-privilege identity of
manifests/edge/rbac.yaml, with the address the operator's pod reaches (the edge's gateway). The operator creates
the placement's drafts there; they dial the target's node port on the GPU node over mutual TLS with the
certificates the operator issued and copied; requests through the edge's draft Service equal the target alone.

Traffic stays inside the namespaces the dev clusters created: the edge's pod reaches the cloud node's address
through the host's veth routes, which each cluster's guard chain admits only towards cluster ranges.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from kubernetes import client, config

from dsd_devcluster import network, start_cluster, stop_cluster
from dsd_runtime.common import models
from tests.conftest import ClusterInfo
from tests.e2e.real_nodes import test_dsddeployment_on_real_nodes as on_real_nodes
from tests.e2e.real_nodes.conftest import InClusterOperator, port_forward
from tests.e2e.real_nodes.test_closed_loop_on_real_nodes import GROUNDED, Load
from tests.operator.e2e.conftest import GROUP, RELEASE_NS, VERSION, Dsd
from tests.support.edge_clusters import agent_kubeconfig, install_edge_agent, register, remote_leftovers, with_server
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
PROMPTS, MAX_TOKENS = on_real_nodes.PROMPTS, on_real_nodes.MAX_TOKENS
target_alone_texts = on_real_nodes.target_alone_texts  # the same fixture: the target alone on these prompts

EDGE_CLUSTER = "pytest-real-edge"
EDGE = "site-a"          # its registration: the name placements use
NAME = "remote"
NODE_PORT = 30561
INTERVAL_S = 5
# One real node in the edge cluster, labelled as edge nodes are (the drafts' default placement).
EDGE_NODES = """nodes:
- name: site
  count: 1
  real: true
  labels: {node-role.kubernetes.io/edge: "", dsd.dev/tier: edge}
  capacity: {cpu: "2", memory: 8Gi, pods: "110"}
"""


class EdgeCluster:
    def __init__(self, info: ClusterInfo, kubeconfig_text: str, prometheus_url: str) -> None:
        self.info = info
        self.kubeconfig_text = kubeconfig_text  # the operator's identity there, at the address its pod reaches
        self.prometheus_url = prometheus_url  # the edge's own Prometheus (it scrapes the edge's pods)
        self.apps = client.AppsV1Api(info.api_client)

    def register(self, core: client.CoreV1Api, kubeconfig_text: str | None = None) -> None:
        register(core, RELEASE_NS, EDGE, kubeconfig_text or self.kubeconfig_text, self.prometheus_url)


@pytest.fixture(scope="module")
def edge_cluster(real_cluster: ClusterInfo, real_operator: InClusterOperator,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeCluster]:
    nodes = tmp_path_factory.mktemp("edge") / "nodes.yaml"
    nodes.write_text(EDGE_NODES)
    handle = start_cluster(EDGE_CLUSTER, nodes)
    assert handle.network_slot is not None
    info = ClusterInfo(handle.kubeconfig, handle, config.new_client_from_config(config_file=str(handle.kubeconfig)))
    try:
        install_edge_agent(handle.kubeconfig)
        gateway = network.SlotPlan(handle.network_slot).gateway  # the edge API's forwarder: reachable from pods
        text = agent_kubeconfig(handle.kubeconfig, server=f"https://{gateway}:{handle.ports['apiserver']}")
        edge = EdgeCluster(info, text, handle.prometheus_url)
        edge.register(real_cluster.core)
        yield edge
    finally:
        real_cluster.core.delete_namespaced_secret(EDGE, RELEASE_NS)
        info.api_client.close()
        if os.environ.get("DSD_KEEP_CLUSTER") != "1":
            stop_cluster(EDGE_CLUSTER)


def _gpu_node_address(cluster: ClusterInfo) -> str:
    node = cluster.core.read_node("gpu-0")
    return next(a.address for a in node.status.addresses if a.type == "InternalIP")


def _resource(address: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DSDDeployment", "metadata": {"name": NAME}, "spec": {
        "target": {"model": {"uri": f"builtin:{models.SMOLLM2_TARGET}"},
                   "expose": {"address": address, "serviceType": "NodePort", "nodePort": NODE_PORT}},
        # One draft here (the cloud cluster's own edge nodes) and one in the edge cluster.
        "draft": {"replicas": 1, "placements": [{"cluster": EDGE, "replicas": 1}]},
        "speculation": {"gamma": 4, "gammaMin": 1, "gammaMax": 8},
        "autotune": {"intervalSeconds": INTERVAL_S, "rateWindowSeconds": 20, "minDwellSeconds": 10,
                     "probeAfterSeconds": 30, "deadbandPercent": 2}}}


@pytest.fixture(scope="module")
def placed(real_dsd: Dsd, edge_cluster: EdgeCluster) -> Iterator[Dsd]:
    real_dsd.create(_resource(f"{_gpu_node_address(real_dsd.cluster)}:{NODE_PORT}"))
    try:
        real_dsd.wait_condition(NAME, "Ready", "True", timeout_s=600)
    except AssertionError:
        print(_edge_pods_described(edge_cluster, real_dsd.namespace))
        raise
    yield real_dsd
    with contextlib.suppress(client.ApiException):  # the last test deletes it
        real_dsd.custom.delete_namespaced_custom_object(GROUP, VERSION, real_dsd.namespace, "dsddeployments", NAME)


def _edge_pods_described(edge: EdgeCluster, namespace: str) -> str:
    pods = edge.info.core.list_namespaced_pod(namespace).items
    return "\n".join(f"{p.metadata.name} on {p.spec.node_name}: {p.status.phase} {p.status.container_statuses}"
                     for p in pods) or f"no pods in the edge cluster's {namespace}"


def _complete_all(port: int, prompts: list[str]) -> dict[str, str]:
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=300)
    return {p: api.completions.create(model=models.SMOLLM2_TARGET, prompt=p, max_tokens=MAX_TOKENS,
                                      temperature=0).choices[0].text for p in prompts}


def _edge_draft(edge: EdgeCluster, namespace: str):
    try:
        return edge.apps.read_namespaced_deployment(f"{NAME}-draft", namespace)
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


def test_a_request_to_the_edge_clusters_draft_service_equals_the_target_alone(placed: Dsd, edge_cluster: EdgeCluster,
                                                                              target_alone_texts: dict[str, str]):
    namespace = placed.namespace
    remote = _edge_draft(edge_cluster, namespace)
    assert remote is not None and remote.status.ready_replicas == 1
    pod = edge_cluster.info.core.list_namespaced_pod(namespace, label_selector="dsd.dev/role=draft").items[0]
    assert pod.spec.node_name == "site-0", "on the edge cluster's real node"
    args = pod.spec.containers[0].args
    address = placed.get(NAME)["status"]["targetExternalEndpoint"]
    assert args[args.index("--target") + 1] == address and "--tls-ca" in args, "it dials the node port over mTLS"
    status = placed.get(NAME)["status"]
    entry = status["clusters"][0]
    assert {k: entry[k] for k in ("name", "reachable", "desiredReplicas", "readyReplicas")} == {
        "name": EDGE, "reachable": True, "desiredReplicas": 1, "readyReplicas": 1}
    with port_forward(edge_cluster.info, namespace, f"svc/{NAME}-draft", 8000) as port:
        assert _complete_all(port, PROMPTS) == target_alone_texts


def _edge_entry(dsd: Dsd) -> dict[str, Any]:
    return next(c for c in (dsd.get(NAME).get("status") or {}).get("clusters") or [] if c["name"] == EDGE)


def test_the_edge_clusters_drafts_get_a_window_of_their_own_from_its_prometheus(placed: Dsd,
                                                                               edge_cluster: EdgeCluster):
    """Grounded prompts through the edge only: the loop reads the edge's drafts from the edge's Prometheus and
    raises that cluster's window; this cluster's drafts, without traffic, keep theirs."""
    namespace = placed.namespace
    with port_forward(edge_cluster.info, namespace, f"svc/{NAME}-draft", 8000) as port:
        running = Load(port, GROUNDED, concurrency=2)
        for t in running.threads:
            t.start()
        try:
            raised = wait_for(lambda: (e := _edge_entry(placed)).get("speculation", {}).get("gamma", 0) > 4 and e,
                              240, "the edge cluster's window raised", interval_s=1)
        finally:
            running.stop.set()
            for t in running.threads:
                t.join(150)
    assert running.answers and not running.errors
    assert raised["metricsAvailable"] is True and raised["speculation"]["reason"] == "WindowRaised", raised
    assert [s["node"] for s in raised["metrics"]["sites"]] == ["site-0"], "its drafts, seen by its Prometheus"
    gamma = raised["speculation"]["gamma"]
    wait_for(lambda: [e for e in placed.events("SpeculationTuned") if e.message.startswith(f"cluster {EDGE}: gamma ")],
             30, "the edge cluster's decision as an Event (kopf posts Events in the background)", interval_s=0.5)
    edge_config = wait_for(lambda: (c := edge_cluster.info.core.read_namespaced_config_map(
        f"{NAME}-runtime", namespace).data["runtime.yaml"]) and f"gamma_max: {gamma}" in c and c, 60,
        "the edge's ConfigMap carrying its window")
    assert edge_config
    here = placed.cluster.core.read_namespaced_config_map(f"{NAME}-runtime", namespace).data["runtime.yaml"]
    assert "gamma_max: 4" in here, "this cluster's drafts keep the deployment-wide window"


def test_an_unreachable_edge_api_is_named_and_both_clusters_drafts_keep_serving(
        placed: Dsd, edge_cluster: EdgeCluster, real_cluster: ClusterInfo, target_alone_texts: dict[str, str]):
    """The edge's control plane gone from the operator's view: a condition, not an outage. The data path (edge
    draft -> target node port) does not go through the operator, so both clusters' drafts answer throughout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    edge_cluster.register(real_cluster.core, with_server(edge_cluster.kubeconfig_text, f"https://127.0.0.1:{closed}"))
    cond = wait_for(lambda: (c := placed.condition(NAME, "ClustersReachable")) and c["status"] == "False" and c,
                    90, "ClustersReachable=False")
    assert cond["message"].startswith(f"{EDGE}: API server unreachable"), cond
    namespace = placed.namespace
    with port_forward(edge_cluster.info, namespace, f"svc/{NAME}-draft", 8000) as port:
        assert _complete_all(port, PROMPTS[:1]) == {PROMPTS[0]: target_alone_texts[PROMPTS[0]]}
    with port_forward(real_cluster, namespace, f"svc/{NAME}-draft", 8000) as port:
        assert _complete_all(port, PROMPTS[:1]) == {PROMPTS[0]: target_alone_texts[PROMPTS[0]]}
    edge_cluster.register(real_cluster.core)
    placed.wait_condition(NAME, "ClustersReachable", "True", timeout_s=90)


def test_deleting_the_resource_removes_the_edge_clusters_children(placed: Dsd, edge_cluster: EdgeCluster):
    namespace = placed.namespace
    placed.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "dsddeployments", NAME)
    core = edge_cluster.info.core

    def left() -> list[str]:
        return remote_leftovers(core, namespace, NAME) + (["Deployment"] if _edge_draft(edge_cluster, namespace)
                                                          else [])

    try:
        wait_for(lambda: not left(), 120, "the edge's Deployment, Service, ConfigMap and Secret copies deleted")
    except AssertionError as e:
        raise AssertionError(f"{e}; still there: {left()}") from None
    wait_for(lambda: placed.gone(NAME), 60,
             "the DSDDeployment deleted once its remote children are (finalizer released)")
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, 120, "the edge's draft pod gone")
