"""What real nodes need from the host side of a cluster: the apiserver forwarder and cluster DNS.

* The apiserver listens on 127.0.0.1, which no node namespace can reach: socat forwards the cluster's gateway
  address (same port) to it. The apiserver advertises the gateway, so `kubernetes.default` works in pods.
* CoreDNS runs on the host, bound to the gateway, serving cluster.local from the apiserver and nothing else
  (no `forward`: names outside the cluster are refused, so nothing is ever asked of an upstream resolver).
  The `kube-dns` Service (ClusterIP 10.96.0.10, the kubelets' clusterDNS) points at it by an EndpointSlice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsd_devcluster.components import Component
from dsd_devcluster.network import CLUSTER_DNS


def apiserver_forwarder(gateway: str, port: int) -> Component:
    return Component(
        "apiserver-forwarder",
        ["socat", f"TCP-LISTEN:{port},bind={gateway},fork,reuseaddr", f"TCP:127.0.0.1:{port}"],
        f"https://{gateway}:{port}/readyz", {},
    )


def coredns(binary: Path, run_dir: Path, gateway: str, kubeconfig: Path, health_port: int) -> Component:
    corefile = run_dir / "Corefile"
    corefile.write_text(f""".:53 {{
    bind {gateway}
    errors
    health 127.0.0.1:{health_port}
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
""")
    return Component("coredns", [str(binary), "-conf", str(corefile)], f"http://127.0.0.1:{health_port}/health", {})


def kube_dns_objects(gateway: str) -> list[dict[str, Any]]:
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": CLUSTER_DNS, "ports": [{**p, "targetPort": 53} for p in ports]},
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kube-dns-host", "namespace": "kube-system",
                     "labels": {"kubernetes.io/service-name": "kube-dns",
                                "endpointslice.kubernetes.io/managed-by": "dsd-dev-cluster"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [gateway], "conditions": {"ready": True}}],
        "ports": ports,
    }
    return [service, endpoints]
