"""`dsd target`: load the target model, serve gRPC and /metrics until SIGTERM (graceful)."""

from __future__ import annotations

import logging
import signal
import threading

import torch
from prometheus_client import start_http_server

from dsd_runtime.common import models
from dsd_runtime.common.tls import TlsFiles
from dsd_runtime.target.server import TargetServer, TargetSettings

log = logging.getLogger(__name__)


def run_target(model_ref: str, address: str, metrics_port: int, settings: TargetSettings,
               threads: int | None = None, grace_s: float = 10.0, device: str = "auto",
               dtype: str = "auto", tls: TlsFiles | None = None, health_port: int = -1) -> None:
    if threads:
        torch.set_num_threads(threads)
    model = models.load(model_ref, models.DTYPES[dtype], device)
    host = address.rsplit(":", 1)[0]
    server = TargetServer(model, settings, address, tls=tls,
                          health_address=f"{host}:{health_port}" if health_port >= 0 else None)
    if metrics_port >= 0:
        start_http_server(metrics_port, addr=host, registry=server.registry)
    server.start()
    secured = " (mutual TLS)" if tls else ""
    health_note = f", plaintext health on {host}:{server.health_port}" if server.health_server else ""
    print(f"target {model.name} ready on {host}:{server.port}{secured}{health_note}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down: letting in-flight rounds finish (grace %.0fs)", grace_s)
    server.stop(grace_s)
