"""A DSDDeployment running the real runtime in real pods: kubelet + containerd nodes in their own network
namespaces, kube-proxy Services, CoreDNS, the runtime image built here, the operator, and the cluster's Prometheus.

The tests run in file order on one cluster; the last one takes it down and asserts that nothing is left behind.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import openai
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from dsd_devcluster import network, realnodes, stop_cluster
from dsd_devcluster.cluster import ClusterHandle, start_kubelet, stop_kubelet
from dsd_runtime.common import models
from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from tests.conftest import ClusterInfo
from tests.e2e.real_nodes.conftest import REAL_CLUSTER, port_forward, wait_node
from tests.lossless.test_greedy_equals_target_alone import target_alone
from tests.operator.e2e.conftest import Dsd, sample, tool
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME = "smollm2"
PROMPTS = ["The capital of France is", "def fibonacci(n):"]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def target_alone_texts() -> dict[str, str]:
    """The SmolLM2 target decoding alone on this machine (same model files as the image, fp32)."""
    target = models.load(models.SMOLLM2_TARGET)
    tok = target.tokenizer
    return {p: tok.decode(target_alone(target, tok(p)["input_ids"], MAX_TOKENS), skip_special_tokens=True)
            for p in PROMPTS}


@pytest.fixture(scope="module")
def deployed(real_dsd: Dsd) -> Dsd:
    real_dsd.create(sample("minimal"))
    real_dsd.wait_condition(NAME, "Ready", "True", timeout_s=600)
    return real_dsd


def _kubectl(cluster: ClusterInfo, *args: str, timeout_s: float = 120) -> str:
    proc = subprocess.run([tool("kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args], capture_output=True,
                          text=True, check=False, timeout=timeout_s)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _pods_now(dsd: Dsd, role: str) -> list:
    return [p for p in dsd.pods(NAME, role) if p.metadata.deletion_timestamp is None]


def _pod(dsd: Dsd, role: str):
    pods = _pods_now(dsd, role)
    assert len(pods) == 1, [p.metadata.name for p in pods]
    return pods[0]


def _pod_ready(dsd: Dsd, role: str) -> bool:
    pods = _pods_now(dsd, role)
    return len(pods) == 1 and any(c.type == "Ready" and c.status == "True" for c in pods[0].status.conditions or [])


def _status(url: str) -> int:
    """The HTTP status of a GET (an error status is an answer; a connection failure is 0)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def test_real_nodes_carry_their_tier_and_the_network_is_fenced(real_cluster: ClusterInfo):
    nodes = {n.metadata.name: n for n in real_cluster.core.list_node().items}
    edge, gpu = nodes["edge-0"], nodes["gpu-0"]
    for node in (edge, nodes["edge-1"], gpu):
        assert node.metadata.labels[realnodes.REAL_NODE_LABEL] == "true"
        assert node.status.node_info.container_runtime_version.startswith("containerd://")
        assert node.status.addresses[0].address.startswith("10.245.")
    assert "node-role.kubernetes.io/edge" in edge.metadata.labels
    assert gpu.status.capacity["nvidia.com/gpu"] == "1"
    assert {t.key for t in gpu.spec.taints} >= {"nvidia.com/gpu"}
    assert "kwok.x-k8s.io/node" in nodes["cloud-cpu-0"].metadata.annotations, "other groups stay kwok"
    status = json.loads(subprocess.run([sys.executable, "-m", "dsd_cli.main", "dev", "cluster", "status", "-n",
                                        REAL_CLUSTER, "--json"], capture_output=True, text=True, check=True).stdout)
    assert set(status[0]["real_nodes"]) == {"edge-0", "edge-1", "gpu-0"}
    # Blackholes over every range the cluster uses; a guard chain rejects anything leaving the cluster's ranges.
    assert set(network.BLACKHOLES) <= set(network.blackhole_routes())
    handle = ClusterHandle.load(REAL_CLUSTER)
    assert handle is not None and handle.network_slot is not None
    chain = network.run("iptables", "-S", network.SlotPlan(handle.network_slot).guard_chain).stdout
    assert "-j REJECT" in chain


def test_minimal_sample_runs_on_the_real_nodes(deployed: Dsd):
    target, draft = _pod(deployed, "target"), _pod(deployed, "draft")
    assert target.spec.node_name == "gpu-0" and draft.spec.node_name in ("edge-0", "edge-1")
    for pod in (target, draft):
        assert pod.status.phase == "Running"
        assert all(c.ready for c in pod.status.container_statuses)


def test_openai_client_through_the_service_equals_the_target_alone(deployed: Dsd, target_alone_texts):
    with port_forward(deployed.cluster, deployed.namespace, f"svc/{NAME}-draft", 8000) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=300)
        for prompt, want in target_alone_texts.items():
            r = client.completions.create(model=models.SMOLLM2_TARGET, prompt=prompt, max_tokens=MAX_TOKENS,
                                          temperature=0)
            assert r.choices[0].text == want
            streamed = "".join(c.choices[0].text for c in client.completions.create(
                model=models.SMOLLM2_TARGET, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0, stream=True))
            assert streamed == want


def test_the_target_speaks_only_mutual_tls_with_the_deployments_certificates(deployed: Dsd):
    """The drafts above reached it over mutual TLS (the default); a plaintext or certificate-less client cannot."""
    secret = deployed.cluster.core.read_namespaced_secret(f"{NAME}-draft-tls", deployed.namespace).data
    cert, key, ca = (base64.b64decode(secret[k]) for k in ("tls.crt", "tls.key", "ca.crt"))
    server_name = [("grpc.ssl_target_name_override", f"{NAME}-target.{deployed.namespace}.svc")]
    with port_forward(deployed.cluster, deployed.namespace, f"svc/{NAME}-target", 50051) as port:
        address = f"127.0.0.1:{port}"

        def info(channel: grpc.Channel) -> dsd_pb2.InfoResponse:
            with channel:
                return dsd_pb2_grpc.TargetStub(channel).Info(dsd_pb2.InfoRequest(), timeout=20)

        for refused in (grpc.insecure_channel(address),
                        grpc.secure_channel(address, grpc.ssl_channel_credentials(ca), server_name)):
            with pytest.raises(grpc.RpcError) as e:
                info(refused)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        trusted = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        assert info(grpc.secure_channel(address, trusted, server_name)).model_name


def _pods_and_restarts(dsd: Dsd) -> dict[str, tuple[str, int]]:
    return {role: (_pod(dsd, role).metadata.name, _pod(dsd, role).status.container_statuses[0].restart_count)
            for role in ("target", "draft")}


def _served_serial(dsd: Dsd, port: int, creds: Path) -> int:
    """The serial of the certificate a fresh handshake with the target (through a port-forward) presents."""
    ctx = ssl.create_default_context(cafile=str(creds / "ca.crt"))
    ctx.load_cert_chain(creds / "tls.crt", creds / "tls.key")
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=f"{NAME}-target.{dsd.namespace}.svc") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_renewing_the_certificates_under_traffic_loses_no_request(deployed: Dsd, target_alone_texts, tmp_path):
    creds = tmp_path / "draft-tls"
    creds.mkdir()
    for key, value in deployed.cluster.core.read_namespaced_secret(f"{NAME}-draft-tls",
                                                                   deployed.namespace).data.items():
        (creds / key).write_bytes(base64.b64decode(value))
    pods = _pods_and_restarts(deployed)
    results: list[bool] = []
    failures: list[BaseException] = []
    done = threading.Event()
    with port_forward(deployed.cluster, deployed.namespace, f"svc/{NAME}-draft", 8000) as api_port, \
            port_forward(deployed.cluster, deployed.namespace, f"svc/{NAME}-target", 50051) as target_port:
        before = _served_serial(deployed, target_port, creds)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{api_port}/v1", api_key="-", max_retries=0, timeout=300)

        def traffic() -> None:
            while not done.is_set():
                for prompt, want in target_alone_texts.items():
                    try:
                        r = client.completions.create(model=models.SMOLLM2_TARGET, prompt=prompt,
                                                      max_tokens=MAX_TOKENS, temperature=0)
                        results.append(r.choices[0].text == want)
                    except openai.APIError as e:
                        failures.append(e)

        worker = threading.Thread(target=traffic, daemon=True)
        worker.start()
        try:
            _kubectl(deployed.cluster, "annotate", "-n", deployed.namespace, f"dsd/{NAME}",
                     "dsd.dev/renew-certificates=under-traffic", "--overwrite")
            # the kubelet refreshes the mounted Secret within its sync period; the target takes it at the next
            # handshake (the draft's own certificate too, at its next look, every 5 s)
            wait_for(lambda: _served_serial(deployed, target_port, creds) != before, 300,
                     "the target presenting its renewed certificate", interval_s=2)
            served = len(results)
            wait_for(lambda: len(results) >= served + 2 or bool(failures), 300, "requests after the renewal")
        finally:
            done.set()
            worker.join(300)
    assert not worker.is_alive(), "the traffic never finished"
    assert not failures, failures
    assert results and all(results), "every request before, during and after the renewal is the target's output"
    assert _pods_and_restarts(deployed) == pods, "nothing restarted or rolled out"


def test_services_and_cluster_dns_work_from_pods(deployed: Dsd):
    draft = _pod(deployed, "draft").metadata.name
    script = (
        "import socket, ssl, urllib.request;"
        f"print(socket.gethostbyname('{NAME}-target.{deployed.namespace}.svc.cluster.local'));"
        f"s = socket.create_connection(('{NAME}-target.{deployed.namespace}.svc', 50051), timeout=10); s.close();"
        "ctx = ssl._create_unverified_context();"
        "r = urllib.request.urlopen('https://kubernetes.default.svc.cluster.local/livez', context=ctx, timeout=10);"
        "print(r.status)"
    )
    out = _kubectl(deployed.cluster, "-n", deployed.namespace, "exec", draft, "--", "python", "-c", script)
    service_ip, status = out.split()
    assert service_ip.startswith("10.96."), "the Service name resolves to its ClusterIP"
    assert status == "200", "kubernetes.default reaches the apiserver"


def test_prometheus_discovers_and_scrapes_both_roles(deployed: Dsd):
    handle = ClusterHandle.load(REAL_CLUSTER)
    assert handle is not None and handle.prometheus_url

    def query(q: str) -> list[dict]:
        url = f"{handle.prometheus_url}/api/v1/query?query={urllib.parse.quote(q)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return list(json.load(r)["data"]["result"])

    def scraped() -> set[str] | None:
        roles = {s["metric"].get("dsd_dev_role") for s in query(f'up{{namespace="{deployed.namespace}"}} == 1')}
        return roles if roles >= {"draft", "target"} else None

    wait_for(scraped, 90, "Prometheus scraping the draft and the target", interval_s=2)
    assert query(f'dsd_target_tokens_verified_total{{namespace="{deployed.namespace}"}}'), "target metrics"
    assert query(f'dsd_gamma{{namespace="{deployed.namespace}"}}'), "draft metrics"


def test_a_gamma_change_reaches_the_running_draft_without_a_restart(deployed: Dsd):
    before = _pod(deployed, "draft")
    # The metrics loop off: the spec's window applies as written (test_closed_loop covers the loop's own).
    deployed.patch_spec(NAME, {"speculation": {"gamma": 6}, "autotune": {"enabled": False}})

    def draft_gamma() -> float | None:
        with port_forward(deployed.cluster, deployed.namespace, f"pod/{before.metadata.name}", 8000) as port, \
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        gamma = next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                     if s.name == "dsd_configured_gamma")
        return gamma if gamma == 6 else None

    # A ConfigMap volume is refreshed by the kubelet's periodic sync (about a minute).
    wait_for(draft_gamma, 180, "the draft reporting gamma 6", interval_s=5)
    after = _pod(deployed, "draft")
    assert after.metadata.uid == before.metadata.uid
    assert after.status.container_statuses[0].restart_count == before.status.container_statuses[0].restart_count


def test_killing_the_target_mid_generation_fails_cleanly_or_completes(deployed: Dsd, target_alone_texts):
    prompt, want = next(iter(target_alone_texts.items()))
    target = _pod(deployed, "target")
    container_id = target.status.container_statuses[0].container_id.removeprefix("containerd://")
    restarts = target.status.container_statuses[0].restart_count
    node = ClusterHandle.load(REAL_CLUSTER).real_node(target.spec.node_name)  # type: ignore[union-attr]
    outcome: dict[str, object] = {}
    with port_forward(deployed.cluster, deployed.namespace, f"svc/{NAME}-draft", 8000) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=300)
        first_chunk = threading.Event()

        def generate() -> None:
            text = ""
            try:
                for chunk in client.completions.create(model=models.SMOLLM2_TARGET, prompt=prompt, temperature=0,
                                                       max_tokens=MAX_TOKENS, stream=True):
                    text += chunk.choices[0].text
                    first_chunk.set()
                outcome["text"] = text
            except openai.APIError as e:
                outcome["error"] = e
            finally:
                first_chunk.set()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        assert first_chunk.wait(300)
        subprocess.run(["ctr", "--address", str(node.containerd_socket), "-n", "k8s.io", "tasks", "kill", "-s",
                        "SIGKILL", container_id], check=True, capture_output=True)
        worker.join(300)
        assert not worker.is_alive()
        if "text" in outcome:
            assert outcome["text"] == want, "a completed request is identical to the target alone"
        else:
            error = outcome["error"]
            assert isinstance(error, openai.APIError)
            assert "target" in str(error).lower() or "unavailable" in str(error).lower(), str(error)

    wait_for(lambda: _pod(deployed, "target").status.container_statuses[0].restart_count > restarts, 120,
             "the kubelet restarting the killed target container")
    wait_for(lambda: _pod_ready(deployed, "target") and _pod_ready(deployed, "draft"), 300,
             "target and draft Ready again", interval_s=1)
    with port_forward(deployed.cluster, deployed.namespace, f"svc/{NAME}-draft", 8000) as port:
        # The pod's Ready lags the draft's own readiness by a probe period or two (it may still show the Ready
        # of before the kill); the draft answers once it has reconnected to the restarted target.
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/readyz") == 200, 120, "the draft reconnected")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=300)
        r = client.completions.create(model=models.SMOLLM2_TARGET, prompt=prompt, max_tokens=MAX_TOKENS,
                                      temperature=0)
        assert r.choices[0].text == want, "the next request works"


def test_a_stopped_kubelet_turns_its_node_not_ready_and_recovers(real_cluster: ClusterInfo, deployed: Dsd):
    handle = ClusterHandle.load(REAL_CLUSTER)
    assert handle is not None
    node = _pod(deployed, "draft").spec.node_name
    stop_kubelet(handle, node)
    wait_node(real_cluster, node, ready=False, timeout_s=90)
    start_kubelet(ClusterHandle.load(REAL_CLUSTER), node)  # type: ignore[arg-type]
    wait_node(real_cluster, node, ready=True, timeout_s=60)
    wait_for(lambda: _pod_ready(deployed, "draft"), 180, "a draft Ready again", interval_s=1)


def test_api_keys_from_a_secret_guard_the_api_of_the_running_drafts(deployed: Dsd, target_alone_texts):
    prompt, want = next(iter(target_alone_texts.items()))
    deployed.cluster.core.create_namespaced_secret(deployed.namespace, {
        "metadata": {"name": "api-keys"}, "stringData": {"keys": "sk-real-one\n"}})
    old = _pod(deployed, "draft").metadata.name
    deployed.patch_spec(NAME, {"api": {"auth": {"secretRef": {"name": "api-keys"}}}})
    def rolled_out() -> bool:
        pods = _pods_now(deployed, "draft")
        return len(pods) == 1 and pods[0].metadata.name != old and _pod_ready(deployed, "draft")

    wait_for(rolled_out, 300, "the drafts rolled out with the key file", interval_s=1)
    with port_forward(deployed.cluster, deployed.namespace, f"svc/{NAME}-draft", 8000) as port:
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/readyz") == 200, 120, "the new draft connected")
        base = f"http://127.0.0.1:{port}/v1"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base, api_key="sk-wrong", max_retries=0).models.list()
        client = openai.OpenAI(base_url=base, api_key="sk-real-one", max_retries=0, timeout=300)
        r = client.completions.create(model=models.SMOLLM2_TARGET, prompt=prompt, max_tokens=MAX_TOKENS,
                                      temperature=0)
        assert r.choices[0].text == want


def test_down_leaves_nothing_behind(real_cluster: ClusterInfo):
    handle = ClusterHandle.load(REAL_CLUSTER)
    assert handle is not None and handle.real_nodes
    nodes = handle.real_node_list()
    plan = network.SlotPlan(handle.network_slot)  # type: ignore[arg-type]
    others = [c for c in network._read_host_state()["users"] if c != REAL_CLUSTER]
    saved_sysctls = network._read_host_state()["sysctls"]
    assert stop_cluster(REAL_CLUSTER)
    for node in nodes:
        assert realnodes.leftovers(node) == []
    assert not network.netns_exists(nodes[0].addr.netns)
    assert network.run("iptables", "-S", plan.guard_chain, check=False).returncode != 0, "guard chain removed"
    assert network.run("ip", "link", "show", plan.bridge, check=False).returncode != 0, "gateway bridge removed"
    assert not list(handle.directory.parent.glob(f"{REAL_CLUSTER}/*")), "cluster state removed"
    if not others:
        assert not set(network.BLACKHOLES) & set(network.blackhole_routes())
        assert {name: network.sysctl(name) for name in saved_sysctls} == saved_sysctls
