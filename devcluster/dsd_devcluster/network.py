"""The address plan and host plumbing of real nodes: one network namespace per node, joined to the host by a veth.

This machine may send traffic only to loopback and to addresses inside namespaces that this setup creates, so:
  * a node's address lives on the netns end of its veth (never on a host interface); the host end holds a /24 and
    routes the node's pod /24 through it;
  * the cluster's gateway address (where the apiserver forwarder and CoreDNS listen) sits on a port-less host
    bridge: local to the host, reachable from every node netns through its veth;
  * blackhole routes cover the node, pod and service ranges, so a connect() to an address nobody claims fails
    at once instead of leaving the machine, and a guard chain rejects anything from a node or pod range whose
    destination is not a cluster address (the host's own addresses included).
Each cluster with real nodes gets a slot (0-15) that decides its ranges, so clusters side by side never overlap.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dsd_devcluster import paths

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"          # kwok pods take 10.244.0.0/17 (never routed); real pods 10.244.128.0/17
KWOK_POD_CIDR = "10.244.0.0/17"
NODE_CIDR = "10.245.0.0/16"
CLUSTER_DNS = "10.96.0.10"
BLACKHOLES = (SERVICE_CIDR, POD_CIDR, NODE_CIDR)
MAX_SLOTS, MAX_NODES_PER_SLOT = 16, 8
# Machine-wide settings a kubelet or a router changes; saved before the first real node, restored after the last.
HOST_SYSCTLS = ("net.ipv4.ip_forward", "vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops",
                "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes")


class NetworkError(RuntimeError):
    pass


def run(*argv: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    proc = subprocess.run(full, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(full)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@dataclass(frozen=True)
class SlotPlan:
    """The ranges of one cluster's slot."""

    slot: int

    @property
    def gateway(self) -> str:
        return f"10.245.{16 * self.slot}.1"

    @property
    def bridge(self) -> str:
        return f"dsd{self.slot}gw"

    @property
    def guard_chain(self) -> str:
        return f"DSD-GUARD-{self.slot}"

    @property
    def node_range(self) -> str:
        return f"10.245.{16 * self.slot}.0/20"

    @property
    def pod_range(self) -> str:
        return f"10.244.{128 + 8 * self.slot}.0/21"

    def node(self, index: int, cluster: str, name: str) -> NodeAddresses:
        if not 0 <= index < MAX_NODES_PER_SLOT:
            raise NetworkError(f"at most {MAX_NODES_PER_SLOT} real nodes per cluster")
        third = 16 * self.slot + 1 + index
        return NodeAddresses(
            netns=f"dsd-{cluster}-{name}"[:48], host_if=f"dsd{self.slot}n{index}",
            host_ip=f"10.245.{third}.1", node_ip=f"10.245.{third}.2",
            pod_subnet=f"10.244.{128 + 8 * self.slot + index}.0/24")


@dataclass(frozen=True)
class NodeAddresses:
    netns: str
    host_if: str
    host_ip: str
    node_ip: str
    pod_subnet: str

    @property
    def pod_gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.pod_subnet).hosts()))


def _host_state_path() -> Path:
    return paths.clusters_home() / "real-node-host.json"


def _read_host_state() -> dict:
    p = _host_state_path()
    return json.loads(p.read_text()) if p.exists() else {"users": {}, "sysctls": {}}


def _write_host_state(state: dict) -> None:
    p = _host_state_path()
    if not state["users"]:
        p.unlink(missing_ok=True)
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(state, indent=2))


def sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


def set_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value)


def acquire_slot(cluster: str) -> SlotPlan:
    """Claims a free slot for `cluster` and, for the first user, saves sysctls, adds blackholes, enables forwarding."""
    state = _read_host_state()
    if cluster in state["users"]:
        return SlotPlan(state["users"][cluster])
    taken = set(state["users"].values())
    free = [s for s in range(MAX_SLOTS) if s not in taken]
    if not free:
        raise NetworkError(f"all {MAX_SLOTS} real-node network slots are in use")
    if not state["users"]:
        state["sysctls"] = {name: sysctl(name) for name in HOST_SYSCTLS}
    state["users"][cluster] = free[0]
    _write_host_state(state)
    for cidr in BLACKHOLES:
        run("ip", "route", "replace", "blackhole", cidr)
    set_sysctl("net.ipv4.ip_forward", "1")
    plan = SlotPlan(free[0])
    _add_gateway_and_guard(plan)
    return plan


def release_slot(cluster: str) -> None:
    """Undoes acquire_slot; the last user also restores the sysctls and removes the blackholes."""
    state = _read_host_state()
    slot = state["users"].pop(cluster, None)
    if slot is None:
        return
    _remove_gateway_and_guard(SlotPlan(slot))
    if not state["users"]:
        for cidr in BLACKHOLES:
            run("ip", "route", "del", "blackhole", cidr, check=False)
        for name, value in state["sysctls"].items():
            set_sysctl(name, value)
    _write_host_state(state)


def _add_gateway_and_guard(plan: SlotPlan) -> None:
    run("ip", "link", "add", plan.bridge, "type", "bridge")
    run("ip", "addr", "add", f"{plan.gateway}/32", "dev", plan.bridge)
    run("ip", "link", "set", plan.bridge, "up")
    chain = plan.guard_chain
    run("iptables", "-N", chain)
    for allowed in (POD_CIDR, NODE_CIDR):
        run("iptables", "-A", chain, "-d", allowed, "-j", "RETURN")
    run("iptables", "-A", chain, "-j", "REJECT")
    for hook in ("INPUT", "FORWARD"):
        for source in (plan.node_range, plan.pod_range):
            run("iptables", "-I", hook, "-s", source, "-j", chain)


def _remove_gateway_and_guard(plan: SlotPlan) -> None:
    run("ip", "link", "del", plan.bridge, check=False)
    chain = plan.guard_chain
    for hook in ("INPUT", "FORWARD"):
        for source in (plan.node_range, plan.pod_range):
            while run("iptables", "-D", hook, "-s", source, "-j", chain, check=False).returncode == 0:
                pass
    run("iptables", "-F", chain, check=False)
    run("iptables", "-X", chain, check=False)


def create_node_netns(a: NodeAddresses) -> None:
    """The node's namespace, its veth to the host, and the host routes to the node and its pods."""
    run("ip", "netns", "add", a.netns)
    run("ip", "link", "add", a.host_if, "type", "veth", "peer", "name", "eth0", "netns", a.netns)
    run("ip", "addr", "add", f"{a.host_ip}/24", "dev", a.host_if)
    run("ip", "link", "set", a.host_if, "up")
    run("ip", "route", "replace", a.pod_subnet, "via", a.node_ip, "dev", a.host_if)
    run("ip", "link", "set", "lo", "up", netns=a.netns)
    run("ip", "addr", "add", f"{a.node_ip}/24", "dev", "eth0", netns=a.netns)
    run("ip", "link", "set", "eth0", "up", netns=a.netns)
    run("ip", "route", "add", "default", "via", a.host_ip, netns=a.netns)
    run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", netns=a.netns)


def delete_node_netns(a: NodeAddresses) -> None:
    """Deleting the namespace takes its veth (both ends), its bridge, routes and iptables with it."""
    run("ip", "route", "del", a.pod_subnet, check=False)
    run("ip", "link", "del", a.host_if, check=False)
    run("ip", "netns", "delete", a.netns, check=False)


def netns_exists(name: str) -> bool:
    return Path("/var/run/netns", name).exists()


def blackhole_routes() -> list[str]:
    out = run("ip", "route", "show", "type", "blackhole").stdout
    return [line.split()[1] for line in out.splitlines() if line.startswith("blackhole")]




