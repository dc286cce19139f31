"""Label keys, names of children, condition types and event reasons: constants shared by planner and applier."""

from __future__ import annotations

from typing import Final

MANAGER: Final = "dsd-operator"
DEPLOYMENT_LABEL: Final = "dsd.dev/deployment"  # the owning DSDDeployment's name
ROLE_LABEL: Final = "dsd.dev/role"  # target | draft
SEEDED_REPLICAS_ANNOTATION: Final = "dsd.dev/seeded-replicas"  # spec.<role>.replicas last copied into the scaler
# On a DSDDeployment: any new value re-issues its certificates now (`kubectl annotate ... --overwrite`); each
# certificate Secret records the value it was issued for.
RENEW_CERTIFICATES_ANNOTATION: Final = "dsd.dev/renew-certificates"
# Children in other clusters cannot carry owner references: they name their owner instead, and the owner keeps a
# finalizer while any exist, so deleting it removes them first.
OWNER_ANNOTATION: Final = "dsd.dev/owner"  # namespace/name@cluster-uid of the DSDDeployment
REMOTE_FINALIZER: Final = "dsd.dev/remote-children"
KUBECONFIG_SECRET_LABEL: Final = "sigs.k8s.io/multicluster-runtime-kubeconfig"  # multicluster-runtime's convention
KUBECONFIG_SECRET_KEY: Final = "kubeconfig"
# On a kubeconfig Secret: the edge cluster's own Prometheus (as the operator reaches it), for its metrics loop.
PROMETHEUS_URL_ANNOTATION: Final = "dsd.dev/prometheus-url"

TARGET, DRAFT = "target", "draft"
ROLES: Final = (TARGET, DRAFT)

METRICS_PORT: Final = 9101  # the target's Prometheus port (the draft serves /metrics on its API port)
CONTROL_PORT: Final = 50052  # the draft's DraftControl gRPC port
CONFIG_DIR: Final = "/etc/dsd"
CONFIG_FILE: Final = "runtime.yaml"
MODELS_DIR: Final = "/models"
HEALTH_PORT: Final = 50053  # the target's plaintext health service with mutual TLS (the kubelet's gRPC probe)
TLS_DIR: Final = "/etc/dsd-tls"  # a role's certificate Secret: tls.crt, tls.key, ca.crt
API_KEYS_DIR: Final = "/etc/dsd-api-keys"


def common_labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "dsd",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "dsd",
        "app.kubernetes.io/managed-by": MANAGER,
        DEPLOYMENT_LABEL: name,
    }


def role_selector(name: str, role: str) -> dict[str, str]:
    """The immutable Deployment selector of a role's pods."""
    return {DEPLOYMENT_LABEL: name, ROLE_LABEL: role}


def role_labels(name: str, role: str) -> dict[str, str]:
    return {**common_labels(name), "app.kubernetes.io/component": role, ROLE_LABEL: role}


def role_object_name(name: str, role: str) -> str:
    """Deployment, Service and DSDRoleScaler of a role share this name."""
    return f"{name}-{role}"


def config_map_name(name: str) -> str:
    return f"{name}-runtime"


def tls_secret_name(name: str, role: str) -> str:
    """A role's certificate Secret (kubernetes.io/tls with ca.crt)."""
    return f"{name}-{role}-tls"


def ca_secret_name(name: str) -> str:
    """The DSDDeployment's CA (ca.crt, ca.key): the operator signs the roles' certificates with it."""
    return f"{name}-ca"


class Condition:
    READY: Final = "Ready"
    TARGET_READY: Final = "TargetReady"
    DRAFT_READY: Final = "DraftReady"
    PROGRESSING: Final = "Progressing"
    DEGRADED: Final = "Degraded"
    METRICS_AVAILABLE: Final = "MetricsAvailable"
    CLUSTERS_REACHABLE: Final = "ClustersReachable"


class Reason:
    """Condition and Event reasons (CamelCase, stable: automation may match on them)."""

    ALL_READY: Final = "AllRolesReady"
    READY: Final = "PodsReady"
    NOT_READY: Final = "PodsNotReady"
    UNSCHEDULABLE: Final = "Unschedulable"
    NO_EDGE_NODES: Final = "NoEdgeNodes"
    SCALED_TO_ZERO: Final = "ScaledToZero"
    ROLLING_OUT: Final = "RollingOut"
    COMPLETE: Final = "Complete"
    AS_EXPECTED: Final = "AsExpected"
    CREATED: Final = "Created"
    UPDATED: Final = "Updated"
    CONFIG_UPDATED: Final = "SpeculationConfigUpdated"
    SCALED: Final = "Scaled"
    INVALID_SPEC: Final = "InvalidSpec"
    APPLY_FAILED: Final = "ApplyFailed"
    METRICS_READ: Final = "MetricsRead"
    NO_TRAFFIC: Final = "NoTraffic"
    SPECULATION: Final = "SpeculationTuned"
    PLACEMENT: Final = "DraftsMoved"
    AUTOSCALED: Final = "Autoscaled"
    CERTIFICATE_ISSUED: Final = "CertificateIssued"
    DELETED: Final = "Deleted"
    REACHABLE: Final = "Reachable"
    UNREACHABLE: Final = "Unreachable"
    UNKNOWN_CLUSTER: Final = "UnknownCluster"
