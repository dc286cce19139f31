"""Real kubelet nodes: per node a network namespace, its own containerd (+ runc, CNI bridge) and kubelet and
kube-proxy, all started inside the namespace with nsenter (it execs, so each recorded pid is the daemon's own).

Everything a node creates lives under its directory (containerd root and state, pod netns mounts, kubelet root,
CNI state), in its cgroup root, or in its network namespace, so `teardown` can remove it completely. Facts this
relies on (runc cannot lower oom_score_adj here, cgroup v1, no image pulls) are in docs/dev-cluster.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dsd_devcluster import images, network, processes
from dsd_devcluster.network import NodeAddresses
from dsd_devcluster.pki import Pki, issue_client_cert, write_kubeconfig

REAL_NODE_LABEL = "dsd.dev/real-node"
Save = Callable[[], None]  # writes a node's changed pids back into the cluster's state file


@dataclass
class RealNode:
    """One real node's identity, addresses and daemon pids (persisted in the cluster's state file)."""

    name: str
    directory: str
    addresses: dict[str, str]
    labels: dict[str, str]
    taints: list[dict[str, str]]
    extended: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def addr(self) -> NodeAddresses:
        return NodeAddresses(**self.addresses)

    @property
    def dir(self) -> Path:
        return Path(self.directory)

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        return f"dsd-{self.addr.netns.removeprefix('dsd-')}"

    def log(self, daemon: str) -> Path:
        return self.dir / "logs" / f"{daemon}.log"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _cgroup_hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers, name=systemd, a v2 `unified` if mounted)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        sep = parts.index("-")
        if parts[sep + 1] in ("cgroup", "cgroup2"):
            out.append(Path(parts[4]))
    return out


def _make_cgroup_root(name: str) -> None:
    for hierarchy in _cgroup_hierarchies():
        d = hierarchy / name
        d.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset admits tasks only once both are set
            if (d / knob).exists() and not (d / knob).read_text().strip():
                (d / knob).write_text((hierarchy / knob).read_text())


def _cgroup_dirs(name: str) -> list[Path]:
    """Every cgroup under the node's roots, deepest first. os.walk, since the kubelet removes cgroups meanwhile."""
    dirs = [Path(d) for hierarchy in _cgroup_hierarchies() for d, _, _ in os.walk(hierarchy / name)]
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for d in _cgroup_dirs(name):
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
    return pids


def _remove_cgroup_root(name: str) -> None:
    for d in _cgroup_dirs(name):
        with contextlib.suppress(OSError):
            d.rmdir()


def _unmount_all(directory: Path) -> None:
    """Unmounts everything under `directory`, deepest first (lazily where a mount is still busy)."""
    for mount_point in _mounts_under(directory):
        if subprocess.run(["umount", mount_point], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point == prefix or mount_point.startswith(prefix + "/"):
            found.append(mount_point)
    return sorted(set(found), key=len, reverse=True)


def _pids_with_arg(needle: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in proc.joinpath("cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
    return found


def _write_containerd_config(node: RealNode, pod_subnet: str | None = None) -> Path:
    d = node.dir / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    config = f"""version = 2
root = "{d / 'root'}"
state = "{d / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "{node.containerd_socket}"
[ttrpc]
  address = "{node.containerd_socket}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"
[{cri}]
  sandbox_image = "{images.PAUSE_IMAGE}"
  # runc may not lower oom_score_adj here (no CAP_SYS_RESOURCE): without this every sandbox fails to start.
  restrict_oom_score_adj = true
  # Pod network namespaces under the state dir (not /var/run/netns): teardown finds and unmounts them.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        Root = "{d / 'runc'}"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{node.dir / 'cni' / 'net.d'}"
"""
    path = d / "config.toml"
    path.write_text(config)
    cni = {"cniVersion": "1.0.0", "name": "dsd", "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_subnet or node.addr.pod_subnet}]],
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(node.dir / "cni" / "ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ]}
    (node.dir / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    (node.dir / "cni" / "net.d" / "10-dsd.conflist").write_text(json.dumps(cni, indent=2))
    return path


def _write_kubelet_config(node: RealNode, pki: Pki) -> Path:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node.addr.node_ip, "port": 10250, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
        "containerRuntimeEndpoint": f"unix://{node.containerd_socket}",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki.ca_crt)}},
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [network.CLUSTER_DNS], "clusterDomain": "cluster.local",
        "resolvConf": "",  # nothing upstream: the machine may not send traffic anywhere but loopback and pods
        "registerWithTaints": node.taints,
        # cgroup v1 host: kubelet 1.36 refuses v1 unless told; a root per node keeps nodes and teardown apart.
        "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{node.cgroup_root}",
        "failSwapOn": False, "oomScoreAdj": 0, "maxPods": 50, "podPidsLimit": -1,
        # Images cannot be pulled again here: never garbage-collect them, and never evict for disk.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        # Per node: kubelets sharing /var/log/pods delete each other's pod logs as orphans.
        "podLogsDir": str(node.dir / "pod-logs"),
        "nodeStatusUpdateFrequency": "5s", "shutdownGracePeriod": "0s", "shutdownGracePeriodCriticalPods": "0s",
        "serializeImagePulls": False,
    }
    path = node.dir / "kubelet-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _write_kube_proxy_config(node: RealNode, kubeconfig: Path) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)}, "hostnameOverride": node.name,
        "bindAddress": node.addr.node_ip, "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249", "mode": "iptables", "clusterCIDR": network.POD_CIDR,
        # Service traffic is masqueraded, so replies return through the node even for same-bridge endpoints.
        "iptables": {"masqueradeAll": True},
        # 0 = leave machine-wide conntrack limits alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "nodePortAddresses": [f"{node.addr.node_ip}/32"],
    }
    path = node.dir / "kube-proxy-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def image_store(layouts: dict[str, Path], cache: Path) -> Path:
    """A containerd root with `layouts` imported and unpacked once, cached by their digests.

    Importing the runtime image costs minutes per node (3.5 GB to decompress, 6 GB to unpack); seeding a node's
    root from this store with hard links costs a second. Layers are never written after unpacking (a container
    writes to its own upper directory), so sharing their files between nodes is safe; the bolt databases, which
    are written, are copied.
    """
    key = hashlib.sha256(json.dumps({n: (p / "index.json").read_text() for n, p in sorted(layouts.items())}
                                    ).encode()).hexdigest()[:16]
    store = cache / "node-image-store" / key
    if (store / "done").exists():
        return store
    # Start from the previous store: layers it already holds (the 6 GB deps layer) are neither written nor unpacked.
    previous = [d for d in store.parent.glob("*") if (d / "done").exists()] if store.parent.exists() else []
    shutil.rmtree(store, ignore_errors=True)
    template = RealNode(name="image-store", directory=str(store), addresses={}, labels={}, taints=[], extended={})
    for sub in ("logs", "containerd"):
        (store / sub).mkdir(parents=True)
    if previous:
        _copy_root(previous[0] / "containerd" / "root", store / "containerd" / "root")
    config = _write_containerd_config(template, pod_subnet="10.244.255.0/24")
    pid = processes.start_detached(["containerd", "--config", str(config)], template.log("containerd"), cwd=store)
    try:
        processes.wait_until(template.containerd_socket.exists, 30, "containerd (image store)", pid=pid,
                             log_path=template.log("containerd"))
        for name, layout in layouts.items():
            t0 = time.monotonic()
            images.import_image(template.containerd_socket, layout, name)
            print(f"[dsd dev cluster] node image store: imported {name} in {time.monotonic() - t0:.0f}s", flush=True)
    finally:
        processes.stop(pid)
        _unmount_all(store)
    (store / "done").touch()
    for old in previous:
        shutil.rmtree(old, ignore_errors=True)
    return store


def _copy_root(source: Path, dest: Path) -> None:
    """A containerd root copied as hard links, except the bolt databases (written by each containerd)."""
    subprocess.run(["cp", "-al", str(source), str(dest)], check=True)
    for db in dest.rglob("*.db"):
        copy = db.with_name(db.name + ".copy")
        shutil.copy2(db, copy)
        copy.replace(db)


def _seed_from_store(node: RealNode, store: Path) -> None:
    _copy_root(store / "containerd" / "root", node.dir / "containerd" / "root")


def _nsenter(node: RealNode, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net=/var/run/netns/{node.addr.netns}", "--", *argv]


def _start(node: RealNode, daemon: str, argv: list[str], save: Save) -> int:
    pid = processes.start_detached(_nsenter(node, argv), node.log(daemon), cwd=node.dir)
    node.pids[daemon] = pid
    save()
    return pid


def create(node: RealNode, bin_dir: Path, pki: Pki, cluster: str, api_port: int, gateway: str,
           store: Path, save: Save) -> None:
    """Brings the node's namespace, containerd (its images seeded from `store`), kubelet and kube-proxy up."""
    for sub in ("containerd", "kubelet", "logs", "cni"):
        (node.dir / sub).mkdir(parents=True, exist_ok=True)
    network.create_node_netns(node.addr)
    _make_cgroup_root(node.cgroup_root)
    _seed_from_store(node, store)
    config = _write_containerd_config(node)
    pid = _start(node, "containerd", ["containerd", "--config", str(config)], save)
    processes.wait_until(node.containerd_socket.exists, 30, f"containerd of {node.name}", pid=pid,
                         log_path=node.log("containerd"))
    node_cert = issue_client_cert(pki, f"system:node:{node.name}", "system:nodes", f"node-{node.name}")
    kubelet_kc = node.dir / "kubelet.kubeconfig"
    write_kubeconfig(kubelet_kc, cluster, api_port, pki, host=gateway, cert=node_cert)
    proxy_kc = node.dir / "kube-proxy.kubeconfig"
    write_kubeconfig(proxy_kc, cluster, api_port, pki, host=gateway,
                     cert=issue_client_cert(pki, "system:kube-proxy", None, "kube-proxy"))
    kubelet_argv = [str(bin_dir / "kubelet"), f"--config={_write_kubelet_config(node, pki)}",
                    f"--kubeconfig={kubelet_kc}", f"--root-dir={node.dir / 'kubelet'}",
                    f"--cert-dir={node.dir / 'kubelet' / 'pki'}", f"--hostname-override={node.name}",
                    f"--node-ip={node.addr.node_ip}", "--v=1"]
    (node.dir / "kubelet.argv").write_text(json.dumps(kubelet_argv))
    _start(node, "kubelet", kubelet_argv, save)
    _start(node, "kube-proxy", [str(bin_dir / "kube-proxy"), f"--config={_write_kube_proxy_config(node, proxy_kc)}",
                                "--v=1"], save)


def stop_kubelet(node: RealNode, save: Save) -> None:
    """Stops the kubelet only (containers keep running, as when a node's agent dies): the node goes NotReady."""
    processes.stop(node.pids.pop("kubelet", 0))
    save()


def start_kubelet(node: RealNode, save: Save) -> None:
    if processes.is_alive(node.pids.get("kubelet", -1)):
        return
    _start(node, "kubelet", json.loads((node.dir / "kubelet.argv").read_text()), save)


def teardown(node: RealNode) -> None:
    """Removes everything the node created; safe to call on a half-created node."""
    for daemon in ("kubelet", "kube-proxy"):
        processes.stop(node.pids.get(daemon, -1), grace_s=5)
    # Containers (in the node's cgroups) and their shims (named by the node's containerd socket) outlive
    # containerd: kill them first, then containerd.
    for pid in _cgroup_pids(node.cgroup_root) | set(_pids_with_arg(str(node.containerd_socket))):
        if pid != node.pids.get("containerd"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    processes.stop(node.pids.get("containerd", -1), grace_s=5)
    deadline = time.monotonic() + 10
    while _cgroup_pids(node.cgroup_root) and time.monotonic() < deadline:
        time.sleep(0.1)
    _unmount_all(node.dir)
    _remove_cgroup_root(node.cgroup_root)
    for link in _container_log_links(node):
        link.unlink(missing_ok=True)
    network.delete_node_netns(node.addr)
    shutil.rmtree(node.dir, ignore_errors=True)


def _container_log_links(node: RealNode) -> list[Path]:
    """The kubelet's /var/log/containers symlinks into this node's pod logs."""
    links = Path("/var/log/containers")
    prefix = str(node.dir / "pod-logs")
    return [p for p in links.glob("*.log") if p.is_symlink() and os.readlink(p).startswith(prefix)] \
        if links.exists() else []


def leftovers(node: RealNode) -> list[str]:
    """What of the node still exists (empty after a clean teardown): the teardown test asserts on this."""
    left = [f"process {daemon} {pid}" for daemon, pid in node.pids.items() if processes.is_alive(pid)]
    left += [f"process {pid} (container or shim)" for pid in _pids_with_arg(str(node.containerd_socket))]
    left += [f"mount {m}" for m in _mounts_under(node.dir)] if node.dir.exists() else []
    left += [f"cgroup {h / node.cgroup_root}" for h in _cgroup_hierarchies() if (h / node.cgroup_root).exists()]
    left += [f"netns {node.addr.netns}"] if network.netns_exists(node.addr.netns) else []
    left += [f"link {node.addr.host_if}"] if Path("/sys/class/net", node.addr.host_if).exists() else []
    left += [f"log link {link}" for link in _container_log_links(node)]
    left += [f"directory {node.dir}"] if node.dir.exists() else []
    return left
