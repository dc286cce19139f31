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


class Autoscaling(_Model):
    """Bounds of the operator's metric-driven replicas for one role (needs spec.slo and Prometheus)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _cel("self.minReplicas <= self.maxReplicas", "minReplicas must be <= maxReplicas", ".minReplicas"),
    ]})

    min_replicas: int = Field(1, ge=1, le=1000, description=(
        "minReplicas: fewest replicas the loop scales to (never 0: a missing metric must not stop serving)."))
    max_replicas: int = Field(ge=1, le=1000, description="maxReplicas: most replicas the loop scales to.")
    requests_per_replica: int = Field(8, ge=1, le=10000, description=(
        "requestsPerReplica: draft only: concurrent requests one draft pod should carry (its queueing target)."))


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
    autoscaling: Autoscaling | None = Field(None, description=(
        "autoscaling: let the metrics loop set this role's replicas within these bounds against spec.slo. "
        "Omitted, or an HPA/KEDA ScaledObject pointing at the role's DSDRoleScaler: the loop leaves replicas "
        "alone."))


class TargetExpose(_Model):
    """How drafts in other clusters reach the target: a Service they can reach and the address they dial."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _cel("!has(self.nodePort) || self.serviceType == 'NodePort'",
             "expose.nodePort requires expose.serviceType NodePort", ".nodePort"),
    ]})

    address: str = Field(max_length=260, pattern=r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$", description=(
        "address: host:port that drafts in other clusters dial (a node address with the node port, a load "
        "balancer's name); the target's certificate names the host."))
    service_type: Literal["NodePort", "LoadBalancer"] = Field("NodePort", description=(
        "serviceType: the target Service's type, so that the address reaches it."))
    node_port: int | None = Field(None, ge=30000, le=32767, description=(
        "nodePort: fixed node port of the gRPC port with serviceType NodePort; unset = allocated."))


class TargetRole(_Role):
    model: ModelRef = Field(description="model: where the target's weights come from.")
    resources: Resources = Field(
        default_factory=lambda: Resources(limits={GPU_RESOURCE: 1}),
        description="resources: container resources; the default asks for one nvidia.com/gpu.")
    port: int = Field(50051, ge=1, le=65535, description="port: gRPC port of the target (verification).")
    expose: TargetExpose | None = Field(None, description=(
        "expose: make the target reachable from drafts in other clusters (required with "
        "spec.draft.placements); unset = inside this cluster only."))


class DraftPlacement(_Model):
    cluster: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description=(
        "cluster: a registered edge cluster: the name of its kubeconfig Secret (label "
        "sigs.k8s.io/multicluster-runtime-kubeconfig=true) in the operator's clusters namespace."))
    replicas: int = Field(1, ge=0, le=1000, description="replicas: draft pods in that cluster.")
    placement: Placement = Field(default_factory=Placement, description=(
        "placement: where in that cluster the drafts may run (defaults: its edge nodes, as in this cluster)."))


class DraftRole(_Role):
    model: ModelRef | None = Field(None, description=(
        "model: the draft model's weights. Omitted: model-free drafting (prompt lookup and a suffix cache over "
        "earlier requests, with target-only decoding when nothing pays), which needs no draft weights or "
        "training and only the target's tokenizer."))
    resources: Resources = Field(default_factory=Resources, description="resources: container resources.")
    port: int = Field(8000, ge=1, le=65535, description="port: HTTP port of the OpenAI-compatible API.")
    edge_taint_key: str = Field(EDGE_ROLE_LABEL, description=(
        "edgeTaintKey: taint key of edge nodes that draft pods tolerate (any value and effect)."))
    placements: list[DraftPlacement] = Field(default_factory=list, max_length=32, description=(
        "placements: draft groups in other (edge) clusters, in addition to the spec.draft.replicas drafts of "
        "this cluster (0 for edge-only); each is a Deployment, ConfigMap, Service and certificate Secret there, "
        "dialling spec.target.expose.address."), json_schema_extra={"x-kubernetes-validations": [
            _cel("self.all(p, self.exists_one(q, q.cluster == p.cluster))",
                 "placements: each cluster at most once")]})


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


class SecretKeyRef(_Model):
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", description=(
        "name: a Secret in the DSDDeployment's namespace."))
    key: str = Field("keys", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description=(
        "key: the Secret's key holding the API keys, one per line (default `keys`)."))


class ApiAuth(_Model):
    secret_ref: SecretKeyRef = Field(description=(
        "secretRef: the Secret whose key lists the accepted bearer keys; rotating it needs no restart."))


class Api(_Model):
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="serviceType: how the draft's OpenAI API Service is exposed.")
    node_port: int | None = Field(None, ge=30000, le=32767, description=(
        "nodePort: fixed node port when serviceType is NodePort; unset = allocated."))
    auth: ApiAuth | None = Field(None, description=(
        "auth: require `Authorization: Bearer <key>` on /v1/* (401 otherwise); unset = the API is open."))


class Security(_Model):
    tls: Literal["Operator", "Disabled"] = Field("Operator", description=(
        "tls: mutual TLS between drafts and the target (and on the drafts' control RPC). Operator: a CA per "
        "DSDDeployment and certificates in Secrets, renewed before they expire; Disabled: plaintext gRPC."))
    network_policies: bool = Field(True, description=(
        "networkPolicies: NetworkPolicies that admit only the drafts to the target's gRPC port and nobody to the "
        "drafts' control port (enforced where the cluster's network plugin implements them)."))


class Slo(_Model):
    ttft_ms: int | None = Field(None, ge=1, description="ttftMs: time-to-first-token target (P95), milliseconds.")
    tpot_ms: int | None = Field(None, ge=1, description="tpotMs: time-per-output-token target (P95), milliseconds.")


class Metrics(_Model):
    prometheus_url: str | None = Field(None, pattern=r"^https?://", description=(
        "prometheusUrl: Prometheus that scrapes the pods; read by the metrics-driven loop (gamma, replicas)."))
    scrape: bool = Field(True, description="scrape: annotate pods with prometheus.io/scrape, port and path.")


class Autotune(_Model):
    """The metrics-driven loop: observe Prometheus, decide gamma / mode / replicas / placement, act."""

    enabled: bool = Field(True, description=(
        "enabled: run the loop when a Prometheus URL is known (spec.metrics.prometheusUrl or the operator's "
        "default); false keeps spec.speculation as written."))
    interval_seconds: int = Field(15, ge=1, le=3600, description="intervalSeconds: seconds between decisions.")
    rate_window_seconds: int = Field(60, ge=5, le=3600, description=(
        "rateWindowSeconds: the PromQL rate() window the statistics are pooled over."))
    min_dwell_seconds: int = Field(60, ge=0, le=86400, description=(
        "minDwellSeconds: a window or mode stays at least this long before the next change (no flapping)."))
    deadband_percent: int = Field(5, ge=0, le=100, description=(
        "deadbandPercent: change the window only when the predicted goodput gains more than this."))
    probe_after_seconds: int = Field(120, ge=10, le=86400, description=(
        "probeAfterSeconds: in mode off, try speculating again after this long (doubling after each probe "
        "that did not pay, up to 16x), since acceptance cannot be measured while the target decodes alone."))
    scale_cooldown_seconds: int = Field(120, ge=0, le=86400, description=(
        "scaleCooldownSeconds: least time between two replica changes of a role."))
    node_grace_seconds: int = Field(30, ge=5, le=3600, description=(
        "nodeGraceSeconds: a draft's node whose kubelet has not renewed its lease (or is NotReady) this long is "
        "avoided and its drafts move to other edge nodes."))


class DSDDeploymentSpec(_Model):
    """spec of a DSDDeployment: a target role on GPU nodes verifying for a draft role on edge nodes."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _cel("!has(self.api) || !has(self.api.nodePort) || self.api.serviceType == 'NodePort'",
             "api.nodePort requires api.serviceType NodePort", ".api.nodePort"),
        _cel("!has(self.draft) || !has(self.draft.placements) || size(self.draft.placements) == 0 || "
             "has(self.target.expose)",
             "draft.placements in other clusters need target.expose (the address their drafts dial)",
             ".target.expose"),
    ]})

    target: TargetRole = Field(description="target: the large model on GPU nodes that verifies draft windows.")
    draft: DraftRole = Field(default_factory=DraftRole, description=(
        "draft: the drafting role near users; proposes tokens and serves the OpenAI-compatible API. "
        "Omitted: one model-free draft replica on an edge node."))
    speculation: Speculation = Field(default_factory=Speculation, description=(
        "speculation: the window and sampling defaults; changes reach running drafts without a restart."))
    api: Api = Field(default_factory=Api, description="api: exposure of the draft's OpenAI-compatible API.")
    security: Security = Field(default_factory=Security, description=(
        "security: mutual TLS on the draft-target link and network policies."))
    slo: Slo = Field(default_factory=Slo, description="slo: latency targets for the metrics-driven loop.")
    metrics: Metrics = Field(default_factory=Metrics, description="metrics: Prometheus integration.")
    autotune: Autotune = Field(default_factory=Autotune, description=(
        "autotune: the metrics-driven loop (gamma, speculation mode, replicas, draft placement)."))


class RoleScalerSpec(_Model):
    """spec of a DSDRoleScaler: the replica count of one role, the target of /scale (HPA, KEDA, kubectl scale)."""

    replicas: int = Field(1, ge=0, le=1000, description="replicas: desired pods of this role.")


class Condition(_Model):
    type: str = Field(description=(
        "type: Ready, TargetReady, DraftReady, Progressing, Degraded or MetricsAvailable."))
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


class SpeculationStatus(_Model):
    gamma: int = Field(0, description="gamma: the largest window a round may send now (the loop's choice).")
    mode: Literal["speculate", "off"] = Field("speculate", description=(
        "mode: speculate, or off (the target decodes alone: speculation cannot pay at the measured acceptance "
        "and round trip)."))
    reason: str = Field("", description="reason: CamelCase cause of the last decision.")
    message: str = Field("", description="message: the figures behind the last decision.")
    since: str = Field("", description="since: when gamma or mode last changed (RFC 3339).")
    probe_after_seconds: int = Field(0, description=(
        "probeAfterSeconds: in mode off, seconds after `since` when speculation is tried again."))
    spec_gamma: int = Field(0, description=(
        "specGamma: spec.speculation.gamma this decision was made under; changing the spec restarts from it."))


class SiteMetrics(_Model):
    node: str = Field(description="node: where these drafts run.")
    round_trip_ms: float | None = Field(None, description="roundTripMs: their mean verify round trip.")
    rounds_per_second: float = Field(0.0, description="roundsPerSecond: their verify rounds per second.")


class MetricsStatus(_Model):
    acceptance: float | None = Field(None, description="acceptance: accepted / proposed draft tokens.")
    tokens_per_round: float | None = Field(None, description="tokensPerRound: output tokens per verify round.")
    ttft_p95_ms: float | None = Field(None, description="ttftP95Ms: time to first token, 95th percentile.")
    tpot_p95_ms: float | None = Field(None, description="tpotP95Ms: time between output tokens, 95th percentile.")
    rtt_p90_ms: float | None = Field(None, description=(
        "rttP90Ms: the drafts' verify round trip (network + queue + target compute), 90th percentile."))
    requests_per_second: float | None = Field(None, description="requestsPerSecond: completion requests / s.")
    tokens_per_second: float | None = Field(None, description="tokensPerSecond: output tokens / s, all drafts.")
    target_utilization: float | None = Field(None, description=(
        "targetUtilization: fraction of time the target replicas spend computing, averaged over replicas."))
    sites: list[SiteMetrics] = Field(default_factory=list, description=(
        "sites: per draft node, the round trip to the target (placement decisions read these)."))
    sampled_at: str = Field("", description="sampledAt: when Prometheus was queried (RFC 3339).")


class AvoidedNode(_Model):
    node: str = Field(description="node: the node's name.")
    reason: str = Field("", description="reason: why drafts avoid it (e.g. LeaseExpired, NotReady).")
    since: str = Field("", description="since: when it was first avoided (RFC 3339).")
    healthy_since: str = Field("", description=(
        "healthySince: when it was first seen healthy again; it is released after nodeGraceSeconds of health."))


class PlacementStatus(_Model):
    avoided_nodes: list[AvoidedNode] = Field(default_factory=list, description=(
        "avoidedNodes: nodes the drafts' pod template excludes until they are healthy again."))


class ScalingStatus(_Model):
    last_scale_time: str = Field("", description="lastScaleTime: when the loop last changed this role's replicas.")
    reason: str = Field("", description="reason: why the replicas are what they are.")
    message: str = Field("", description="message: the figures behind the last replica decision.")


class ClusterStatus(_Model):
    name: str = Field(description="name: the edge cluster (its kubeconfig Secret's name).")
    reachable: bool = Field(False, description="reachable: its API server answered the last probe.")
    message: str = Field("", description="message: the probe's answer, or why the cluster cannot be managed.")
    desired_replicas: int = Field(0, description="desiredReplicas: drafts the placement asks for there.")
    ready_replicas: int = Field(0, description="readyReplicas: drafts Ready there at the last look.")
    speculation: SpeculationStatus | None = Field(None, description=(
        "speculation: the metrics loop's window and mode for the drafts in that cluster (from its own "
        "Prometheus); absent: they follow this cluster's."))
    metrics: MetricsStatus | None = Field(None, description=(
        "metrics: the statistics of that cluster's drafts the loop last read (round trip, acceptance, sites)."))
    metrics_available: bool | None = Field(None, description=(
        "metricsAvailable: whether the loop could read that cluster's drafts at its last pass."))
    # No defaults below: the API server would fill them into every entry, also where the loop does not run.
    metrics_message: str | None = Field(None, description=(
        "metricsMessage: what the loop read there, or why it could not."))
    avoided_nodes: list[AvoidedNode] | None = Field(None, description=(
        "avoidedNodes: nodes of that cluster its drafts avoid until they are healthy (or fast) again."))


class DSDDeploymentStatus(_Model):
    observed_generation: int = Field(0, description="observedGeneration: the last spec generation reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="conditions: the current state.")
    target: RoleStatus = Field(default_factory=RoleStatus, description="target: replicas of the target role.")
    draft: RoleStatus = Field(default_factory=RoleStatus, description="draft: replicas of the draft role.")
    gamma: int = Field(0, description="gamma: the window the drafts are configured with now.")
    acceptance: str = Field("", description=(
        "acceptance: measured draft-token acceptance rate, as text for kubectl get (filled by the metrics loop)."))
    tpot_p95_ms: str = Field("", description="tpotP95Ms: measured time per output token (P95), for kubectl get.")
    target_endpoint: str = Field("", description="targetEndpoint: gRPC address the drafts verify against.")
    target_external_endpoint: str = Field("", description=(
        "targetExternalEndpoint: the address drafts in other clusters dial (spec.target.expose.address)."))
    api_endpoint: str = Field("", description="apiEndpoint: in-cluster URL of the OpenAI-compatible API.")
    clusters: list[ClusterStatus] | None = Field(None, description=(
        "clusters: the edge clusters of spec.draft.placements, their reachability and drafts."))
    speculation: SpeculationStatus | None = Field(None, description=(
        "speculation: the loop's current decision (absent while the loop does not run)."))
    metrics: MetricsStatus | None = Field(None, description="metrics: the last statistics the loop read.")
    placement: PlacementStatus | None = Field(None, description="placement: the loop's placement decisions.")
    scaling: dict[str, ScalingStatus] | None = Field(None, description=(
        "scaling: per role (target, draft), the loop's last replica decision."))


class RoleScalerStatus(_Model):
    replicas: int = Field(0, description="replicas: pods of this role that exist (the /scale status).")
    selector: str = Field("", description="selector: label selector of the role's pods (for HPA).")
