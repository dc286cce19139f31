"""`dsd draft`: load the draft model, connect to the target, serve the OpenAI API, control RPC and config watch."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import torch
import uvicorn

from dsd_runtime.api.app import create_app
from dsd_runtime.api.auth import ApiKeys
from dsd_runtime.common import models
from dsd_runtime.common.periodic import Periodic
from dsd_runtime.common.tls import ClientTls
from dsd_runtime.draft import persisting
from dsd_runtime.draft.client import LinkEmulation
from dsd_runtime.draft.control import ConfigWatcher, start_control_server
from dsd_runtime.draft.engine import DraftEngine
from dsd_runtime.draft.monitoring import TargetMonitor
from dsd_runtime.draft.windowing import WindowConfig
from dsd_runtime.errors import DsdError, IncompatibleModels

log = logging.getLogger(__name__)
TLS_RELOAD_S = 5.0  # how often the draft looks for rotated certificate files


def run_draft(model_ref: str, target: str, host: str, port: int, control_port: int, window: WindowConfig,
              link: LinkEmulation, config_file: Path | None, threads: int | None = None,
              target_deadline_s: float = 30.0, device: str = "auto", dtype: str = "auto",
              tokenizer_ref: str | None = None, tls: ClientTls | None = None,
              api_keys: ApiKeys | None = None, window_stats: Path | None = None) -> None:
    if threads:
        torch.set_num_threads(threads)
    if model_ref == models.NO_MODEL:  # model-free drafting: only the tokenizer is needed (seconds to load)
        if tokenizer_ref is None:
            raise ValueError("--model none needs --tokenizer (the target's model reference, for its tokenizer)")
        draft = models.load_tokenizer(tokenizer_ref)
    else:
        draft = models.load(model_ref, models.DTYPES[dtype], device)
    engine = DraftEngine(draft, target, window, link, target_deadline_s, tls=tls, window_stats=window_stats)
    # Fail fast on an incompatible pair when the target is already up; then follow the target's health.
    try:
        engine.handshake(timeout_s=5.0)
    except IncompatibleModels:
        raise
    except DsdError as e:
        log.warning("target not reachable yet: %s", e)
    monitor = TargetMonitor(engine)
    monitor.start()
    control, bound = start_control_server(engine.window, f"{host}:{control_port}", tls.files if tls else None)
    tls_reloader = None
    if tls is not None:  # a rotated client certificate: new channels for later calls
        tls_reloader = Periodic("dsd-tls-reloader", TLS_RELOAD_S, engine.client.reload_tls)
        tls_reloader.start()
    stats_saver = None
    if window_stats is not None:  # saved on exit too (engine.close)
        stats_saver = Periodic("dsd-window-stats", persisting.SAVE_EVERY_S, engine.save_window_stats)
        stats_saver.start()
    watcher = None
    if config_file is not None:
        watcher = ConfigWatcher(config_file, engine.window, on_sampling=engine.set_sampling_defaults,
                                on_link=engine.set_link)
        watcher.check_once()
        watcher.start()
    secured = " over mutual TLS" if tls else ""
    keyed = " (API keys required)" if api_keys else ""
    print(f"draft {draft.name} -> target {target}{secured}; OpenAI API on http://{host}:{port}/v1{keyed}, "
          f"control gRPC on {host}:{bound}", flush=True)
    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler it found: with
        # the default one the process would die before the `finally` below (window statistics, the batcher).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(create_app(engine, api_keys=api_keys), host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=10)
    finally:
        if tls_reloader:
            tls_reloader.stop()
        if stats_saver:
            stats_saver.stop()
        if watcher:
            watcher.stop()
        monitor.stop()
        control.stop(2)
        engine.close()
    if monitor.failure is not None:
        raise monitor.failure
