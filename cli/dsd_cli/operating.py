"""`dsd operator`: run the DSDDeployment operator, print its CRDs."""

from __future__ import annotations

import typer

app = typer.Typer(help="The Kubernetes operator for DSDDeployment resources.", no_args_is_help=True)


@app.command("run")
def run(
    namespace: list[str] = typer.Option([], "--namespace", "-n", help="Watch only these namespaces (repeatable)."),
    health_port: int | None = typer.Option(None, help="Liveness endpoint port (/healthz); 0 = off. [8080]"),
    metrics_port: int | None = typer.Option(None, help="Prometheus /metrics port; 0 = off. [9090]"),
    log_level: str | None = typer.Option(None, help="DEBUG, INFO, WARNING or ERROR. [INFO]"),
    resync_s: float | None = typer.Option(None, help="Seconds between full (read-only unless drifted) reconciles."),
    prometheus_url: str | None = typer.Option(None, help=(
        "Default Prometheus for DSDDeployments that name none (env DSD_OPERATOR_PROMETHEUS_URL).")),
    clusters_namespace: str | None = typer.Option(None, help=(
        "Namespace of the edge clusters' kubeconfig Secrets (env DSD_OPERATOR_CLUSTERS_NAMESPACE); none = "
        "this cluster only.")),
) -> None:
    """Run the operator against the current kubeconfig (or in-cluster config). Flags override DSD_OPERATOR_* env."""
    import pydantic

    from dsd_operator.running import run as run_operator
    from dsd_operator.settings import OperatorSettings

    flags = {"namespaces": namespace or None, "health_port": health_port, "metrics_port": metrics_port,
             "log_level": log_level, "resync_s": resync_s, "prometheus_url": prometheus_url,
             "clusters_namespace": clusters_namespace}
    try:
        settings = OperatorSettings(**{k: v for k, v in flags.items() if v is not None})
    except pydantic.ValidationError as e:
        raise typer.BadParameter(str(e)) from None
    run_operator(settings)


@app.command("crds")
def crds() -> None:
    """Print the CustomResourceDefinitions (generated from the Python models)."""
    from dsd_operator.api import crds as generated

    for crd in generated.all_crds().values():
        print("---\n" + generated.render(crd), end="")
