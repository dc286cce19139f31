"""The target's gRPC server: Verify/Decode/CloseSession/Info, standard health service, graceful shutdown.

Each request runs on its own worker thread; the model work of all of them meets in the backend's
continuous batcher, one packed forward pass per step. Back-pressure instead of queueing without bound:
more than `max_pending` rounds in flight, or a new session that does not fit, answers RESOURCE_EXHAUSTED at
once. The worker pool is larger than `max_pending`, so health, Info and CloseSession always find a thread
and never wait behind model compute.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from dsd_runtime.common.batching import BatchingLM, PassObserver
from dsd_runtime.common.models import LoadedModel
from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from dsd_runtime.common.tls import TlsFiles
from dsd_runtime.common.tls import bind as tls_bind
from dsd_runtime.errors import DsdError, Overloaded
from dsd_runtime.metrics import TargetMetrics
from dsd_runtime.target.backend import BatchedTransformersBackend
from dsd_runtime.target.pass_trace import PassTrace
from dsd_runtime.target.pricing import PositionPricing
from dsd_runtime.target.self_drafting import SELF_DRAFTING_PROPOSERS, SelfDrafting, SelfWindow
from dsd_runtime.target.sessions import SessionStore
from dsd_runtime.target.verifying import Verifier, VerifyInput, VerifyOutput
from dsd_spec.sampling import SamplingParams

log = logging.getLogger(__name__)
SERVICE_NAME = dsd_pb2.DESCRIPTOR.services_by_name["Target"].full_name


class DeadlinePassed(DsdError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


@dataclass(frozen=True)
class TargetSettings:
    """`max_kv_bytes` 0: `max_cached_tokens` positions of this model's KV. `batching` False: one session per
    forward pass (the serialised behaviour, for comparisons)."""

    max_sessions: int = 64
    max_cached_tokens: int = 65536
    idle_ttl_s: float = 300.0
    max_window: int = 32
    max_pending: int = 64
    max_kv_bytes: int = 0
    max_batch_tokens: int = 1024
    batching: bool = True
    pass_trace: str = ""  # a JSONL file: one line per forward pass (dsd_runtime.target.pass_trace)
    gather_ms: float = 5.0  # a pass waits this long at most (and a fifth of the last) for the last pass's sessions
    # Target-only streams draft for themselves (target.self_drafting) when the request names a proposer;
    # False ignores that (one token per step). The suffix proposer's cross-request cache: tokens, 0 = none.
    self_drafting: bool = True
    self_drafting_cache_tokens: int = 100_000

    @property
    def grpc_workers(self) -> int:
        # A target-only stream holds a worker between its steps, and each is a session: with headroom for
        # health, Info and CloseSession, which never queue behind rounds or streams.
        return max(self.max_pending, self.max_sessions) + 8


def _input_from(req: dsd_pb2.VerifyRequest) -> VerifyInput:
    s = req.sampling
    params = SamplingParams(temperature=max(0.0, s.temperature), top_k=max(0, s.top_k),
                            top_p=s.top_p if 0.0 < s.top_p <= 1.0 else 1.0)
    return VerifyInput(
        session_id=req.session_id, committed_len=req.committed_len, context=list(req.context),
        draft_tokens=list(req.draft_tokens),
        draft_probs=[(list(d.token_ids), list(d.probs)) for d in req.draft_probs],
        params=params, seed=s.seed, logprobs=req.logprobs, top_logprobs=req.top_logprobs,
    )


def _logprobs_to_proto(out: VerifyOutput) -> list[dsd_pb2.TokenLogprob]:
    return [dsd_pb2.TokenLogprob(token_id=lp.token_id, logprob=lp.logprob, top_token_ids=[t for t, _ in lp.top],
                                 top_logprobs=[v for _, v in lp.top]) for lp in out.logprobs]


class TargetServicer(dsd_pb2_grpc.TargetServicer):
    def __init__(self, model: LoadedModel, settings: TargetSettings, metrics: TargetMetrics) -> None:
        self.model = model
        self.settings = settings
        self.metrics = metrics
        self.pass_trace = PassTrace(Path(settings.pass_trace), metrics.observe_pass) if settings.pass_trace else None
        self.pricing = PositionPricing()
        record: PassObserver = self.pass_trace or metrics.observe_pass

        def on_pass(sequences: int, tokens: int, seconds: float) -> None:
            self.pricing(sequences, tokens, seconds)
            record(sequences, tokens, seconds)

        self.batcher = BatchingLM(model.lm, settings.max_batch_tokens,
                                  settings.max_pending if settings.batching else 1, on_pass=on_pass,
                                  gather_s=settings.gather_ms / 1000)
        backend = BatchedTransformersBackend(self.batcher)
        max_kv_bytes = settings.max_kv_bytes or settings.max_cached_tokens * backend.kv_bytes_per_token
        self.store = SessionStore(settings.max_sessions, max_kv_bytes, settings.idle_ttl_s,
                                  backend.kv_bytes_per_token, backend.kv_bytes)
        self.verifier = Verifier(backend, self.store, settings.max_window)
        self.self_drafting = SelfDrafting(settings.self_drafting_cache_tokens)
        self._pending = 0
        self._pending_lock = threading.Lock()

    def Verify(self, request: dsd_pb2.VerifyRequest, context: grpc.ServicerContext) -> dsd_pb2.VerifyResponse:
        out = self._round(_input_from(request), context)
        self._observe(len(request.draft_tokens), out)
        price = self._price()
        return dsd_pb2.VerifyResponse(need_context=out.need_context, num_accepted=out.num_accepted,
                                      next_token=out.next_token, verify_seconds=out.seconds,
                                      reprefilled=out.reprefilled, logprobs=_logprobs_to_proto(out),
                                      position_price_seconds=price)

    def Decode(self, request: dsd_pb2.DecodeRequest, context: grpc.ServicerContext) -> Iterator[dsd_pb2.DecodeChunk]:
        """Target-only mode: rounds run back to back here, each streamed as it is made.

        Each round drafts for itself when the request names a proposer (target.self_drafting): it verifies
        the self-drafted window and streams the accepted tokens, then its own. Each takes its place in the
        batcher on its own, so other sessions' rounds interleave with this stream; a cancelled stream stops at
        the next round.
        """
        step = _input_from(dsd_pb2.VerifyRequest(
            session_id=request.session_id, committed_len=request.committed_len, context=request.context,
            sampling=request.sampling, logprobs=request.logprobs, top_logprobs=request.top_logprobs))
        stops = frozenset(request.stop_token_ids)
        try:
            drafter = self.self_drafting.stream(request.proposer if self.settings.self_drafting else "none",
                                                min(request.max_window or self.settings.max_window,
                                                    self.settings.max_window))
        except DsdError as e:
            self._fail(context, e)
        emitted = 0
        while emitted < request.max_tokens:
            if not context.is_active():
                return
            cap = min(request.max_tokens - emitted, self.verifier.backend.max_context - step.committed_len) - 1
            window = drafter.plan(self._history(step), cap) if cap > 0 else SelfWindow()
            out = self._round(replace(step, draft_tokens=list(window.tokens)), context)
            self._observe(len(window.tokens), out)
            if out.need_context:
                yield dsd_pb2.DecodeChunk(need_context=True)
                return
            drafter.observe(window, out.num_accepted)
            self.metrics.observe_self_step(window.source, len(window.tokens), out.num_accepted)
            self._price()
            logprobs = _logprobs_to_proto(out)
            tokens = [*window.tokens[:out.num_accepted], out.next_token]
            for i, token in enumerate(tokens):
                own = i == out.num_accepted
                yield dsd_pb2.DecodeChunk(token=token, logprob=logprobs[i] if logprobs else None,
                                          source="" if own else window.source, self_window=len(window.tokens))
                emitted += 1
                if token in stops:
                    return
            step = replace(step, committed_len=step.committed_len + len(tokens), context=[])

    def _history(self, step: VerifyInput) -> list[int]:
        """The session's committed tokens, for the self-drafter: the context when sent, else the session's."""
        if step.context:
            return step.context
        session = self.store.get(step.session_id)
        return session.tokens[:step.committed_len] if session is not None else []

    def _price(self) -> float:
        price = self.pricing.price_s()
        self.metrics.position_price.set(price)
        self.self_drafting.observe_price(price)
        return price

    def _round(self, vin: VerifyInput, context: grpc.ServicerContext) -> VerifyOutput:
        """One verification round with back-pressure; errors abort the RPC with their code."""
        with self._pending_lock:
            if self._pending >= self.settings.max_pending:
                self._fail(context, Overloaded(
                    f"target overloaded: {self._pending} verify rounds in flight (--max-pending); retry later "
                    "or on another replica"))
            self._pending += 1
            self.metrics.queued.set(self._pending)
        try:
            if not context.is_active():  # the caller's deadline passed or it cancelled meanwhile
                raise DeadlinePassed("deadline passed before the round ran")
            return self.verifier.verify(vin)
        except DsdError as e:
            self._fail(context, e)
        except Exception:  # a bug or a device failure: INTERNAL with no internals; the session is unchanged
            log.exception("verify round of session %s failed", vin.session_id)
            self._fail(context, DsdError("internal error while verifying; the session is unchanged, a retry is "
                                         "safe"))
        finally:
            with self._pending_lock:
                self._pending -= 1
                self.metrics.queued.set(self._pending)
        raise AssertionError("unreachable")  # _fail raises

    def _observe(self, window: int, out: VerifyOutput) -> None:
        self.metrics.requests_ok.inc()
        if out.seconds:
            self.metrics.verify_compute[min(window + 1, len(self.metrics.verify_compute)) - 1].observe(
                out.seconds)
            self.metrics.tokens_verified.inc(window + 1)
            if not out.reprefilled:  # a prefill's time is not a round's
                self.self_drafting.observe_round(window + 1, out.seconds)
        if out.reprefilled:
            self.metrics.reprefills.inc()
        self.metrics.active_sessions.set(len(self.store))
        self.metrics.cached_tokens.set(self.store.cached_tokens)
        self.metrics.kv_bytes.set(self.store.kv_bytes)
        self.metrics.evictions.set(self.store.evictions)

    def _fail(self, context: grpc.ServicerContext, error: DsdError) -> NoReturn:
        self.metrics.requests_by_code.labels(code=error.grpc_code.name).inc()
        context.abort(error.grpc_code, str(error))
        raise AssertionError("unreachable")  # abort raises

    def CloseSession(self, request: dsd_pb2.CloseSessionRequest,
                     context: grpc.ServicerContext) -> dsd_pb2.CloseSessionResponse:
        session = self.store.get(request.session_id)
        if session is not None and not session.in_round:  # its text, for later streams' suffix proposer
            self.self_drafting.remember(session.tokens)
        existed = self.store.remove(request.session_id)  # the store's lock only: never waits for compute
        self.metrics.active_sessions.set(len(self.store))
        self.metrics.cached_tokens.set(self.store.cached_tokens)
        return dsd_pb2.CloseSessionResponse(existed=existed)

    def Info(self, request: dsd_pb2.InfoRequest, context: grpc.ServicerContext) -> dsd_pb2.InfoResponse:
        return dsd_pb2.InfoResponse(
            model_name=self.model.name, vocab_size=self.model.lm.vocab_size,
            tokenizer_fingerprint=self.model.tokenizer_fingerprint, max_context=self.model.lm.max_context,
            max_window=self.settings.max_window, eos_token_ids=self.model.eos_token_ids,
            chat_template=self.model.chat_template,
            self_drafting=SELF_DRAFTING_PROPOSERS if self.settings.self_drafting else (),
        )


class TargetServer:
    """Owns the grpc.Server; `stop(grace_s)` lets in-flight rounds finish before closing.

    `tls`: mutual TLS on `address` (plaintext and clients without a certificate from its CA are refused).
    `health_address`: a second, plaintext server with only the health service, for probes that cannot speak
    TLS (the kubelet's gRPC probe); it shares the serving status of the main one.
    """

    def __init__(self, model: LoadedModel, settings: TargetSettings, address: str,
                 registry: CollectorRegistry | None = None, tls: TlsFiles | None = None,
                 health_address: str | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.servicer = TargetServicer(model, settings, TargetMetrics(self.registry))
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.grpc_workers),
                                  options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        dsd_pb2_grpc.add_TargetServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = tls_bind(self.server, address, tls)
        if self.port == 0:
            raise OSError(f"cannot bind the target's gRPC server to {address}")
        self.servicer.batcher.on_failure = self._stop_serving
        self.health_server: grpc.Server | None = None
        self.health_port = 0
        if health_address is not None:
            self.health_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            self.health_port = self.health_server.add_insecure_port(health_address)
            if self.health_port == 0:
                raise OSError(f"cannot bind the target's health server to {health_address}")

    def start(self) -> None:
        self.server.start()
        if self.health_server is not None:
            self.health_server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("target %s serving on port %d", self.servicer.model.name, self.port)

    def _stop_serving(self, error: BaseException) -> None:
        """The batcher failed (fail-stop): NOT_SERVING, so probes restart this replica and drafts go elsewhere."""
        log.error("target %s stops serving: its batcher failed (%r)", self.servicer.model.name, error)
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def stop(self, grace_s: float = 10.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        if self.health_server is not None:
            self.health_server.stop(0)
        self.servicer.batcher.close()
        if self.servicer.pass_trace is not None:
            self.servicer.pass_trace.close()

    def wait(self) -> None:
        self.server.wait_for_termination()
