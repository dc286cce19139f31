"""`kubectl apply` a sample and get target pods on GPU nodes, draft pods on edge nodes, Ready status, columns."""

from __future__ import annotations

import pytest

from tests.operator.e2e.conftest import REPO, kubectl
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def _node_labels(cluster, node: str) -> dict[str, str]:
    return cluster.core.read_node(node).metadata.labels


def test_minimal_sample_runs_target_on_gpu_and_draft_on_edge(cluster, dsd, namespace):
    kubectl(cluster, "apply", "-n", namespace, "-f", str(REPO / "manifests/samples/minimal.yaml"))
    dsd.wait_condition("smollm2", "Ready", "True", reason="AllRolesReady")

    (target,), (draft,) = dsd.pods("smollm2", "target"), dsd.pods("smollm2", "draft")
    assert target.status.phase == draft.status.phase == "Running"
    assert _node_labels(cluster, target.spec.node_name).get("nvidia.com/gpu.present") == "true"
    assert _node_labels(cluster, draft.spec.node_name).get("dsd.dev/tier") == "edge"

    columns = kubectl(cluster, "get", "dsd", "smollm2", "-n", namespace, "--no-headers").stdout.split()
    assert columns[:5] == ["smollm2", "True", "1/1", "1/1", "4"], columns
    status = dsd.get("smollm2")["status"]
    assert status["observedGeneration"] == dsd.get("smollm2")["metadata"]["generation"]
    assert status["targetEndpoint"] == f"smollm2-target.{namespace}.svc:50051"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True", "TargetReady": "True", "DraftReady": "True", "Progressing": "False", "Degraded": "False"}
    assert {"Created"} <= {e.reason for e in dsd.events()}


def test_pod_templates_carry_wiring_probes_scraping_and_a_restrictive_security_context(cluster, dsd, namespace):
    kubectl(cluster, "apply", "-n", namespace, "-f", str(REPO / "manifests/samples/minimal.yaml"))
    dsd.wait_condition("smollm2", "Ready", "True")
    target = cluster.apps.read_namespaced_deployment("smollm2-target", namespace).spec.template
    draft = cluster.apps.read_namespaced_deployment("smollm2-draft", namespace).spec.template
    t, d = target.spec.containers[0], draft.spec.containers[0]
    assert t.args[:3] == ["target", "--model", "builtin:smollm2-135m-instruct"]
    assert d.args[d.args.index("--target") + 1] == f"smollm2-target.{namespace}.svc:50051"
    assert t.resources.limits == {"nvidia.com/gpu": "1"}
    # mutual TLS (the default): the kubelet probes the target's plaintext health port
    assert t.readiness_probe.grpc.port == 50053 and d.readiness_probe.http_get.path == "/readyz"
    for template, port in ((target, "9101"), (draft, "8000")):
        assert template.metadata.annotations["prometheus.io/scrape"] == "true"
        assert template.metadata.annotations["prometheus.io/port"] == port
        sc = template.spec.containers[0].security_context
        assert sc.run_as_non_root and sc.read_only_root_filesystem and not sc.allow_privilege_escalation
        assert sc.capabilities.drop == ["ALL"]
    mounted = {m.mount_path for m in d.volume_mounts}
    assert "/etc/dsd" in mounted and "/tmp" in mounted
    config = cluster.core.read_namespaced_config_map("smollm2-runtime", namespace).data["runtime.yaml"]
    assert "gamma: 4" in config and "pipelined: true" in config


def test_cpu_only_sample_keeps_the_target_off_gpu_nodes(cluster, dsd, namespace):
    kubectl(cluster, "apply", "-n", namespace, "-f", str(REPO / "manifests/samples/cpu-edge.yaml"))
    dsd.wait_condition("smollm2-cpu", "Ready", "True")
    (target,) = dsd.pods("smollm2-cpu", "target")
    drafts = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(dsd.pods("smollm2-cpu", "draft")), 30,
                      "two draft pods")
    assert _node_labels(cluster, target.spec.node_name).get("nvidia.com/gpu.present") is None
    assert _node_labels(cluster, target.spec.node_name)["dsd.dev/tier"] == "cloud"
    assert all(_node_labels(cluster, p.spec.node_name)["dsd.dev/tier"] == "edge" for p in drafts)


def test_every_sample_is_accepted_by_the_api_server(cluster, chart_release, namespace):
    for path in sorted((REPO / "manifests" / "samples").glob("*.yaml")):
        proc = kubectl(cluster, "apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
        assert proc.returncode == 0, f"{path.name}: {proc.stderr}"
