"""spec.security and spec.api.auth on the real control plane, with the operator under its chart's RBAC: a CA and
per-role certificates in owned Secrets (valid chain and names, re-issued when wrong), NetworkPolicies that come
and go with the spec, API keys mounted from the user's Secret, pods admitted under the restricted standard."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from kubernetes import client

from dsd_operator import pki
from tests.operator.e2e.conftest import REPO, kubectl
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster
NAME = "smollm2"


def _secret(cluster, namespace: str, name: str) -> dict[str, bytes]:
    data = cluster.core.read_namespaced_secret(name, namespace).data or {}
    return {k: base64.b64decode(v) for k, v in data.items()}


def _networking(cluster) -> client.NetworkingV1Api:
    return client.NetworkingV1Api(cluster.core.api_client)


def _apply_minimal(cluster, dsd, namespace: str) -> None:
    kubectl(cluster, "apply", "-n", namespace, "-f", str(REPO / "manifests/samples/minimal.yaml"))
    dsd.wait_condition(NAME, "Ready", "True")


def test_each_role_gets_a_certificate_for_its_service_signed_by_the_deployments_ca(cluster, dsd, namespace):
    _apply_minimal(cluster, dsd, namespace)
    ca = _secret(cluster, namespace, f"{NAME}-ca")
    ca_cert = x509.load_pem_x509_certificate(ca["ca.crt"])
    uid = dsd.get(NAME)["metadata"]["uid"]
    for role in ("target", "draft"):
        secret = cluster.core.read_namespaced_secret(f"{NAME}-{role}-tls", namespace)
        assert secret.type == "kubernetes.io/tls"
        assert [r.uid for r in secret.metadata.owner_references] == [uid], "removed with the DSDDeployment"
        data = _secret(cluster, namespace, f"{NAME}-{role}-tls")
        assert data["ca.crt"] == ca["ca.crt"]
        x509.load_pem_x509_certificate(data["tls.crt"]).verify_directly_issued_by(ca_cert)
        assert f"{NAME}-{role}.{namespace}.svc" in pki.names_of(data["tls.crt"])
        assert not pki.renewal_due(data["tls.crt"])
    issued = [e.message for e in dsd.events("CertificateIssued")]
    assert sum("certificate in Secret" in m for m in issued) == 2 and any("CA" in m for m in issued)


def test_a_wrong_certificate_is_reissued_and_a_current_one_left_alone(cluster, dsd, namespace):
    _apply_minimal(cluster, dsd, namespace)
    name = f"{NAME}-target-tls"
    draft_before = _secret(cluster, namespace, f"{NAME}-draft-tls")["tls.crt"]
    ca = _secret(cluster, namespace, f"{NAME}-ca")
    wrong = pki.issue(pki.Identity(ca["ca.crt"], ca["ca.key"]), "somebody-else", ["elsewhere.example"])
    cluster.core.patch_namespaced_secret(name, namespace, {"data": {
        "tls.crt": base64.b64encode(wrong.cert_pem).decode(), "tls.key": base64.b64encode(wrong.key_pem).decode()}})
    wait_for(lambda: f"{NAME}-target.{namespace}.svc" in pki.names_of(_secret(cluster, namespace, name)["tls.crt"]),
             60, "the operator re-issuing the target's certificate")
    assert _secret(cluster, namespace, f"{NAME}-draft-tls")["tls.crt"] == draft_before


def test_network_policies_follow_the_spec(cluster, dsd, namespace):
    _apply_minimal(cluster, dsd, namespace)
    net = _networking(cluster)
    target = net.read_namespaced_network_policy(f"{NAME}-target", namespace)
    assert target.spec.ingress[0]._from[0].pod_selector.match_labels == {"dsd.dev/deployment": NAME,
                                                                         "dsd.dev/role": "draft"}
    assert [p.port for p in target.spec.ingress[0].ports] == [50051]
    dsd.patch_spec(NAME, {"security": {"networkPolicies": False}})
    wait_for(lambda: not net.list_namespaced_network_policy(namespace).items, 60, "the policies deleted")
    assert any("deleted NetworkPolicy" in e.message for e in dsd.events("Deleted"))


def test_api_auth_mounts_the_users_secret_into_the_drafts(cluster, dsd, namespace):
    _apply_minimal(cluster, dsd, namespace)
    dsd.patch_spec(NAME, {"api": {"auth": {"secretRef": {"name": "llm-api-keys"}}}})

    def template():
        return cluster.apps.read_namespaced_deployment(f"{NAME}-draft", namespace).spec.template.spec

    wait_for(lambda: any(v.name == "api-keys" for v in template().volumes), 60, "the draft template updated")
    spec = template()
    volume = next(v for v in spec.volumes if v.name == "api-keys")
    assert volume.secret.secret_name == "llm-api-keys" and volume.secret.items[0].key == "keys"
    args = spec.containers[0].args
    assert args[args.index("--api-keys-file") + 1] == "/etc/dsd-api-keys/keys"


def test_pods_are_admitted_in_a_namespace_that_enforces_the_restricted_standard(cluster, dsd, namespace):
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    _apply_minimal(cluster, dsd, namespace)
    assert len(dsd.pods(NAME, "target")) == len(dsd.pods(NAME, "draft")) == 1


def test_the_renew_annotation_reissues_both_certificates_once(cluster, dsd, namespace):
    _apply_minimal(cluster, dsd, namespace)
    before = {role: _secret(cluster, namespace, f"{NAME}-{role}-tls")["tls.crt"] for role in ("target", "draft")}
    ca = _secret(cluster, namespace, f"{NAME}-ca")["ca.crt"]
    kubectl(cluster, "annotate", "-n", namespace, f"dsd/{NAME}", "dsd.dev/renew-certificates=r1")

    def renewed() -> bool:
        return all(_secret(cluster, namespace, f"{NAME}-{r}-tls")["tls.crt"] != before[r] for r in before)

    wait_for(renewed, 60, "both certificates re-issued")
    after = {role: _secret(cluster, namespace, f"{NAME}-{role}-tls")["tls.crt"] for role in ("target", "draft")}
    assert _secret(cluster, namespace, f"{NAME}-ca")["ca.crt"] == ca, "the CA stays"
    versions = {r: cluster.core.read_namespaced_secret(f"{NAME}-{r}-tls", namespace).metadata.resource_version
                for r in before}
    dsd.patch_spec(NAME, {"speculation": {"gamma": 5}})  # another reconcile with the same annotation value
    wait_for(lambda: "gamma: 5" in cluster.core.read_namespaced_config_map(f"{NAME}-runtime", namespace)
             .data["runtime.yaml"], 60, "the reconcile after")
    assert {r: cluster.core.read_namespaced_secret(f"{NAME}-{r}-tls", namespace).metadata.resource_version
            for r in before} == versions, "renewed once per annotation value"
    assert {role: _secret(cluster, namespace, f"{NAME}-{role}-tls")["tls.crt"] for role in before} == after
