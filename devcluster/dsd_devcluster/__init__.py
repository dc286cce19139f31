"""Local Kubernetes control plane for DSD development and tests.

Builds (once, cached) and runs a real etcd, kube-apiserver, kube-controller-manager and kube-scheduler on
127.0.0.1, plus kwok for simulated edge/GPU nodes, a Prometheus server and Helm. Used by `dsd dev ...` and by
the pytest `cluster` fixture. Imports nothing from the rest of DSD.
"""

from dsd_devcluster.cluster import ClusterHandle, cluster_status, start_cluster, stop_cluster

__all__ = ["ClusterHandle", "cluster_status", "start_cluster", "stop_cluster"]
