"""Bringing one named dev cluster up and down, and reporting its state.

Each cluster has its own directory (state.json, pki/, etcd data, logs/, kubeconfig) and its own ports, so
several (`edge`, `cloud`) run side by side. `start_cluster` is idempotent: a running, healthy cluster is
returned as is (a warm start costs a health check).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsd_devcluster import kube, paths, processes
from dsd_devcluster.components import Component, Ports, build_components
from dsd_devcluster.nodes import load_node_set, node_manifests
from dsd_devcluster.pki import create_pki, write_kubeconfig
from dsd_devcluster.toolchain import ensure_toolchain

_READY_TIMEOUT_S = {"etcd": 60, "kube-apiserver": 180, "kube-controller-manager": 90,
                    "kube-scheduler": 90, "kwok": 60}


@dataclass
class ClusterHandle:
    name: str
    directory: Path
    ports: dict[str, int]
    pids: dict[str, int]
    bin_dir: str
    nodes: list[str] = field(default_factory=list)
    started_at: float = 0.0

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def logs_dir(self) -> Path:
        return self.directory / "logs"

    def log_path(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def log_tails(self, lines: int = 20) -> str:
        return "\n".join(
            f"----- {c} ({self.log_path(c)}) -----\n{processes.log_tail(self.log_path(c), lines)}"
            for c in self.pids
        )

    def save(self) -> None:
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        (self.directory / "state.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, name: str) -> ClusterHandle | None:
        state = paths.cluster_dir(name) / "state.json"
        if not state.exists():
            return None
        data: dict[str, Any] = json.loads(state.read_text())
        data["directory"] = Path(data["directory"])
        return cls(**data)

    def alive_components(self) -> dict[str, bool]:
        return {c: processes.is_alive(pid) for c, pid in self.pids.items()}

    def healthy(self) -> bool:
        alive = self.alive_components()
        return bool(alive) and all(alive.values()) and processes.http_ok(
            f"https://127.0.0.1:{self.ports['apiserver']}/readyz", ca_file=self.directory / "pki" / "ca.crt"
        )


def _say(msg: str) -> None:
    print(f"[dsd dev cluster] {msg}", flush=True)


def _start_component(handle: ClusterHandle, comp: Component, ca_file: Path) -> None:
    log = handle.log_path(comp.name)
    pid = processes.start_detached(comp.argv, log, env=comp.env, cwd=handle.directory)
    handle.pids[comp.name] = pid
    handle.save()
    processes.wait_until(
        lambda: processes.http_ok(comp.health_url, ca_file=ca_file, insecure=comp.insecure_probe),
        _READY_TIMEOUT_S[comp.name], comp.name, pid=pid, log_path=log,
    )


def start_cluster(name: str = "dsd", nodes_file: Path | None = None) -> ClusterHandle:
    """Starts (or finds running) cluster `name` with its simulated nodes Ready."""
    existing = ClusterHandle.load(name)
    if existing is not None:
        if existing.healthy():
            _say(f"cluster {name!r} already running")
            return existing
        _say(f"cluster {name!r} has stale state; restarting it cleanly")
        stop_cluster(name)
    node_set = load_node_set(nodes_file)  # validate before starting anything
    toolchain = ensure_toolchain()
    t0 = time.monotonic()
    directory = paths.cluster_dir(name)
    directory.mkdir(parents=True, exist_ok=True)
    pki = create_pki(directory / "pki")
    ports = Ports.allocate()
    handle = ClusterHandle(name, directory, ports.as_dict(), {}, str(toolchain.bin_dir), started_at=time.time())
    write_kubeconfig(handle.kubeconfig, name, ports.apiserver, pki)
    try:
        for comp in build_components(toolchain, directory, ports, pki, handle.kubeconfig):
            _say(f"starting {comp.name}")
            _start_component(handle, comp, pki.ca_crt)
        client = kube.Client(handle.kubeconfig)
        _say("waiting for the default ServiceAccount (controller-manager at work)")
        client.wait_for_default_service_account(timeout_s=90)
        manifests = node_manifests(node_set)
        _say(f"creating {len(manifests)} kwok nodes")
        client.create_nodes(manifests)
        handle.nodes = [m["metadata"]["name"] for m in manifests]
        client.wait_nodes_ready(handle.nodes, timeout_s=90)
    except Exception:
        _say("start failed; component log tails follow")
        print(handle.log_tails(), flush=True)
        stop_cluster(name)
        raise
    handle.save()
    _say(f"cluster {name!r} ready in {time.monotonic() - t0:.1f}s")
    return handle


def stop_cluster(name: str = "dsd", keep_data: bool = False) -> bool:
    """Stops every component (reverse order) and removes the cluster's state. False if none existed."""
    handle = ClusterHandle.load(name)
    directory = paths.cluster_dir(name)
    if handle is None and not directory.exists():
        return False
    if handle is not None:
        for comp in reversed(list(handle.pids)):
            processes.stop(handle.pids[comp])
    if not keep_data:
        shutil.rmtree(directory, ignore_errors=True)
    return True


def cluster_status(name: str | None = None) -> list[dict[str, Any]]:
    """One row per known cluster (or just `name`): component liveness, apiserver health, kubeconfig."""
    home = paths.clusters_home()
    names = [name] if name else sorted(p.name for p in home.iterdir() if (p / "state.json").exists()) \
        if home.exists() else []
    rows = []
    for n in names:
        handle = ClusterHandle.load(n)
        if handle is None:
            continue
        rows.append({
            "name": n,
            "healthy": handle.healthy(),
            "components": handle.alive_components(),
            "apiserver": f"https://127.0.0.1:{handle.ports['apiserver']}",
            "kubeconfig": str(handle.kubeconfig),
            "nodes": handle.nodes,
        })
    return rows
