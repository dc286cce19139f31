"""Run-time control of the speculation window: a gRPC DraftControl service and a watched config file.

The operator writes the window (and request sampling defaults) into a ConfigMap mounted as a file; the draft
re-reads it when it changes, without a restart. Invalid changes are rejected (INVALID_ARGUMENT / logged) and the
old settings stay.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import yaml

from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from dsd_runtime.common.tls import TlsFiles
from dsd_runtime.common.tls import bind as tls_bind
from dsd_runtime.draft.client import LinkEmulation
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_spec.sampling import SamplingParams

log = logging.getLogger(__name__)
_FIELDS = ("gamma", "gamma_min", "gamma_max", "policy", "pipelined", "proposer", "mode")


def _to_proto(cfg: WindowConfig) -> dsd_pb2.WindowConfig:
    return dsd_pb2.WindowConfig(gamma=cfg.gamma, gamma_min=cfg.gamma_min, gamma_max=cfg.gamma_max,
                                policy=cfg.policy, pipelined=cfg.pipelined)


class DraftControlServicer(dsd_pb2_grpc.DraftControlServicer):
    def __init__(self, window: WindowController) -> None:
        self.window = window

    def GetWindow(self, request: dsd_pb2.GetWindowRequest, context: grpc.ServicerContext) -> dsd_pb2.WindowConfig:
        return _to_proto(self.window.config)

    def SetWindow(self, request: dsd_pb2.WindowConfig, context: grpc.ServicerContext) -> dsd_pb2.WindowConfig:
        # proto3 scalars have no presence: 0 / "" mean "unchanged"; `pipelined` is always applied.
        changes: dict[str, object] = {k: getattr(request, k) for k in ("gamma", "gamma_min", "gamma_max", "policy")
                                      if getattr(request, k)}
        changes["pipelined"] = request.pipelined
        try:
            return _to_proto(self.window.update(**changes))
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise


def start_control_server(window: WindowController, address: str,
                         tls: TlsFiles | None = None) -> tuple[grpc.Server, int]:
    """With `tls` (the draft's own certificate and CA) only clients holding a certificate from that CA may
    read or change the window."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    dsd_pb2_grpc.add_DraftControlServicer_to_server(DraftControlServicer(window), server)
    port = tls_bind(server, address, tls)
    server.start()
    return server, port


SECTIONS = ("window", "sampling", "link")


def _section(path: Path, name: str, allowed: tuple[str, ...]) -> dict[str, object] | None:
    """Section `name` of a YAML/JSON runtime config file (None when absent), refusing unknown fields. A document
    with none of the SECTIONS is a bare window section."""
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        return None
    if not set(SECTIONS) & set(doc):
        doc = {"window": doc}
    section = doc.get(name)
    if section is None:
        return None
    unknown = set(section) - set(allowed)
    if unknown:
        raise ValueError(f"{path}: unknown {name} fields {sorted(unknown)}; allowed: {list(allowed)}")
    return dict(section)


def load_window_file(path: Path) -> dict[str, object]:
    """Reads the `window` section (or, in a file with no sections, the whole document)."""
    return _section(path, "window", _FIELDS) or {}


def load_sampling_defaults(path: Path) -> SamplingParams | None:
    """The optional `sampling` section (temperature, top_p, top_k): defaults for requests that omit them."""
    section = _section(path, "sampling", ("temperature", "top_p", "top_k"))
    if section is None:
        return None
    return SamplingParams(temperature=float(section.get("temperature", 1.0)),  # type: ignore[arg-type]
                          top_k=int(section.get("top_k", 0)),  # type: ignore[call-overload]
                          top_p=float(section.get("top_p", 1.0)))  # type: ignore[arg-type]


def load_link_emulation(path: Path) -> LinkEmulation | None:
    """The optional `link` section (delay_ms, jitter_ms, bandwidth_mbps): an emulated draft-target link that
    benchmarks and tests change while the draft runs (like --delay-ms, without a restart)."""
    section = _section(path, "link", ("delay_ms", "jitter_ms", "bandwidth_mbps"))
    if section is None:
        return None
    values = {k: float(section.get(k, 0.0)) for k in ("delay_ms", "jitter_ms", "bandwidth_mbps")}  # type: ignore[arg-type]
    if any(v < 0 for v in values.values()):
        raise ValueError(f"{path}: link values must be >= 0, got {values}")
    return LinkEmulation(values["delay_ms"], values["jitter_ms"], values["bandwidth_mbps"])


class ConfigWatcher(threading.Thread):
    """Polls the file's mtime (a mounted ConfigMap changes by symlink swap, which inotify handles badly)."""

    def __init__(self, path: Path, window: WindowController, interval_s: float = 1.0,
                 on_sampling: Callable[[SamplingParams], None] | None = None,
                 on_link: Callable[[LinkEmulation], None] | None = None) -> None:
        super().__init__(name="dsd-config-watcher", daemon=True)
        self.path = path
        self.window = window
        self.on_sampling = on_sampling
        self.on_link = on_link
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._last: tuple[float, int] | None = None
        self.applied = 0

    def check_once(self) -> bool:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._last:
            return False
        self._last = stamp
        try:
            sampling = load_sampling_defaults(self.path)
            link = load_link_emulation(self.path)
            cfg = self.window.update(**load_window_file(self.path))
            if sampling is not None and self.on_sampling is not None:
                self.on_sampling(sampling)
            if link is not None and self.on_link is not None:
                self.on_link(link)
        except (ValueError, TypeError, yaml.YAMLError) as e:
            log.error("ignoring invalid runtime config %s: %s", self.path, e)
            return False
        self.applied += 1
        log.info("window from %s: %s", self.path, json.dumps(cfg.__dict__))
        return True

    def run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.check_once()

    def stop(self) -> None:
        self._stopping.set()
