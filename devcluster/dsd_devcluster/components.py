"""Command lines and readiness probes of the control-plane components, all bound to 127.0.0.1."""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from dsd_devcluster.network import KWOK_POD_CIDR, SERVICE_CIDR
from dsd_devcluster.pki import Pki
from dsd_devcluster.toolchain import Toolchain

# Order matters: each component needs the ones before it.
COMPONENT_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

# kwok's stages stand in for the kubelet: initialise and heartbeat nodes, run and delete pods.
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


@dataclass(frozen=True)
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def allocate(cls) -> Ports:
        """Free loopback ports, held open together so that no two are the same."""
        sockets = []
        try:
            for _ in range(6):
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                sockets.append(s)
            return cls(*(s.getsockname()[1] for s in sockets))
        finally:
            for s in sockets:
                s.close()

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Component:
    name: str
    argv: list[str]
    health_url: str
    env: dict[str, str]
    # Health endpoints of kcm/scheduler are served with self-signed certs: probe without verification.
    insecure_probe: bool = False


@dataclass(frozen=True)
class RealNodeAccess:
    """How the apiserver reaches real nodes, and how they reach it (see network.py)."""

    gateway: str
    kubelet_client_crt: Path
    kubelet_client_key: Path

    def apiserver_flags(self) -> list[str]:
        return [
            # In-cluster clients reach `kubernetes.default` at the gateway, where a forwarder listens.
            f"--advertise-address={self.gateway}", "--endpoint-reconciler-type=lease",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={self.kubelet_client_crt}",
            f"--kubelet-client-key={self.kubelet_client_key}",
        ]


def build_components(tc: Toolchain, run_dir: Path, ports: Ports, pki: Pki, kubeconfig: Path,
                     real_nodes: RealNodeAccess | None = None) -> list[Component]:
    kc = str(kubeconfig)
    etcd = Component(
        "etcd",
        [
            str(tc.path("etcd")), "--name=node0", f"--data-dir={run_dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{ports.etcd}",
            f"--advertise-client-urls=http://127.0.0.1:{ports.etcd}",
            f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-cluster=node0=http://127.0.0.1:{ports.etcd_peer}",
            "--listen-metrics-urls=", "--unsafe-no-fsync=true", "--auto-compaction-retention=1",
            "--quota-backend-bytes=2147483648", "--log-level=warn",
        ],
        f"http://127.0.0.1:{ports.etcd}/readyz",
        {},
    )
    apiserver = Component(
        "kube-apiserver",
        [
            str(tc.path("kube-apiserver")), f"--etcd-servers=http://127.0.0.1:{ports.etcd}",
            "--bind-address=127.0.0.1", f"--secure-port={ports.apiserver}",
            f"--cert-dir={run_dir / 'apiserver'}",
            f"--tls-cert-file={pki.apiserver_crt}", f"--tls-private-key-file={pki.apiserver_key}",
            f"--client-ca-file={pki.ca_crt}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC", "--allow-privileged=true", "--profiling=false",
            # Without real nodes nothing can reach the apiserver but loopback: no endpoints to reconcile.
            *(real_nodes.apiserver_flags() if real_nodes else
              ["--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"]),
        ],
        f"https://127.0.0.1:{ports.apiserver}/readyz",
        {},
    )
    controller_manager = Component(
        "kube-controller-manager",
        [
            str(tc.path("kube-controller-manager")), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={ports.controller_manager}",
            f"--cert-dir={run_dir / 'kcm'}",
            "--controllers=*", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.ca_crt}",
            f"--cluster-signing-cert-file={pki.ca_crt}", f"--cluster-signing-key-file={pki.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Fast feedback in a dev cluster: evict from a lost (kwok-less) node after 30 s, not 5 min.
            "--node-monitor-grace-period=40s",
        ],
        f"https://127.0.0.1:{ports.controller_manager}/healthz",
        {},
        insecure_probe=True,
    )
    scheduler_cfg = run_dir / "scheduler.yaml"
    scheduler_cfg.write_text(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
        f"clientConnection: {{kubeconfig: {kc}}}\nleaderElection: {{leaderElect: false}}\n"
    )
    scheduler = Component(
        "kube-scheduler",
        [
            str(tc.path("kube-scheduler")), f"--config={scheduler_cfg}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={ports.scheduler}", f"--cert-dir={run_dir / 'sched'}",
        ],
        f"https://127.0.0.1:{ports.scheduler}/healthz",
        {},
        insecure_probe=True,
    )
    kwok_argv = [
        str(tc.path("kwok")), f"--kubeconfig={kc}",
        "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        f"--cidr={KWOK_POD_CIDR}", "--node-lease-duration-seconds=40",
        "--node-name=localhost", f"--node-port={ports.kwok}", f"--server-address=127.0.0.1:{ports.kwok}",
        f"--tls-cert-file={pki.apiserver_crt}", f"--tls-private-key-file={pki.apiserver_key}",
    ]
    for stage in KWOK_STAGES:
        kwok_argv += ["-c", str(tc.kwok_src / stage)]
    kwok_home = run_dir / "kwok-home"
    kwok_home.mkdir(exist_ok=True)
    kwok = Component(
        "kwok",
        kwok_argv,
        f"https://127.0.0.1:{ports.kwok}/healthz",
        # HOME keeps kwok hermetic: it would otherwise load ~/.kwok/kwok.yaml first.
        {"HOME": str(kwok_home)},
        insecure_probe=True,
    )
    return [etcd, apiserver, controller_manager, scheduler, kwok]
