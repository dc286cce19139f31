"""Operator benchmark on the local control plane: apply-to-children and apply-to-Ready times, memory with 50
DSDDeployments, and the API writes of reconciles when nothing changed (should be zero).

    python bench/operator_bench.py   # starts (or reuses) the dev cluster `bench-operator` (10 edge, 60 GPU nodes)

Writes docs/benchmarks/operator.md. Pods run on kwok nodes (no containers), so "Ready" is the control plane's
and the operator's part of the work: scheduling, Deployment/ReplicaSet controllers, status roll-up.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from kubernetes import client, config

from dsd_devcluster import start_cluster, stop_cluster
from dsd_devcluster.toolchain import ensure_toolchain

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "dsd.dev", "v1alpha1", "dsddeployments"
# Enough simulated capacity for 50 DSDDeployments with one GPU target each (kwok nodes are cheap).
NODES = """nodes:
  - name: edge
    count: 10
    zones: [edge-zone-a, edge-zone-b]
    labels: {node-role.kubernetes.io/edge: "", dsd.dev/tier: edge}
    capacity: {cpu: "8", memory: 16Gi, pods: "110"}
  - name: gpu
    count: 60
    zones: [cloud-zone-a, cloud-zone-b]
    labels: {dsd.dev/tier: cloud, nvidia.com/gpu.present: "true"}
    taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]
    capacity: {cpu: "32", memory: 256Gi, pods: "110", nvidia.com/gpu: "1"}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _counter(port: int, metric: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wait(probe, timeout_s: float, interval_s: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = probe()
        except OSError:  # the operator's /metrics is not listening yet
            value = None
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError("condition not met")


def _ready(custom: client.CustomObjectsApi, ns: str, name: str) -> bool:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "operator.md")
    parser.add_argument("--keep-cluster", action="store_true", help="leave `bench-operator` running for a rerun")
    args = parser.parse_args()
    nodes = Path(tempfile.mkdtemp()) / "nodes.yaml"
    nodes.write_text(NODES)
    handle = start_cluster("bench-operator", nodes)
    kubectl = [str(ensure_toolchain().path("kubectl")), "--kubeconfig", str(handle.kubeconfig)]
    subprocess.run([*kubectl, "apply", "--server-side", "-f", str(REPO / "crds")], check=True, capture_output=True)
    subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd", "--all"], check=True,
                   capture_output=True)
    api = config.new_client_from_config(config_file=str(handle.kubeconfig))
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    port = _free_port()
    op = subprocess.Popen([sys.executable, "-m", "dsd_cli.main", "operator", "run", "--health-port", "0",
                           "--metrics-port", str(port), "--resync-s", "10", "--log-level", "WARNING"],
                          env={**os.environ, "KUBECONFIG": str(handle.kubeconfig)})
    lines = []
    try:
        _wait(lambda: _counter(port, "dsd_operator_reconciles_total") + 1, 60, 0.5)  # /metrics answers
        ns = f"bench-{int(time.time())}"
        core.create_namespace({"metadata": {"name": ns}})
        sample = REPO / "manifests" / "samples" / "minimal.yaml"
        children, ready = [], []
        for i in range(args.repeats):
            name = f"smollm2-{i}"
            body = yaml.safe_load(sample.read_text())
            body["metadata"]["name"] = name
            start = time.perf_counter()
            subprocess.run([*kubectl, "apply", "-n", ns, "-f", "-"], input=yaml.safe_dump(body), text=True,
                           check=True, capture_output=True)
            _wait(lambda n=name: len(apps.list_namespaced_deployment(ns, label_selector=f"dsd.dev/deployment={n}")
                                     .items) == 2 and core.read_namespaced_config_map(f"{n}-runtime", ns), 60)
            children.append(time.perf_counter() - start)
            _wait(lambda n=name: _ready(custom, ns, n), 120)
            ready.append(time.perf_counter() - start)
        rss_before = _rss_mib(op.pid)
        start = time.perf_counter()
        for i in range(args.repeats, args.count):
            body = yaml.safe_load(sample.read_text())
            body["metadata"]["name"] = f"smollm2-{i}"
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        _wait(lambda: all(_ready(custom, ns, f"smollm2-{i}") for i in range(args.count)), 600, 1.0)
        all_ready_s = time.perf_counter() - start
        rss = _rss_mib(op.pid)
        writes0 = _counter(port, "dsd_operator_api_writes_total", namespace=ns)
        reconciles0 = _counter(port, "dsd_operator_reconciles_total", namespace=ns)
        time.sleep(30)  # the measurement window itself: resyncs every 10 s reconcile all resources
        writes = _counter(port, "dsd_operator_api_writes_total", namespace=ns) - writes0
        reconciles = _counter(port, "dsd_operator_reconciles_total", namespace=ns) - reconciles0
        lines = [
            "| measure | value |", "|---|---|",
            f"| `kubectl apply` -> all children created (median of {args.repeats}) | "
            f"{statistics.median(children):.2f} s |",
            f"| `kubectl apply` -> Ready=True (median of {args.repeats}) | {statistics.median(ready):.2f} s |",
            f"| {args.count - args.repeats} more created at once -> all {args.count} Ready | {all_ready_s:.1f} s |",
            f"| operator RSS with {args.count} DSDDeployments (with {args.repeats}) | {rss:.0f} MiB "
            f"({rss_before:.0f} MiB) |",
            f"| reconciles in 30 s of no change (resync 10 s) | {reconciles:.0f} |",
            f"| API writes during those reconciles | {writes:.0f} |",
        ]
        print("\n".join(lines))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("Generated by `python bench/operator_bench.py` on the local dev cluster "
                            f"({os.cpu_count()} CPUs).\n\n" + "\n".join(lines) + "\n")
        core.delete_namespace(ns)
    finally:
        op.terminate()
        op.wait(30)
        if not args.keep_cluster:
            stop_cluster("bench-operator")


if __name__ == "__main__":
    main()
