"""`dsd operator`: run the kopf operator in this process (what the operator Deployment runs)."""

from __future__ import annotations

import asyncio
import logging

import kopf
from prometheus_client import start_http_server

from dsd_operator.settings import OperatorSettings


def run(settings: OperatorSettings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from dsd_operator.handlers import watching  # registers the handlers

    watching.use_settings(settings)

    if settings.log_level != "DEBUG":  # kopf logs every handler run, httpx every Prometheus query, at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)

    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    asyncio.run(kopf.operator(
        standalone=True, clusterwide=not settings.namespaces, namespaces=settings.namespaces,
        liveness_endpoint=liveness))
