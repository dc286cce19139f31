"""`dsd dev ...`: the local control plane, Prometheus and tool binaries for development and tests."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Local development harness (real control plane on loopback).", no_args_is_help=True)
cluster_app = typer.Typer(help="A real etcd + kube-apiserver + controller-manager + scheduler + kwok.",
                          no_args_is_help=True)
prom_app = typer.Typer(help="A real Prometheus server on loopback.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")
app.add_typer(prom_app, name="prometheus")
console = Console(stderr=True)

NAME_OPT = typer.Option("dsd", "--name", "-n", help="Cluster name (own ports, etcd and kubeconfig).")


@app.command("tools")
def tools() -> None:
    """Build (once, cached) the control-plane binaries, kwok and helm; print their directory."""
    from dsd_devcluster.toolchain import ensure_toolchain

    print(ensure_toolchain().bin_dir)


@cluster_app.command("up")
def cluster_up(
    name: str = NAME_OPT,
    nodes: Path | None = typer.Option(None, "--nodes", help="YAML node set (default: 2 edge, 2 GPU, 1 CPU)."),
) -> None:
    """Start the cluster (building binaries on first use) and print its kubeconfig path."""
    from dsd_devcluster import start_cluster

    handle = start_cluster(name, nodes)
    console.print(f"[green]cluster {name!r} is up[/] — nodes: {', '.join(handle.nodes)}", soft_wrap=True)
    console.print("Use it with (kubectl, helm and kwok of this version are in the bin directory):", soft_wrap=True)
    console.print(f"  export KUBECONFIG={handle.kubeconfig} PATH={handle.bin_dir}:$PATH", soft_wrap=True,
                  highlight=False)
    print(handle.kubeconfig)


@cluster_app.command("down")
def cluster_down(name: str = NAME_OPT) -> None:
    """Stop the cluster's processes and delete its state."""
    from dsd_devcluster import stop_cluster

    if stop_cluster(name):
        console.print(f"cluster {name!r} stopped")
    else:
        console.print(f"no cluster named {name!r}")


@cluster_app.command("status")
def cluster_status(
    name: str | None = typer.Option(None, "--name", "-n", help="Only this cluster."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show every dev cluster: component processes, apiserver health and kubeconfig."""
    from dsd_devcluster import cluster_status as status

    rows = status(name)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no dev clusters")
        raise typer.Exit(1 if name else 0)
    table = Table("name", "healthy", "dead components", "nodes", "apiserver", "kubeconfig")
    for r in rows:
        dead = ", ".join(c for c, ok in r["components"].items() if not ok) or "-"
        table.add_row(r["name"], "yes" if r["healthy"] else "NO", dead, str(len(r["nodes"])), r["apiserver"],
                      r["kubeconfig"])
    Console(width=200).print(table)
    if name and not rows[0]["healthy"]:
        raise typer.Exit(1)


@prom_app.command("up")
def prometheus_up(
    name: str = NAME_OPT,
    target: list[str] = typer.Option([], "--target", "-t", help="job=host:port to scrape (loopback only)."),
    port: int = typer.Option(9090, help="Listen port on 127.0.0.1 (0 = any free port)."),
) -> None:
    """Start Prometheus with a generated scrape config; print its URL."""
    from dsd_devcluster.prometheus import start_prometheus

    targets: dict[str, list[str]] = {}
    for t in target:
        job, sep, host = t.partition("=")
        if not sep:
            raise typer.BadParameter(f"--target {t!r}: expected job=host:port")
        targets.setdefault(job, []).append(host)
    handle = start_prometheus(name, targets, port)
    print(handle.url)


@prom_app.command("down")
def prometheus_down(name: str = NAME_OPT) -> None:
    """Stop Prometheus `name` and delete its data."""
    from dsd_devcluster.prometheus import stop_prometheus

    console.print("stopped" if stop_prometheus(name) else f"no prometheus named {name!r}")
