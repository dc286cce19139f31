"""What spec.security and spec.api.auth put into the children: certificate mounts and flags, the plaintext
health port for the kubelet's probe, API-key mounts, and NetworkPolicies."""

from __future__ import annotations

from typing import Any

from dsd_operator import labels
from dsd_operator.planning import children
from tests.operator.planning.test_children import _by_key, _pod, _spec


def _container(spec, role: str) -> dict[str, Any]:
    return _pod(spec, role)["containers"][0]


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_mutual_tls_is_on_by_default_with_each_role_mounting_its_own_secret():
    spec = _spec()
    assert children.uses_tls(spec)
    target, draft = _container(spec, "target"), _container(spec, "draft")
    assert _flag(target["args"], "--tls-client-ca") == f"{labels.TLS_DIR}/ca.crt"
    assert _flag(target["args"], "--health-port") == str(labels.HEALTH_PORT)
    assert _flag(draft["args"], "--tls-ca") == f"{labels.TLS_DIR}/ca.crt"
    assert _flag(draft["args"], "--tls-cert") == f"{labels.TLS_DIR}/tls.crt"
    for role in labels.ROLES:
        volume = next(v for v in _pod(spec, role)["volumes"] if v["name"] == "tls")
        assert volume["secret"]["secretName"] == f"llm-{role}-tls"
        assert volume["secret"]["defaultMode"] == 0o440
    # the kubelet's gRPC probe speaks no TLS: it checks the plaintext health port
    assert target["readinessProbe"]["grpc"]["port"] == labels.HEALTH_PORT
    assert target["startupProbe"]["grpc"]["port"] == labels.HEALTH_PORT
    assert {"name": "health", "containerPort": labels.HEALTH_PORT} in target["ports"]


def test_tls_disabled_leaves_plain_grpc_and_probes_on_the_serving_port():
    spec = _spec(security={"tls": "Disabled"})
    target = _container(spec, "target")
    assert "--tls-cert" not in target["args"] and "--tls-cert" not in _container(spec, "draft")["args"]
    assert target["readinessProbe"]["grpc"]["port"] == spec.target.port
    assert all(v["name"] != "tls" for v in _pod(spec, "target")["volumes"])


def test_api_auth_mounts_only_the_named_key_of_the_secret():
    spec = _spec(api={"auth": {"secretRef": {"name": "llm-keys", "key": "tokens"}}})
    draft = _container(spec, "draft")
    assert _flag(draft["args"], "--api-keys-file") == f"{labels.API_KEYS_DIR}/tokens"
    volume = next(v for v in _pod(spec, "draft")["volumes"] if v["name"] == "api-keys")
    assert volume["secret"] == {"secretName": "llm-keys", "defaultMode": 0o440,
                                "items": [{"key": "tokens", "path": "tokens"}]}
    assert "--api-keys-file" not in _container(_spec(), "draft")["args"]


def test_network_policies_admit_only_drafts_to_the_target_grpc_port():
    spec = _spec()
    policies = _by_key(spec)
    target = policies["NetworkPolicy/llm-target"]["spec"]
    assert target["podSelector"]["matchLabels"] == labels.role_selector("llm", "target")
    grpc_rule, open_rule = target["ingress"]
    assert grpc_rule["from"] == [{"podSelector": {"matchLabels": labels.role_selector("llm", "draft")}}]
    assert grpc_rule["ports"] == [{"protocol": "TCP", "port": spec.target.port}]
    assert {p["port"] for p in open_rule["ports"]} == {labels.METRICS_PORT, labels.HEALTH_PORT}
    draft = policies["NetworkPolicy/llm-draft"]["spec"]
    assert draft["ingress"] == [{"ports": [{"protocol": "TCP", "port": spec.draft.port}]}], \
        "the control port is not admitted"
    assert not any(k.startswith("NetworkPolicy/") for k in _by_key(_spec(security={"networkPolicies": False})))


def test_every_pod_meets_the_restricted_pod_security_standard():
    for role in labels.ROLES:
        pod = _pod(_spec(), role)
        c = pod["containers"][0]["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"] == {
            "type": "RuntimeDefault"}
        assert c["allowPrivilegeEscalation"] is False and c["capabilities"] == {"drop": ["ALL"]}
        assert not any("hostPath" in v for v in pod["volumes"])
