"""The draft's gRPC client to a target, with optional emulation of an edge-cloud link.

Emulation is in-process: each call waits one-way delay (+ jitter, + payload / bandwidth) before sending and
again before handing back the answer, on a worker thread so pipelined drafting overlaps it like a real link.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from concurrent import futures
from dataclasses import dataclass

import grpc

from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from dsd_runtime.common.tls import ClientTls, TlsConfigError
from dsd_runtime.common.tls import channel as tls_channel
from dsd_runtime.errors import DsdError, InvalidRequest, Overloaded, TargetUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkEmulation:
    """one_way_delay_ms: added each way; jitter_ms: uniform +-; bandwidth_mbps: 0 = unlimited."""

    one_way_delay_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_mbps: float = 0.0
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.one_way_delay_ms > 0 or self.jitter_ms > 0 or self.bandwidth_mbps > 0


def _error_from(e: grpc.RpcError, address: str) -> DsdError:
    """The runtime's error for a failed call; `.address` names the replica that failed it."""
    code, details = e.code(), e.details() or ""
    error: DsdError
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        error = InvalidRequest(f"target rejected the window: {details}")
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        error = Overloaded(f"target at {address} is overloaded: {details}")
    else:
        error = TargetUnavailable(f"target at {address} unavailable ({code.name}): {details}")
    error.address = address  # type: ignore[attr-defined]
    return error


class TargetClient:
    """`address`: one target, or several replicas comma-separated (`host:port,host:port`).

    With one replica a call waits for it to come back (a restart), up to the deadline. With several, a call to
    a replica that is down fails at once and `failover()` moves every later call to the next replica; the
    speculator then resends its context there (a re-prefill), so the request completes with the same output.
    """

    def __init__(self, address: str, link: LinkEmulation | None = None, deadline_s: float = 30.0,
                 tls: ClientTls | None = None) -> None:
        self.addresses = [a.strip() for a in address.split(",") if a.strip()]
        if not self.addresses:
            raise ValueError("no target address given")
        self.link = link or LinkEmulation()
        self.deadline_s = deadline_s
        self.tls = tls
        self._tls_fingerprint = tls.fingerprint() if tls else ""
        self._retired: list[grpc.Channel] = []
        self._channels, self._stubs = self._connect()
        self._current = 0
        self._current_lock = threading.Lock()
        self._wait_for_ready = len(self.addresses) == 1
        self._pool = futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="dsd-verify")
        self._rng = random.Random(self.link.seed)
        self._rng_lock = threading.Lock()

    def _connect(self) -> tuple[list[grpc.Channel], list[dsd_pb2_grpc.TargetStub]]:
        channels = [tls_channel(a, self.tls, [("grpc.max_send_message_length", 64 << 20)]) for a in self.addresses]
        return channels, [dsd_pb2_grpc.TargetStub(c) for c in channels]

    def reload_tls(self) -> bool:
        """New channels when the TLS files changed (a rotated certificate): later calls use them, calls in
        flight finish on the old ones (closed with the client). False when nothing changed or the new files
        are not usable yet (a rotation half-written: the old channels stay)."""
        if self.tls is None:
            return False
        fingerprint = self.tls.fingerprint()
        if fingerprint == self._tls_fingerprint:
            return False
        try:
            channels, stubs = self._connect()
        except TlsConfigError as e:
            log.warning("TLS files changed but cannot be used yet, keeping the current channels: %s", e)
            return False
        with self._current_lock:
            self._retired.extend(self._channels)
            self._channels, self._stubs = channels, stubs
            self._tls_fingerprint = fingerprint
        log.info("TLS credentials reloaded: new channels to %s", ",".join(self.addresses))
        return True

    @property
    def address(self) -> str:
        return self.addresses[self._current]

    @property
    def stub(self) -> dsd_pb2_grpc.TargetStub:
        return self._stubs[self._current]

    @property
    def channel(self) -> grpc.Channel:
        return self._channels[self._current]

    def failover(self, failed_address: str) -> bool:
        """After a call to `failed_address` failed: move to the next replica (once, however many callers saw
        the failure). False when there is no other replica to try."""
        if len(self.addresses) == 1:
            return False
        with self._current_lock:
            if self.addresses[self._current] == failed_address:
                self._current = (self._current + 1) % len(self.addresses)
        return True

    def _link_delay(self, payload_bytes: int) -> None:
        if not self.link.active:
            return
        with self._rng_lock:
            jitter = self._rng.uniform(-self.link.jitter_ms, self.link.jitter_ms)
        delay_s = max(0.0, self.link.one_way_delay_ms + jitter) / 1000.0
        if self.link.bandwidth_mbps > 0:
            delay_s += payload_bytes * 8 / (self.link.bandwidth_mbps * 1e6)
        time.sleep(delay_s)

    def info(self, timeout_s: float | None = None) -> dsd_pb2.InfoResponse:
        try:
            # Waits for a target that is still starting, whatever the number of replicas.
            return self.stub.Info(dsd_pb2.InfoRequest(), timeout=timeout_s or self.deadline_s, wait_for_ready=True)
        except grpc.RpcError as e:
            raise _error_from(e, self.address) from None

    def _verify_blocking(self, request: dsd_pb2.VerifyRequest) -> dsd_pb2.VerifyResponse:
        self._link_delay(request.ByteSize())
        address, stub = self.address, self.stub
        try:
            # wait_for_ready (one replica): a restarting target is waited for (up to the deadline).
            response = stub.Verify(request, timeout=self.deadline_s, wait_for_ready=self._wait_for_ready)
        except grpc.RpcError as e:
            raise _error_from(e, address) from None
        self._link_delay(response.ByteSize())
        return response

    def verify_async(self, request: dsd_pb2.VerifyRequest) -> futures.Future[dsd_pb2.VerifyResponse]:
        return self._pool.submit(self._verify_blocking, request)

    def decode(self, request: dsd_pb2.DecodeRequest) -> DecodeStream:
        """Target-only mode: the target's tokens as it makes them; `cancel()` the stream to stop it."""
        self._link_delay(request.ByteSize())
        call = self.stub.Decode(request, timeout=self.deadline_s * max(1, request.max_tokens),
                                wait_for_ready=self._wait_for_ready)
        return DecodeStream(call, self, self.address)

    def close_session(self, session_id: str) -> None:
        """Best effort: a target that is gone has forgotten the session anyway."""
        with contextlib.suppress(grpc.RpcError, ValueError):  # ValueError: channel already closed
            self.stub.CloseSession(dsd_pb2.CloseSessionRequest(session_id=session_id), timeout=2.0)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for channel in self._channels + self._retired:
            channel.close()


class DecodeStream:
    """The chunks of a Decode call, each handed out one-way delay after it arrived (an emulated link delays
    every chunk, not the stream's throughput): a reader thread stamps arrivals, `__next__` waits out the delay."""

    def __init__(self, call: grpc.Future, client: TargetClient, address: str) -> None:
        self._call = call
        self._client = client
        self._address = address
        self._chunks: queue.Queue[tuple[float, dsd_pb2.DecodeChunk | BaseException | None]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="dsd-decode-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for chunk in self._call:
                self._chunks.put((time.monotonic(), chunk))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self._chunks.put((time.monotonic(), _error_from(e, self._address)))
        self._chunks.put((time.monotonic(), None))

    def __iter__(self) -> DecodeStream:
        return self

    def __next__(self) -> dsd_pb2.DecodeChunk:
        arrived, item = self._chunks.get()
        if self._client.link.active:
            delay = self._client.link.one_way_delay_ms / 1000.0 - (time.monotonic() - arrived)
            if delay > 0:
                time.sleep(delay)
        if item is None:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        self._call.cancel()
