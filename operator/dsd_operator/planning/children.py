"""The children a DSDDeployment should own, computed purely from its spec and each role's scaler replicas.

Called by the reconciler (applying/), which diffs these manifests against the cluster. Speculation settings live
only in the ConfigMap, never in a pod template, so changing them reloads the drafts without restarting them;
anything in a pod template rolls out through the Deployment controller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from dsd_operator import labels
from dsd_operator.api import v1alpha1 as api
from dsd_operator.planning import placing

Manifest = dict[str, Any]

_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
_POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                         "seccompProfile": {"type": "RuntimeDefault"}}
SECRET_FILE_MODE = 0o440  # readable by the pods' group (fsGroup), nobody else
# Model loading takes a while on a cold node; the startup probe gives it 10 minutes before liveness applies.
_STARTUP = {"periodSeconds": 5, "failureThreshold": 120}


@dataclass(frozen=True)
class LoopDecisions:
    """What the metrics loop decided (kept in the DSDDeployment's status), for the children that carry it."""

    gamma: int  # the largest window a round may send
    mode: str = "speculate"
    avoid_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Owner:
    """The DSDDeployment whose children these are."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": f"{api.GROUP}/{api.VERSION}", "kind": api.DEPLOYMENT_KIND, "name": self.name,
                "uid": self.uid, "controller": True, "blockOwnerDeletion": True}

    def metadata(self, name: str, component: str | None = None) -> dict[str, Any]:
        lab = labels.role_labels(self.name, component) if component in labels.ROLES else {
            **labels.common_labels(self.name), **({"app.kubernetes.io/component": component} if component else {})}
        return {"name": name, "namespace": self.namespace, "labels": lab, "ownerReferences": [self.reference()]}

    @property
    def remote_id(self) -> str:
        return f"{self.namespace}/{self.name}@{self.uid}"

    def remote_metadata(self, name: str, component: str | None = None) -> dict[str, Any]:
        """For a child in another cluster: no owner reference (it cannot cross clusters), an annotation naming
        the owner instead, which clean-up matches on."""
        meta = self.metadata(name, component)
        del meta["ownerReferences"]
        meta["annotations"] = {labels.OWNER_ANNOTATION: self.remote_id}
        return meta


def model_argument(model: api.ModelRef) -> str:
    """What the runtime's --model flag gets: a path, the PVC mount, or the URI's reference."""
    if model.path is not None:
        return model.path
    if model.pvc is not None:
        sub = model.pvc.sub_path.strip("/")
        return f"{labels.MODELS_DIR}/{sub}" if sub else labels.MODELS_DIR
    assert model.uri is not None  # the CRD's CEL rule guarantees exactly one
    return model.uri


def target_address(owner: Owner, spec: api.DSDDeploymentSpec) -> str:
    return f"{labels.role_object_name(owner.name, labels.TARGET)}.{owner.namespace}.svc:{spec.target.port}"


def api_url(owner: Owner, spec: api.DSDDeploymentSpec) -> str:
    return f"http://{labels.role_object_name(owner.name, labels.DRAFT)}.{owner.namespace}.svc:{spec.draft.port}/v1"


def runtime_config(spec: api.DSDDeploymentSpec, loop: LoopDecisions | None = None) -> dict[str, Any]:
    """The document the draft watches (its `window` section is re-read on change).

    Without the loop: spec.speculation as written. With it: the loop's gamma bounds every window (gamma_max, which
    also caps model-free proposals) and is the static window; an adaptive policy starts no higher than it.
    """
    s = spec.speculation
    gamma, gamma_max, mode = s.gamma, s.gamma_max, "speculate"
    if loop is not None:
        gamma_max, mode = loop.gamma, loop.mode
        gamma = loop.gamma if s.policy == "static" else min(s.gamma, loop.gamma)
    return {
        "window": {"gamma": gamma, "gamma_min": min(s.gamma_min, gamma), "gamma_max": gamma_max,
                   "policy": s.policy, "pipelined": s.pipelined, "mode": mode},
        "sampling": {"temperature": float(s.sampling.temperature), "top_p": float(s.sampling.top_p),
                     "top_k": s.sampling.top_k},
    }


def config_map(owner: Owner, spec: api.DSDDeploymentSpec, loop: LoopDecisions | None = None) -> Manifest:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": owner.metadata(labels.config_map_name(owner.name),
                                                                                "config"),
            "data": {labels.CONFIG_FILE: yaml.safe_dump(runtime_config(spec, loop), sort_keys=True)}}


def uses_tls(spec: api.DSDDeploymentSpec) -> bool:
    return spec.security.tls == "Operator"


def _tls_args(role: str) -> list[str]:
    d = labels.TLS_DIR
    ca_flag = "--tls-client-ca" if role == labels.TARGET else "--tls-ca"
    args = ["--tls-cert", f"{d}/tls.crt", "--tls-key", f"{d}/tls.key", ca_flag, f"{d}/ca.crt"]
    return [*args, "--health-port", str(labels.HEALTH_PORT)] if role == labels.TARGET else args


def _container_args(owner: Owner, spec: api.DSDDeploymentSpec, role: str, target: str | None = None) -> list[str]:
    tls = _tls_args(role) if uses_tls(spec) else []
    if role == labels.TARGET:
        return ["target", "--model", model_argument(spec.target.model), "--host", "0.0.0.0",
                "--port", str(spec.target.port), "--metrics-port", str(labels.METRICS_PORT), *tls, *spec.target.args]
    model = ["--model", model_argument(spec.draft.model)] if spec.draft.model is not None else [
        "--model", "none", "--tokenizer", model_argument(spec.target.model)]
    auth = [] if spec.api.auth is None else [
        "--api-keys-file", f"{labels.API_KEYS_DIR}/{spec.api.auth.secret_ref.key}"]
    return ["draft", *model, "--target", target or target_address(owner, spec),
            "--host", "0.0.0.0", "--port", str(spec.draft.port), "--control-port", str(labels.CONTROL_PORT),
            "--config", f"{labels.CONFIG_DIR}/{labels.CONFIG_FILE}", *tls, *auth, *spec.draft.args]


def _probes(role: str, port: int, tls: bool) -> dict[str, Any]:
    if role == labels.TARGET:  # the standard gRPC health service (the kubelet's probe speaks no TLS)
        check: dict[str, Any] = {"grpc": {"port": labels.HEALTH_PORT if tls else port}}
        return {"startupProbe": {**check, **_STARTUP}, "readinessProbe": {**check, "periodSeconds": 5},
                "livenessProbe": {**check, "periodSeconds": 10, "failureThreshold": 3}}
    # /readyz follows the target's health stream at once; probe it often so the Service stops routing to a draft
    # whose target is gone within ~4 s (two misses, each allowed 3 s on a loaded node) rather than 15 s.
    return {"startupProbe": {"httpGet": {"path": "/healthz", "port": port}, **_STARTUP},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 2,
                               "timeoutSeconds": 3, "failureThreshold": 2},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 10}}


def _resources(r: api.Resources) -> dict[str, Any]:
    out = {}
    for kind, values in (("requests", r.requests), ("limits", r.limits)):
        if values:
            out[kind] = {k: str(v) for k, v in values.items()}
    return out


def _pod_template(owner: Owner, spec: api.DSDDeploymentSpec, role: str, avoid: tuple[str, ...] = (),
                  target: str | None = None) -> Manifest:
    r: api.TargetRole | api.DraftRole = spec.target if role == labels.TARGET else spec.draft
    ports = [{"name": "grpc" if role == labels.TARGET else "http", "containerPort": r.port}]
    tls = uses_tls(spec)
    if role == labels.TARGET:
        ports.append({"name": "metrics", "containerPort": labels.METRICS_PORT})
        if tls:
            ports.append({"name": "health", "containerPort": labels.HEALTH_PORT})
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[Manifest] = [{"name": "tmp", "emptyDir": {}}]
    if tls:  # the kubelet refreshes a mounted Secret in place; the runtime re-reads rotated files
        mounts.append({"name": "tls", "mountPath": labels.TLS_DIR, "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": labels.tls_secret_name(owner.name, role),
                                                  "defaultMode": SECRET_FILE_MODE}})
    if role == labels.DRAFT and spec.api.auth is not None:
        ref = spec.api.auth.secret_ref
        mounts.append({"name": "api-keys", "mountPath": labels.API_KEYS_DIR, "readOnly": True})
        volumes.append({"name": "api-keys", "secret": {"secretName": ref.name, "defaultMode": SECRET_FILE_MODE,
                                                       "items": [{"key": ref.key, "path": ref.key}]}})
    # A model-free draft still reads the target's tokenizer: from the target's volume when it has one.
    model = r.model if r.model is not None else spec.target.model
    if model.pvc is not None:
        mounts.append({"name": "models", "mountPath": labels.MODELS_DIR, "readOnly": True})
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": model.pvc.claim_name,
                                                                    "readOnly": True}})
    if role == labels.DRAFT:
        mounts.append({"name": "runtime-config", "mountPath": labels.CONFIG_DIR, "readOnly": True})
        volumes.append({"name": "runtime-config", "configMap": {"name": labels.config_map_name(owner.name)}})
    env = [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HOME", "value": "/tmp/hf"},
           *({"name": e.name, "value": e.value} if e.value else {"name": e.name} for e in r.env)]
    container = {
        "name": role, "image": r.image, "imagePullPolicy": r.image_pull_policy, "command": ["dsd"],
        "args": _container_args(owner, spec, role, target), "ports": ports, "env": env, "volumeMounts": mounts,
        "securityContext": _SECURITY_CONTEXT, **_probes(role, r.port, tls),
    }
    if res := _resources(r.resources):
        container["resources"] = res
    annotations = {}
    if spec.metrics.scrape:
        annotations = {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                       "prometheus.io/port": str(labels.METRICS_PORT if role == labels.TARGET else r.port)}
    metadata: Manifest = {"labels": labels.role_labels(owner.name, role)}
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {
        "containers": [container], "volumes": volumes, "securityContext": _POD_SECURITY_CONTEXT,
        "automountServiceAccountToken": False, "enableServiceLinks": False,
        **placing.pod_placement(spec, owner.name, role, avoid)}}


# Targets hold GPUs: a surge pod would wait for a GPU the old pod holds (one replica, one free GPU: the rollout never
# finishes). Replace one pod at a time instead; drafts keep the default surge (they need no scarce device).
TARGET_STRATEGY = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def deployment(owner: Owner, spec: api.DSDDeploymentSpec, role: str, replicas: int,
               avoid: tuple[str, ...] = (), target: str | None = None) -> Manifest:
    body: Manifest = {"replicas": replicas, "selector": {"matchLabels": labels.role_selector(owner.name, role)},
                      "template": _pod_template(owner, spec, role, avoid, target)}
    if role == labels.TARGET:
        body["strategy"] = TARGET_STRATEGY
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": owner.metadata(labels.role_object_name(owner.name, role), role), "spec": body}


def service(owner: Owner, spec: api.DSDDeploymentSpec, role: str) -> Manifest:
    if role == labels.TARGET:
        grpc_port: Manifest = {"name": "grpc", "port": spec.target.port, "targetPort": "grpc", "appProtocol": "grpc"}
        expose = spec.target.expose
        if expose is not None and expose.node_port is not None:
            grpc_port["nodePort"] = expose.node_port
        ports = [grpc_port, {"name": "metrics", "port": labels.METRICS_PORT, "targetPort": "metrics"}]
        svc: Manifest = {"type": expose.service_type if expose is not None else "ClusterIP", "ports": ports}
    else:
        port: Manifest = {"name": "http", "port": spec.draft.port, "targetPort": "http", "appProtocol": "http"}
        if spec.api.node_port is not None:
            port["nodePort"] = spec.api.node_port
        svc = {"type": spec.api.service_type, "ports": [port]}
    svc["selector"] = labels.role_selector(owner.name, role)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": owner.metadata(labels.role_object_name(owner.name, role), role), "spec": svc}


def scaler(owner: Owner, role: str, replicas: int) -> Manifest:
    meta = owner.metadata(labels.role_object_name(owner.name, role), role)
    meta["annotations"] = {labels.SEEDED_REPLICAS_ANNOTATION: str(replicas)}
    return {"apiVersion": f"{api.GROUP}/{api.VERSION}", "kind": api.SCALER_KIND, "metadata": meta,
            "spec": {"replicas": replicas}}


def role_replicas(spec: api.DSDDeploymentSpec, role: str) -> int:
    return (spec.target if role == labels.TARGET else spec.draft).replicas


def network_policies(owner: Owner, spec: api.DSDDeploymentSpec) -> list[Manifest]:
    """The target's gRPC port admits only this DSDDeployment's drafts; its metrics (and the plaintext health
    port) and the drafts' API stay open to the cluster (Prometheus, users); the drafts' control port to nobody.
    Probes come from the node's kubelet, which network plugins do not filter."""
    target_ports = [{"protocol": "TCP", "port": labels.METRICS_PORT}]
    if uses_tls(spec):
        target_ports.append({"protocol": "TCP", "port": labels.HEALTH_PORT})
    rules = {
        labels.TARGET: [
            {"from": [{"podSelector": {"matchLabels": labels.role_selector(owner.name, labels.DRAFT)}}],
             "ports": [{"protocol": "TCP", "port": spec.target.port}]},
            {"ports": target_ports}],
        labels.DRAFT: [{"ports": [{"protocol": "TCP", "port": spec.draft.port}]}],
    }
    return [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": owner.metadata(labels.role_object_name(owner.name, role), role),
             "spec": {"podSelector": {"matchLabels": labels.role_selector(owner.name, role)},
                      "policyTypes": ["Ingress"], "ingress": rules[role]}} for role in labels.ROLES]


def workload(owner: Owner, spec: api.DSDDeploymentSpec, replicas: dict[str, int],
             loop: LoopDecisions | None = None) -> list[Manifest]:
    """ConfigMap, then per role a Service and a Deployment (replicas from the role's scaler), then the
    NetworkPolicies (when enabled). Certificate Secrets are not planned here: issuing keys is not pure."""
    out = [config_map(owner, spec, loop)]
    avoid = loop.avoid_nodes if loop is not None else ()
    for role in labels.ROLES:
        out += [service(owner, spec, role),
                deployment(owner, spec, role, replicas[role], avoid if role == labels.DRAFT else ())]
    if spec.security.network_policies:
        out += network_policies(owner, spec)
    return out


def remote_drafts(owner: Owner, spec: api.DSDDeploymentSpec, placement: api.DraftPlacement,
                  loop: LoopDecisions | None = None) -> list[Manifest]:
    """The drafts of one placement in another cluster: ConfigMap, Service and Deployment as this cluster's
    drafts have them, with the placement's replicas and node placement, dialling spec.target.expose.address.
    `loop` is that cluster's own decision (window, mode, nodes to avoid there). (Their certificate and API-key
    Secrets are copies the applier makes.) No owner references: see Owner.remote_metadata."""
    assert spec.target.expose is not None  # the CRD's CEL rule guarantees it with placements
    here = spec.model_copy(update={"draft": spec.draft.model_copy(update={"placement": placement.placement})})
    avoid = loop.avoid_nodes if loop is not None else ()  # that cluster's nodes (the loop decides per cluster)
    out = [config_map(owner, spec, loop), service(owner, here, labels.DRAFT),
           deployment(owner, here, labels.DRAFT, placement.replicas, avoid, target=spec.target.expose.address)]
    for m in out:
        m["metadata"] = owner.remote_metadata(m["metadata"]["name"], m["metadata"]["labels"].get(
            "app.kubernetes.io/component"))
    return out
