"""Bringing one named dev cluster up and down, and reporting its state.

Each cluster has its own directory (state.json, pki/, etcd data, logs/, kubeconfig) and its own ports, so
several (`edge`, `cloud`) run side by side. `start_cluster` is idempotent: a running, healthy cluster is
returned as is (a warm start costs a health check).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dsd_devcluster import cluster_services, images, kube, network, paths, processes, realnodes
from dsd_devcluster.components import Component, Ports, RealNodeAccess, build_components
from dsd_devcluster.nodes import NodeSet, load_node_set, node_manifests, real_node_specs, with_real_nodes
from dsd_devcluster.pki import Pki, create_pki, issue_client_cert, write_kubeconfig
from dsd_devcluster.prometheus import start_cluster_prometheus, stop_prometheus
from dsd_devcluster.toolchain import Toolchain, ensure_toolchain

_READY_TIMEOUT_S = {"etcd": 60, "kube-apiserver": 180, "kube-controller-manager": 90,
                    "kube-scheduler": 90, "kwok": 60, "apiserver-forwarder": 30, "coredns": 60}
_REAL_NODE_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "socat", "iptables", "ip",
                    "umoci", "debootstrap")
_REAL_NODE_READY_S = 180


@dataclass
class ClusterHandle:
    name: str
    directory: Path
    ports: dict[str, int]
    pids: dict[str, int]
    bin_dir: str
    nodes: list[str] = field(default_factory=list)
    started_at: float = 0.0
    network_slot: int | None = None
    real_nodes: list[dict[str, Any]] = field(default_factory=list)
    prometheus_url: str = ""
    image_store: str = ""  # the node image store (keyed by the images' digests) the real nodes were seeded from

    @property
    def prometheus_name(self) -> str:
        return f"cluster-{self.name}"

    def real_node_list(self) -> list[realnodes.RealNode]:
        return [realnodes.RealNode(**data) for data in self.real_nodes]

    def real_node(self, name: str) -> realnodes.RealNode:
        for node in self.real_node_list():
            if node.name == name:
                return node
        raise KeyError(f"{name!r} is not a real node of cluster {self.name!r}")

    def saver(self, node: realnodes.RealNode) -> realnodes.Save:
        """A callback that writes `node` (its current pids) into the state file, adding it the first time."""
        def save() -> None:
            by_name = {d["name"]: d for d in self.real_nodes}  # keeps the nodes' order (`up` compares it)
            by_name[node.name] = node.to_json()
            self.real_nodes = list(by_name.values())
            self.save()
        return save

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


def _check_real_node_host() -> None:
    missing = [t for t in _REAL_NODE_TOOLS if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"real nodes need {missing} on PATH: run `bash scripts/setup.sh` (Debian packages)")
    if os.geteuid() != 0:
        raise RuntimeError("real nodes need root (network namespaces, cgroups, mounts)")


def _node_image_store(toolchain: Toolchain) -> Path:
    """Images built and unpacked (or found cached) before anything starts: a cold build takes minutes."""
    layouts = {images.PAUSE_IMAGE: images.pause_image(toolchain.path("pause")),
               images.RUNTIME_IMAGE: images.runtime_image()}
    return realnodes.image_store(layouts, paths.tools_cache())


def _start_real_nodes(handle: ClusterHandle, node_set: NodeSet, toolchain: Toolchain, pki: Pki,
                      plan: network.SlotPlan, store: Path) -> None:
    client = kube.Client(handle.kubeconfig)
    for obj in cluster_services.kube_dns_objects(plan.gateway):
        client.create_or_replace(obj)
    names = []
    for index, spec in enumerate(real_node_specs(node_set)):
        addresses = plan.node(index, handle.name, spec["name"])
        node = realnodes.RealNode(name=spec["name"], directory=str(handle.directory / "nodes" / spec["name"]),
                                  addresses=asdict(addresses), labels=spec["labels"], taints=spec["taints"],
                                  extended=spec["extended"])
        _say(f"starting real node {node.name} at {addresses.node_ip} (netns {addresses.netns})")
        realnodes.create(node, toolchain.bin_dir, pki, handle.name, handle.ports["apiserver"], plan.gateway,
                         store, handle.saver(node))
        names.append(node.name)
    handle.nodes += names
    handle.save()
    for name in names:
        wait_real_node_ready(handle, name, _REAL_NODE_READY_S)


def wait_real_node_ready(handle: ClusterHandle, name: str, timeout_s: float) -> None:
    """Waits for the kubelet to register, applies the group's labels and extended resources, waits for Ready."""
    client = kube.Client(handle.kubeconfig)
    node = handle.real_node(name)
    processes.wait_until(lambda: client.node_exists(name), timeout_s, f"real node {name} registering",
                         pid=node.pids.get("kubelet"), log_path=node.log("kubelet"))
    client.label_node(name, {**node.labels, realnodes.REAL_NODE_LABEL: "true"})
    client.advertise_extended_resources(name, node.extended)
    processes.wait_until(lambda: client.nodes_ready([name]), timeout_s, f"real node {name} Ready",
                         pid=node.pids.get("kubelet"), log_path=node.log("kubelet"))


def stop_kubelet(handle: ClusterHandle, name: str) -> None:
    """Fails a real node on demand: its kubelet stops (containers keep running), so it turns NotReady."""
    node = handle.real_node(name)
    realnodes.stop_kubelet(node, handle.saver(node))


def start_kubelet(handle: ClusterHandle, name: str, timeout_s: float = _REAL_NODE_READY_S) -> None:
    """Recovers a node failed by stop_kubelet and waits until it is Ready again."""
    node = handle.real_node(name)
    realnodes.start_kubelet(node, handle.saver(node))
    wait_real_node_ready(handle, name, timeout_s)


def start_cluster(name: str = "dsd", nodes_file: Path | None = None,
                  real_nodes: dict[str, int] | None = None) -> ClusterHandle:
    """Starts (or finds running) cluster `name` with its nodes Ready, and a Prometheus that scrapes its pods.

    `real_nodes` ({"edge": 1, "gpu": 1}) turns those node groups into real kubelet nodes.
    """
    existing = ClusterHandle.load(name)
    node_set = load_node_set(nodes_file)  # validate before starting anything
    if real_nodes:
        node_set = with_real_nodes(node_set, real_nodes)
    want_real = [s["name"] for s in real_node_specs(node_set)]
    toolchain = ensure_toolchain()
    store = Path()
    if want_real:
        _check_real_node_host()
        store = _node_image_store(toolchain)  # built (or found cached) first
    if existing is not None:
        have_real = [d["name"] for d in existing.real_nodes]
        # Real nodes run the runtime image imported when they started: a changed image means a fresh cluster.
        same_images = not want_real or existing.image_store == str(store)
        if existing.healthy() and have_real == want_real and same_images:
            _say(f"cluster {name!r} already running")
            return existing
        why = "the runtime image changed" if existing.healthy() and have_real == want_real else \
            "it is stale or has other real nodes"
        _say(f"cluster {name!r}: {why}; restarting it cleanly")
        stop_cluster(name)
    t0 = time.monotonic()
    directory = paths.cluster_dir(name)
    directory.mkdir(parents=True, exist_ok=True)
    ports = Ports.allocate()
    handle = ClusterHandle(name, directory, ports.as_dict(), {}, str(toolchain.bin_dir), started_at=time.time(),
                           image_store=str(store) if want_real else "")
    handle.save()
    try:
        plan = network.acquire_slot(name) if want_real else None
        handle.network_slot = plan.slot if plan else None
        handle.save()
        pki = create_pki(directory / "pki", extra_ips=(plan.gateway,) if plan else ())
        access = None
        if plan:
            crt, key = issue_client_cert(pki, "kube-apiserver-kubelet-client", "system:masters",
                                         "apiserver-kubelet-client")
            access = RealNodeAccess(plan.gateway, crt, key)
        write_kubeconfig(handle.kubeconfig, name, ports.apiserver, pki)
        components = build_components(toolchain, directory, ports, pki, handle.kubeconfig, access)
        if plan:
            components += [
                cluster_services.apiserver_forwarder(plan.gateway, ports.apiserver),
                cluster_services.coredns(toolchain.path("coredns"), directory, plan.gateway, handle.kubeconfig,
                                         processes.free_port()),
            ]
        for comp in components:
            _say(f"starting {comp.name}")
            _start_component(handle, comp, pki.ca_crt)
        client = kube.Client(handle.kubeconfig)
        _say("waiting for the default ServiceAccount (controller-manager at work)")
        client.wait_for_default_service_account(timeout_s=90)
        manifests = node_manifests(node_set)
        _say(f"creating {len(manifests)} kwok nodes")
        client.create_nodes(manifests)
        handle.nodes = [m["metadata"]["name"] for m in manifests]
        handle.save()
        client.wait_nodes_ready(handle.nodes, timeout_s=90)
        if plan:
            _start_real_nodes(handle, node_set, toolchain, pki, plan, store)
        prometheus = start_cluster_prometheus(handle.prometheus_name, toolchain.path("prometheus"), handle.kubeconfig,
                                              [d["name"] for d in handle.real_nodes],
                                              host=plan.gateway if plan else "127.0.0.1")
        handle.prometheus_url = prometheus.url
    except Exception:
        _say("start failed; component log tails follow")
        print(handle.log_tails(), flush=True)
        for node in handle.real_node_list():
            for daemon in node.pids:
                print(f"----- {node.name}/{daemon} -----\n{processes.log_tail(node.log(daemon), 20)}", flush=True)
        stop_cluster(name)
        raise
    handle.save()
    _say(f"cluster {name!r} ready in {time.monotonic() - t0:.1f}s")
    return handle


def stop_cluster(name: str = "dsd", keep_data: bool = False) -> bool:
    """Stops every component (reverse order), tears real nodes down and removes the cluster's state.

    False if no such cluster existed.
    """
    handle = ClusterHandle.load(name)
    directory = paths.cluster_dir(name)
    if handle is None and not directory.exists():
        return False
    if handle is not None:
        stop_prometheus(handle.prometheus_name)
        for node in handle.real_node_list():
            realnodes.teardown(node)
        for comp in reversed(list(handle.pids)):
            processes.stop(handle.pids[comp])
        if handle.network_slot is not None:
            network.release_slot(name)
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
            "real_nodes": {d["name"]: {"ip": d["addresses"]["node_ip"], "netns": d["addresses"]["netns"],
                                       "kubelet": processes.is_alive(d["pids"].get("kubelet", 0))}
                           for d in handle.real_nodes},
            "prometheus": handle.prometheus_url,
        })
    return rows
