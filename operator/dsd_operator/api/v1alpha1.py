"""dsd.dev/v1alpha1: DSDDeployment (a draft/target pair) and DSDRoleScaler (the /scale object of one role).

These pydantic models are the one source of truth: `dsd_operator.api.crds` generates the CRDs in `crds/` (and the
Helm chart's copy) from them, and the planner reads a resource's spec through them. Field descriptions are what
`kubectl explain` shows, so each starts with the field name. CEL rules live next to the fields they check.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "dsd.dev"
VERSION = "v1alpha1"
DEPLOYMENT_KIND, DEPLOYMENT_PLURAL = "DSDDeployment", "dsddeployments"
SCALER_KIND, SCALER_PLURAL = "DSDRoleScaler", "dsdrolescalers"

DEFAULT_IMAGE = "ghcr.io/dsd-project/dsd-runtime:0.1.0"
EDGE_ROLE_LABEL = "node-role.kubernetes.io/edge"
EDGE_TIER_LABEL, EDGE_TIER_VALUE = "dsd.dev/tier", "edge"
GPU_RESOURCE = "nvidia.com/gpu"
ZONE_LABEL = "topology.kubernetes.io/zone"

Quantity = int | str  # rendered as x-kubernetes-int-or-string


def _cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class PersistentVolumeModel(_Model):
    claim_name: str = Field(min_length=1, description="claimName: the PersistentVolumeClaim holding the model.")
    sub_path: str = Field("", description="subPath: directory (or .gguf file) inside the volume; empty = its root.")


class ModelRef(_Model):
    """Where the weights come from; exactly one of path, pvc or uri."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _cel("[has(self.path), has(self.pvc), has(self.uri)].filter(x, x).size() == 1",
             "model: set exactly one of path, pvc or uri"),
    ]})

    path: str | None = Field(None, pattern=r"^/", description=(
        "path: absolute directory (from_pretrained layout) or .gguf file inside the runtime image."))
    pvc: PersistentVolumeModel | None = Field(None, description=(
        "pvc: a PersistentVolumeClaim mounted read-only at /models; the runtime loads /models/<subPath>."))
    uri: str | None = Field(None, pattern=r"^(builtin|file):", description=(
        "uri: a reference the runtime resolves itself: builtin:<name> (e.g. builtin:smollm2-135m-instruct, "
        "shipped in the image) or file:///absolute/path."))


class Toleration(_Model):
    key: str = Field("", description="key: taint key to tolerate; empty with operator Exists tolerates all taints.")
    operator: Literal["Exists", "Equal"] = Field("Exists", description="operator: Exists or Equal.")
    value: str = Field("", description="value: taint value when operator is Equal.")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        "", description="effect: taint effect to tolerate; empty = all effects.")


class Placement(_Model):
    """Overrides of the role's default placement; a field set here replaces that part of the default."""

    node_selector: dict[str, str] | None = Field(None, description=(
        "nodeSelector: node labels the pods require; replaces the default node affinity when set."))
    affinity: dict[str, Any] | None = Field(None, description=(
        "affinity: a core/v1 Affinity; replaces the default node affinity when set."))
    tolerations: list[Toleration] | None = Field(None, description=(
        "tolerations: replace the default tolerations (GPU taint for the target, edge taint for the draft)."))
    spread_across_zones: bool = Field(True, description=(
        "spreadAcrossZones: spread replicas across topology.kubernetes.io/zone (best effort)."))


class Resources(_Model):
    requests: dict[str, Quantity] = Field(default_factory=dict, description="requests: resource requests.")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="limits: resource limits.")


class EnvVar(_Model):
    name: str = Field(min_length=1, description="name: environment variable name.")
    value: str = Field("", description="value: environment variable value.")


class _Role(_Model):
    image: str = Field(DEFAULT_IMAGE, min_length=1, description="image: the DSD runtime image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="imagePullPolicy: Always, IfNotPresent or Never.")
    replicas: int = Field(1, ge=0, le=1000, description=(
        "replicas: initial replica count. Later changes here are applied, but so are changes made through the "
        "role's DSDRoleScaler (kubectl scale, HPA, KEDA): the most recent writer wins and the operator never "
        "resets a scaled value on its own."))
    placement: Placement = Field(default_factory=Placement, description="placement: where the pods may run.")
    args: list[str] = Field(default_factory=list, description=(
        "args: extra runtime arguments appended to the role's command line (e.g. --max-sessions=128)."))
    env: list[EnvVar] = Field(default_factory=list, description="env: extra environment variables.")


class TargetRole(_Role):
    model: ModelRef = Field(description="model: where the target's weights come from.")
    resources: Resources = Field(
        default_factory=lambda: Resources(limits={GPU_RESOURCE: 1}),
        description="resources: container resources; the default asks for one nvidia.com/gpu.")
    port: int = Field(50051, ge=1, le=65535, description="port: gRPC port of the target (verification).")


class DraftRole(_Role):
    model: ModelRef | None = Field(None, description=(
        "model: the draft model's weights. Omitted: model-free drafting (prompt lookup and a suffix cache over "
        "earlier requests, with target-only decoding when nothing pays), which needs no draft weights or "
        "training and only the target's tokenizer."))
    resources: Resources = Field(default_factory=Resources, description="resources: container resources.")
    port: int = Field(8000, ge=1, le=65535, description="port: HTTP port of the OpenAI-compatible API.")
    edge_taint_key: str = Field(EDGE_ROLE_LABEL, description=(
        "edgeTaintKey: taint key of edge nodes that draft pods tolerate (any value and effect)."))


class Sampling(_Model):
    temperature: str = Field("1.0", pattern=r"^[0-9]+(\.[0-9]+)?$", description=(
        "temperature: default sampling temperature (decimal string) when a request omits it; 0 = greedy."))
    top_p: str = Field("1.0", pattern=r"^(0(\.[0-9]+)?|1(\.0+)?)$", description=(
        "topP: default nucleus probability in (0, 1] (decimal string) when a request omits it."))
    top_k: int = Field(0, ge=0, description="topK: default top-k when a request omits it; 0 = off.")


class Speculation(_Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _cel("self.gammaMin <= self.gamma", "gamma must be >= gammaMin", ".gamma"),
        _cel("self.gamma <= self.gammaMax", "gamma must be <= gammaMax", ".gamma"),
    ]})

    gamma: int = Field(4, ge=1, le=32, description=(
        "gamma: draft tokens per verification round (static policy) or the starting window (adaptive)."))
    gamma_min: int = Field(1, ge=1, le=32, description="gammaMin: smallest window the adaptive policy may use.")
    gamma_max: int = Field(8, ge=1, le=32, description="gammaMax: largest window the adaptive policy may use.")
    policy: Literal["static", "adaptive"] = Field("static", description=(
        "policy: static keeps gamma; adaptive picks the goodput-optimal window per round from measured "
        "acceptance, draft step time and round-trip time."))
    pipelined: bool = Field(True, description=(
        "pipelined: keep drafting while a verification is in flight (pays off at higher round-trip times)."))
    sampling: Sampling = Field(default_factory=Sampling, description="sampling: request defaults.")


class Api(_Model):
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="serviceType: how the draft's OpenAI API Service is exposed.")
    node_port: int | None = Field(None, ge=30000, le=32767, description=(
        "nodePort: fixed node port when serviceType is NodePort; unset = allocated."))


class Slo(_Model):
    ttft_ms: int | None = Field(None, ge=1, description="ttftMs: time-to-first-token target (P95), milliseconds.")
    tpot_ms: int | None = Field(None, ge=1, description="tpotMs: time-per-output-token target (P95), milliseconds.")


class Metrics(_Model):
    prometheus_url: str | None = Field(None, pattern=r"^https?://", description=(
        "prometheusUrl: Prometheus that scrapes the pods; read by the metrics-driven loop (gamma, replicas)."))
    scrape: bool = Field(True, description="scrape: annotate pods with prometheus.io/scrape, port and path.")


class DSDDeploymentSpec(_Model):
    """spec of a DSDDeployment: a target role on GPU nodes verifying for a draft role on edge nodes."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _cel("!has(self.api) || !has(self.api.nodePort) || self.api.serviceType == 'NodePort'",
             "api.nodePort requires api.serviceType NodePort", ".api.nodePort"),
    ]})

    target: TargetRole = Field(description="target: the large model on GPU nodes that verifies draft windows.")
    draft: DraftRole = Field(default_factory=DraftRole, description=(
        "draft: the drafting role near users; proposes tokens and serves the OpenAI-compatible API. "
        "Omitted: one model-free draft replica on an edge node."))
    speculation: Speculation = Field(default_factory=Speculation, description=(
        "speculation: the window and sampling defaults; changes reach running drafts without a restart."))
    api: Api = Field(default_factory=Api, description="api: exposure of the draft's OpenAI-compatible API.")
    slo: Slo = Field(default_factory=Slo, description="slo: latency targets for the metrics-driven loop.")
    metrics: Metrics = Field(default_factory=Metrics, description="metrics: Prometheus integration.")


class RoleScalerSpec(_Model):
    """spec of a DSDRoleScaler: the replica count of one role, the target of /scale (HPA, KEDA, kubectl scale)."""

    replicas: int = Field(1, ge=0, le=1000, description="replicas: desired pods of this role.")


class Condition(_Model):
    type: str = Field(description="type: Ready, TargetReady, DraftReady, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="status: True, False or Unknown.")
    reason: str = Field("", description="reason: CamelCase cause, stable for automation.")
    message: str = Field("", description="message: what is happening, for humans.")
    last_transition_time: str = Field("", description="lastTransitionTime: when status last changed (RFC 3339).")
    observed_generation: int = Field(0, description="observedGeneration: the spec generation this reflects.")


class RoleStatus(_Model):
    desired_replicas: int = Field(0, description="desiredReplicas: replicas the role's scaler asks for.")
    replicas: int = Field(0, description="replicas: pods that exist.")
    ready_replicas: int = Field(0, description="readyReplicas: pods that pass their readiness probe.")
    updated_replicas: int = Field(0, description="updatedReplicas: pods running the current template.")
    summary: str = Field("0/0", description="summary: ready/desired, for kubectl get.")


class DSDDeploymentStatus(_Model):
    observed_generation: int = Field(0, description="observedGeneration: the last spec generation reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="conditions: the current state.")
    target: RoleStatus = Field(default_factory=RoleStatus, description="target: replicas of the target role.")
    draft: RoleStatus = Field(default_factory=RoleStatus, description="draft: replicas of the draft role.")
    gamma: int = Field(0, description="gamma: the window the drafts are configured with now.")
    acceptance: str = Field("", description=(
        "acceptance: measured draft-token acceptance rate (filled by the metrics loop when Prometheus is set)."))
    target_endpoint: str = Field("", description="targetEndpoint: gRPC address the drafts verify against.")
    api_endpoint: str = Field("", description="apiEndpoint: in-cluster URL of the OpenAI-compatible API.")


class RoleScalerStatus(_Model):
    replicas: int = Field(0, description="replicas: pods of this role that exist (the /scale status).")
    selector: str = Field("", description="selector: label selector of the role's pods (for HPA).")
