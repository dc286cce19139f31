"""Keeps a draft's readiness true to its target: ready exactly while the target is connected and SERVING.

A background thread connects (Info + tokenizer compatibility), then follows the target's standard gRPC health
service with a Watch stream: NOT_SERVING (graceful shutdown) or a broken stream (target lost) clears the
engine's `ready` event at once, so /readyz and /v1/models stop advertising a server that cannot answer; when
the target is back the thread reconnects and sets it again. With several target replicas it follows the one the
client uses and, when that one is lost, moves the client to the next. Started by `dsd draft` and `dsd serve`.
"""

from __future__ import annotations

import logging
import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dsd_runtime.common.proto import dsd_pb2
from dsd_runtime.draft.engine import DraftEngine
from dsd_runtime.errors import DsdError, IncompatibleModels

log = logging.getLogger(__name__)
TARGET_SERVICE = dsd_pb2.DESCRIPTOR.services_by_name["Target"].full_name
RETRY_S = 0.5  # between reconnection attempts; each attempt itself waits up to connect_timeout_s


class TargetMonitor(threading.Thread):
    def __init__(self, engine: DraftEngine, connect_timeout_s: float = 10.0) -> None:
        super().__init__(name="dsd-target-monitor", daemon=True)
        self.engine = engine
        self.connect_timeout_s = connect_timeout_s
        self.failure: IncompatibleModels | None = None  # fatal: the pair can never work
        self._stopping = threading.Event()
        self._call: grpc.Future | None = None

    def run(self) -> None:
        while not self._stopping.is_set():
            client = self.engine.client
            address = client.address
            try:
                self.engine.handshake(self.connect_timeout_s)  # again after each loss: it may be a new target
                self._follow_health(health_pb2_grpc.HealthStub(client.channel))
            except IncompatibleModels as e:
                self.failure = e
                self.engine.ready.clear()
                log.error("%s", e)
                return
            except (DsdError, grpc.RpcError, ValueError) as e:  # ValueError: the channel was closed
                if self.engine.ready.is_set():
                    log.warning("target lost: %s", e)
                self.engine.ready.clear()
                client.failover(address)  # several replicas: try the next one
            self._stopping.wait(RETRY_S)

    def _follow_health(self, health: health_pb2_grpc.HealthStub) -> None:
        call = health.Watch(health_pb2.HealthCheckRequest(service=TARGET_SERVICE), wait_for_ready=True)
        self._call = call
        for update in call:
            if update.status == health_pb2.HealthCheckResponse.SERVING:
                self.engine.ready.set()
            else:
                self.engine.ready.clear()
                log.warning("target is %s", health_pb2.HealthCheckResponse.ServingStatus.Name(update.status))
        self.engine.ready.clear()  # the server ended the stream

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping.set()
        if self._call is not None:
            self._call.cancel()
        if self.is_alive():
            self.join(timeout_s)
