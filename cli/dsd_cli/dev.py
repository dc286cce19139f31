"""`dsd dev ...`: the local control plane, Prometheus and tool binaries for development and tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Local development harness (real control plane on loopback).", no_args_is_help=True)
cluster_app = typer.Typer(help="A real etcd + kube-apiserver + controller-manager + scheduler + kwok.",
                          no_args_is_help=True)
prom_app = typer.Typer(help="A real Prometheus server on loopback.", no_args_is_help=True)
node_app = typer.Typer(help="Fail and recover real nodes on demand.", no_args_is_help=True)
cluster_app.add_typer(node_app, name="node")
app.add_typer(cluster_app, name="cluster")
app.add_typer(prom_app, name="prometheus")
console = Console(stderr=True)

if TYPE_CHECKING:
    from dsd_devcluster import ClusterHandle

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
    real_nodes: str = typer.Option("", "--real-nodes", help=(
        "GROUP=COUNT[,...]: these node groups get real kubelet nodes (containerd, runc, CNI) instead of kwok "
        "nodes, e.g. edge=1,gpu=1. Needs root; builds the runtime image on first use.")),
) -> None:
    """Start the cluster (building binaries on first use); print KUBECONFIG=... and PROMETHEUS_URL=..."""
    from dsd_devcluster import start_cluster
    from dsd_devcluster.nodes import NodeSetError, parse_real_nodes

    try:
        handle = start_cluster(name, nodes, parse_real_nodes(real_nodes))
    except NodeSetError as e:
        raise typer.BadParameter(str(e)) from None
    real = [d["name"] for d in handle.real_nodes]
    console.print(f"[green]cluster {name!r} is up[/] — nodes: {', '.join(handle.nodes)}"
                  + (f" (real: {', '.join(real)})" if real else ""), soft_wrap=True)
    console.print("Use it with (kubectl, helm and kwok of this version are in the bin directory):", soft_wrap=True)
    console.print(f"  export KUBECONFIG={handle.kubeconfig} PATH={handle.bin_dir}:$PATH", soft_wrap=True,
                  highlight=False)
    print(f"KUBECONFIG={handle.kubeconfig}")
    print(f"PROMETHEUS_URL={handle.prometheus_url}")


@node_app.command("stop")
def node_stop(node: str = typer.Argument(..., help="A real node's name."), name: str = NAME_OPT) -> None:
    """Stop a real node's kubelet (its containers keep running): the node turns NotReady."""
    from dsd_devcluster.cluster import stop_kubelet

    stop_kubelet(_handle(name), node)
    console.print(f"kubelet of {node} stopped")


@node_app.command("start")
def node_start(node: str = typer.Argument(..., help="A real node's name."), name: str = NAME_OPT) -> None:
    """Start a real node's kubelet again and wait until the node is Ready."""
    from dsd_devcluster.cluster import start_kubelet

    start_kubelet(_handle(name), node)
    console.print(f"{node} is Ready")


def _handle(name: str) -> ClusterHandle:
    from dsd_devcluster import ClusterHandle

    handle = ClusterHandle.load(name)
    if handle is None:
        raise typer.BadParameter(f"no cluster named {name!r}")
    return handle


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
    table = Table("name", "healthy", "dead components", "nodes", "real nodes", "apiserver", "prometheus",
                  "kubeconfig")
    for r in rows:
        dead = ", ".join(c for c, ok in r["components"].items() if not ok) or "-"
        real = ", ".join(f"{n} {v['ip']}" + ("" if v["kubelet"] else " (kubelet stopped)")
                         for n, v in r["real_nodes"].items()) or "-"
        table.add_row(r["name"], "yes" if r["healthy"] else "NO", dead, str(len(r["nodes"])), real,
                      r["apiserver"], r["prometheus"] or "-", r["kubeconfig"])
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
