"""A real draft server (uvicorn on loopback) in front of a real gRPC target, both with tiny models."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from dsd_runtime.api.app import create_app
from dsd_runtime.api.auth import ApiKeys
from dsd_runtime.common import models
from dsd_runtime.draft.engine import DraftEngine
from dsd_runtime.draft.windowing import WindowConfig
from tests.support.runtime_fixtures import start_target
from tests.support.waiting import wait_for


@dataclass
class ApiServer:
    base_url: str
    engine: DraftEngine
    target_port: int
    engine_target: object  # the in-process TargetServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_api(engine: DraftEngine, api_keys: ApiKeys | None = None) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(engine, api_keys=api_keys), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(url), 30, "uvicorn listening")
    return server, thread, url


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def api_server(target: models.LoadedModel, draft: models.LoadedModel,
               window: WindowConfig | None = None, api_keys: ApiKeys | None = None,
               **target_settings: object) -> Iterator[ApiServer]:
    """A real gRPC target and a draft server's HTTP API in front of it, both on loopback, torn down after."""
    server = start_target(target, **target_settings)
    engine = DraftEngine(draft, f"127.0.0.1:{server.port}", window or WindowConfig(gamma=3), target_deadline_s=5,
                         served_model_name="tiny")
    engine.connect()
    uv, thread, url = run_api(engine, api_keys)
    try:
        yield ApiServer(url, engine, server.port, server)
    finally:
        uv.should_exit = True
        thread.join(10)
        engine.close()
        server.stop(0)


@pytest.fixture(scope="module")
def api(loaded) -> Iterator[ApiServer]:
    with api_server(loaded["target"], loaded["partial"]) as server:
        yield server
