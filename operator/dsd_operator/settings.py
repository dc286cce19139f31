"""Operator settings from flags or DSD_OPERATOR_* environment variables (the Helm chart sets the latter)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DSD_OPERATOR_", frozen=True)

    namespaces: list[str] = Field(default_factory=list, description=(
        "Namespaces to watch (exact names); empty = the whole cluster."))
    health_port: int = Field(8080, ge=0, le=65535, description="Port of /healthz (kopf liveness); 0 = off.")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Port of the operator's /metrics; 0 = off.")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$", description="Python log level.")
    resync_s: float = Field(60.0, gt=0, description=(
        "Seconds between full reconciles of every resource (catches node label changes; reads only)."))
    workers: int = Field(8, ge=1, description="Threads running reconciles (kopf's sync handler pool).")
    prometheus_url: str = Field("", pattern=r"^(https?://\S+)?$", description=(
        "Prometheus for DSDDeployments whose spec.metrics.prometheusUrl is empty (e.g. a dev cluster's "
        "PROMETHEUS_URL); empty = none: the metrics loop then runs only where the spec names a Prometheus."))
    clusters_namespace: str = Field("", description=(
        "Namespace of the edge clusters' kubeconfig Secrets (label sigs.k8s.io/multicluster-runtime-kubeconfig"
        "=true, key kubeconfig) that spec.draft.placements name; empty = this cluster only."))
