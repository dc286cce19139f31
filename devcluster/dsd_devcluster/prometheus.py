"""A real Prometheus server on loopback with a generated scrape config (Debian's `prometheus` package).

Two kinds of jobs: static loopback `host:port` targets (runtime processes on this machine), and, for a dev
cluster, Kubernetes service discovery of pods against the cluster's apiserver, driven by the pods'
`prometheus.io/scrape|port|path` annotations and limited to pods on real nodes (a kwok pod runs nothing and its
address is routed nowhere).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from dsd_devcluster import paths, processes


class PrometheusError(RuntimeError):
    pass


@dataclass(frozen=True)
class PrometheusHandle:
    directory: Path
    port: int
    pid: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "prometheus.log"


def _binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise PrometheusError(
            "prometheus not found on PATH: install Debian's package (`apt-get install prometheus`); "
            ".ci/run does this"
        )
    return found


def _directory(name: str) -> Path:
    """Beside the clusters, in a directory no cluster name can take (a name cannot start with a dot)."""
    return paths.clusters_home() / ".prometheus" / paths.validate_cluster_name(name)


def scrape_config(targets: dict[str, list[str]], scrape_interval_s: float) -> dict[str, object]:
    """`targets` maps a job name to loopback `host:port` targets."""
    for job, hosts in targets.items():
        for host in hosts:
            if not host.startswith(("127.", "localhost:", "[::1]:")):
                raise PrometheusError(f"scrape target {host!r} of job {job!r} is not on loopback")
    interval = f"{max(1, int(scrape_interval_s))}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": hosts}]} for job, hosts in sorted(targets.items())
        ],
    }


def pod_discovery_job(kubeconfig: Path, real_nodes: list[str]) -> dict[str, object]:
    """The `kubernetes-pods` job: annotated pods on the given real nodes, labelled namespace/pod/node."""
    nodes = "|".join(real_nodes) or "^$"
    return {
        "job_name": "kubernetes-pods",
        "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "action": "keep",
             "regex": "true"},
            {"source_labels": ["__meta_kubernetes_pod_node_name"], "action": "keep", "regex": f"({nodes})"},
            {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"], "regex": "(.+)",
             "target_label": "__metrics_path__"},
            {"source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
             "regex": r"([^:]+)(?::\d+)?;(\d+)", "replacement": "$1:$2", "target_label": "__address__"},
            {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
        ],
    }


def start_cluster_prometheus(name: str, binary: Path, kubeconfig: Path, real_nodes: list[str],
                             host: str = "127.0.0.1", scrape_interval_s: float = 2.0) -> PrometheusHandle:
    """The dev cluster's own Prometheus: pod discovery against its apiserver (see pod_discovery_job).

    `binary`: the toolchain's Prometheus (Debian's is built without Kubernetes service discovery). `host`: with
    real nodes, the cluster's gateway, so an operator in a pod reaches it as well as processes on this machine.
    """
    return start_prometheus(name, {}, 0, scrape_interval_s, extra_jobs=[pod_discovery_job(kubeconfig, real_nodes)],
                            binary=binary, host=host)


def start_prometheus(name: str, targets: dict[str, list[str]], port: int = 0,
                     scrape_interval_s: float = 1.0, extra_jobs: list[dict[str, object]] | None = None,
                     binary: Path | None = None, host: str = "127.0.0.1") -> PrometheusHandle:
    """Starts Prometheus `name` (its own directory, port and TSDB); replaces one already running."""
    stop_prometheus(name)
    directory = _directory(name)
    directory.mkdir(parents=True, exist_ok=True)
    if port == 0:
        port = processes.free_port(host)
    config_path = directory / "prometheus.yml"
    config = scrape_config(targets, scrape_interval_s)
    config["scrape_configs"] = [*config["scrape_configs"], *(extra_jobs or [])]  # type: ignore[misc]
    config_path.write_text(yaml.safe_dump(config))
    argv = [
        str(binary) if binary else _binary(), f"--config.file={config_path}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={host}:{port}", "--web.enable-lifecycle", "--log.level=warn",
    ]
    return _launch(directory, argv, host, port)


def _launch(directory: Path, argv: list[str], host: str, port: int) -> PrometheusHandle:
    log = directory / "prometheus.log"
    pid = processes.start_detached(argv, log, cwd=directory)
    handle = PrometheusHandle(directory, port, pid, host)
    (directory / "state.json").write_text(json.dumps({"port": port, "pid": pid, "host": host, "argv": argv}))
    processes.wait_until(lambda: processes.http_ok(f"{handle.url}/-/ready"), 60, "prometheus",
                         pid=pid, log_path=log)
    return handle


def suspend_prometheus(name: str) -> None:
    """Stops the process but keeps its directory, port and TSDB, so `resume_prometheus` brings the same one back
    (what an outage of a cluster's Prometheus looks like to its clients)."""
    state = json.loads((_directory(name) / "state.json").read_text())
    processes.stop(state["pid"])


def resume_prometheus(name: str) -> PrometheusHandle:
    directory = _directory(name)
    state = json.loads((directory / "state.json").read_text())
    if processes.is_alive(state["pid"]):
        return PrometheusHandle(directory, state["port"], state["pid"], state["host"])
    return _launch(directory, state["argv"], state["host"], state["port"])


def stop_prometheus(name: str) -> bool:
    directory = _directory(name)
    state = directory / "state.json"
    if not state.exists():
        return False
    processes.stop(json.loads(state.read_text())["pid"])
    shutil.rmtree(directory, ignore_errors=True)
    return True
