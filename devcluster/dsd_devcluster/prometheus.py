"""A real Prometheus server on loopback with a generated scrape config (Debian's `prometheus` package).

Targets are loopback `host:port` strings: in the dev setup the runtime's processes run on this machine,
never at the fictional pod IPs of kwok nodes.
"""

from __future__ import annotations

import json
import shutil
import socket
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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


def start_prometheus(name: str, targets: dict[str, list[str]], port: int = 0,
                     scrape_interval_s: float = 1.0) -> PrometheusHandle:
    """Starts Prometheus `name` (its own directory, port and TSDB); replaces one already running."""
    stop_prometheus(name)
    directory = paths.clusters_home() / f"prometheus-{paths.validate_cluster_name(name)}"
    directory.mkdir(parents=True, exist_ok=True)
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(scrape_config(targets, scrape_interval_s)))
    argv = [
        _binary(), f"--config.file={config_path}", f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle", "--log.level=warn",
    ]
    log = directory / "prometheus.log"
    pid = processes.start_detached(argv, log, cwd=directory)
    handle = PrometheusHandle(directory, port, pid)
    (directory / "state.json").write_text(json.dumps({"port": port, "pid": pid}))
    processes.wait_until(lambda: processes.http_ok(f"{handle.url}/-/ready"), 60, "prometheus",
                         pid=pid, log_path=log)
    return handle


def stop_prometheus(name: str) -> bool:
    directory = paths.clusters_home() / f"prometheus-{paths.validate_cluster_name(name)}"
    state = directory / "state.json"
    if not state.exists():
        return False
    processes.stop(json.loads(state.read_text())["pid"])
    shutil.rmtree(directory, ignore_errors=True)
    return True
