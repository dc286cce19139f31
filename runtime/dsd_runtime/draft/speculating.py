"""The speculation loop of one request: propose a window, verify it on the target, commit, repeat.

Blocking: draft gamma tokens, send, wait. Pipelined: while a verify is in flight, keep drafting as if the
whole window will be accepted; if the target accepts everything and its bonus token equals the draft's own
next guess, the extra drafts become the start of the next window, otherwise they are thrown away. Both
modes commit exactly the tokens the target chose, so their greedy output is identical.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from concurrent import futures
from dataclasses import dataclass, field

from dsd_runtime.common.lm import ForwardModel
from dsd_runtime.common.proto import dsd_pb2
from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.drafting import Drafter, DraftingState, Window
from dsd_runtime.draft.proposing import Proposal, Proposer
from dsd_runtime.draft.windowing import WindowController
from dsd_runtime.errors import InvalidRequest, Overloaded, TargetUnavailable
from dsd_runtime.metrics import MAX_POSITION_LABELS, DraftMetrics
from dsd_spec import Ema
from dsd_spec.sampling import SamplingParams

DEFAULT_MAX_WINDOW = 32  # the target's default (Info.max_window) until the engine reads the real one


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    max_tokens: int
    params: SamplingParams = field(default_factory=SamplingParams)
    seed: int = 0
    stop_token_ids: frozenset[int] = frozenset()
    logprobs: bool = False  # ask the target for each emitted token's logprob (+ top_logprobs alternatives)
    top_logprobs: int = 0


@dataclass
class GenerationStats:
    """Per-request statistics (aggregated into Prometheus off the per-token path)."""

    rounds: int = 0
    proposed: int = 0
    accepted: int = 0
    reprefills: int = 0
    failovers: int = 0  # rounds resent to another target replica
    draft_steps: int = 0
    draft_seconds: float = 0.0
    wasted_drafts: int = 0
    completion_tokens: int = 0  # tokens returned to the client (excludes a final stop token)
    # Output tokens by who produced them: "model", "lookup", "suffix" (accepted drafts) and "target"
    # (the recovered or bonus token of every round, and every token of an empty-window round).
    tokens_by_source: dict[str, int] = field(default_factory=dict)
    target_only_tokens: int = 0  # of the "target" tokens: those streamed in target-only mode
    accepted_per_position: list[int] = field(default_factory=lambda: [0] * MAX_POSITION_LABELS)
    reached_per_position: list[int] = field(default_factory=lambda: [0] * MAX_POSITION_LABELS)
    # Target-only steps by the window the target drafted for itself (0: none), and that drafting's acceptance:
    # what DSD-Sim needs to replay one request (bench/capacity_sim.py), as the servers' counters give a wave's.
    self_steps_by_window: dict[int, int] = field(default_factory=dict)
    self_accepted_per_position: list[int] = field(default_factory=lambda: [0] * MAX_POSITION_LABELS)
    self_reached_per_position: list[int] = field(default_factory=lambda: [0] * MAX_POSITION_LABELS)

    @property
    def acceptance(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens per round (accepted + 1), vLLM's 'mean acceptance length'."""
        return 1.0 + self.accepted / self.rounds if self.rounds else 0.0

    def count_self_step(self, window: int, accepted: int) -> None:
        """A target-only step that verified `window` self-drafted tokens and accepted `accepted` of them."""
        self.self_steps_by_window[window] = self.self_steps_by_window.get(window, 0) + 1
        _count_positions(self.self_accepted_per_position, self.self_reached_per_position, window, accepted)


def _count_positions(accepted_at: list[int], reached_at: list[int], window: int, accepted: int) -> None:
    """Position i of a window is reached when the i - 1 before it were accepted (the metrics' convention)."""
    for i in range(min(accepted, MAX_POSITION_LABELS)):
        accepted_at[i] += 1
    for i in range(min(accepted + 1, window, MAX_POSITION_LABELS)):
        reached_at[i] += 1


class _ReplicaLost(Exception):
    """A target-only stream's replica failed and the client moved to another one."""


class Cancelled(Exception):
    pass


class Speculator:
    """`model` None: a draft server without a draft model (model-free proposers only; `max_context` then
    bounds the sequence). `drafting`: state shared by the requests of one server (the cross-request cache)."""

    def __init__(self, model: ForwardModel | None, client: TargetClient, window: WindowController,
                 metrics: DraftMetrics | None = None, drafting: DraftingState | None = None,
                 max_context: int = 2048) -> None:
        self.model = model
        self.client = client
        self.window = window
        self.metrics = metrics
        self.drafting = drafting or DraftingState()
        self.max_context = max_context
        self.max_window = DEFAULT_MAX_WINDOW  # the target's largest window (Info.max_window)
        # The proposers the target drafts with in a Decode stream (Info.self_drafting): windows it would make
        # itself are left to it (draft.drafting).
        self.target_self_drafting: frozenset[str] = frozenset()

    def generate(self, req: GenerationRequest, cancel: threading.Event | None = None,
                 stats: GenerationStats | None = None,
                 logprobs: list[dsd_pb2.TokenLogprob] | None = None) -> Iterator[int]:
        """Yields output tokens as they are committed (never more than max_tokens; stops after a stop token).

        With `req.logprobs`, each token's TokenLogprob is appended to `logprobs` before the token is yielded.
        """
        if not req.prompt_ids:
            raise InvalidRequest("the prompt is empty", "prompt")
        stats = stats if stats is not None else GenerationStats()
        cancel = cancel or threading.Event()
        session_id = uuid.uuid4().hex
        proposer = Proposer(self.model, req.params, req.seed) if self.model is not None else None
        cfg = self.window.config
        drafter = Drafter(cfg.proposer if cfg.mode == "speculate" else "none", proposer, self.window, self.drafting,
                          self.target_self_drafting)
        committed = list(req.prompt_ids)
        carried: list[Proposal] = []  # surviving pipelined drafts: the start of the next window
        send_context = True
        produced = 0
        max_context = self.model.max_context if self.model is not None else self.max_context
        pending: Window | None = None  # the window that ended a target-only stretch
        try:
            while produced < req.max_tokens:
                if cancel.is_set():
                    raise Cancelled
                cfg = self.window.config
                # First round: an empty window, so the first token costs only the target's prefill (TTFT); in
                # pipelined mode the draft prefills and drafts meanwhile.
                first_round = send_context
                cap = self._window_cap(req, produced, committed, max_context)
                planned = Window([], "none") if first_round else pending or drafter.plan(committed, carried, cap)
                pending = None
                if planned.source == "none" and not first_round:
                    # Nothing pays: the target decodes alone and streams (no round trip per token) until a
                    # proposal beats it; it hands back that proposal, or None when the request is done.
                    before = len(committed)
                    pending = yield from self._decode_alone(session_id, committed, req, drafter, stats, logprobs,
                                                            cancel, max_context)
                    produced += len(committed) - before
                    if pending is None:
                        return
                    carried = []
                    continue
                window = planned.proposals
                gamma = len(window)
                reused = min(len(carried), gamma) if planned.source == "model" else 0
                for p in window[reused:] if planned.source == "model" else ():
                    stats.draft_steps += 1
                    stats.draft_seconds += p.seconds
                    if self.metrics is not None:
                        self.metrics.draft_step.observe(p.seconds)
                request = self._request(session_id, committed, window, req, send_context)
                t0 = time.perf_counter()
                future = self.client.verify_async(request)
                extra: list[Proposal] = []
                # The first round always drafts ahead: the draft's own prefill is needed anyway. Only the draft
                # model drafts ahead (a model-free proposal costs nothing to redo).
                model_round = planned.source == "model" or (first_round and drafter.has_model)
                if proposer is not None and cfg.pipelined and model_round and (
                        first_round or (gamma and self.window.draft_ahead(gamma))):
                    speculative = committed + [p.token for p in window]
                    limit = (cfg.gamma if first_round else gamma) + 1
                    while not future.done() and len(extra) < limit and not cancel.is_set():
                        extra.append(proposer.propose(speculative + [p.token for p in extra]))
                # Built only if needed (a lost session or another replica): it copies the whole context.
                resend = functools.partial(self._request, session_id, committed, window, req, True)
                response = self._result(future, resend, stats)
                round_trip_s = time.perf_counter() - t0
                send_context = False
                self.window.observe_price(response.position_price_seconds)
                if self.metrics is not None:
                    self.metrics.position_price.set(response.position_price_seconds)
                n, nxt = response.num_accepted, response.next_token
                step_s = stats.draft_seconds / stats.draft_steps if stats.draft_steps else None
                if not first_round:  # the prefill round's wait is a prefill's, not a round's
                    drafter.observe(planned, n, step_s, round_trip_s)
                self._account(stats, planned.source, gamma, n, round_trip_s)
                new_tokens = [p.token for p in window[:n]] + [nxt]
                survived = n == gamma and bool(extra) and extra[0].token == nxt
                carried = extra[1:] if survived else []
                stats.wasted_drafts += 0 if survived else len(extra)
                stats.draft_steps += len(extra)
                stats.draft_seconds += sum(p.seconds for p in extra)
                committed.extend(new_tokens)
                for i, tok in enumerate(new_tokens):
                    produced += 1
                    if logprobs is not None and req.logprobs:
                        logprobs.append(response.logprobs[i])
                    yield tok
                    if tok in req.stop_token_ids or produced >= req.max_tokens:
                        return
        finally:
            self.client.close_session(session_id)

    def _result(self, future: futures.Future[dsd_pb2.VerifyResponse],
                with_context: Callable[[], dsd_pb2.VerifyRequest], stats: GenerationStats) -> dsd_pb2.VerifyResponse:
        """A round's answer. A target that lost the session gets the context again; a replica that is down or
        full is left for the next one (the round is resent there with the context: a re-prefill)."""
        tried = 1
        while True:
            try:
                response = future.result()
            except (TargetUnavailable, Overloaded) as e:
                if tried >= len(self.client.addresses) or not self.client.failover(getattr(e, "address", "")):
                    raise
                tried += 1
                stats.failovers += 1
                future = self.client.verify_async(with_context())
                continue
            if not response.need_context:
                return response
            stats.reprefills += 1
            response = self.client.verify_async(with_context()).result()
            if response.need_context:
                raise InvalidRequest("target asked for context it was just sent")
            return response

    def _window_cap(self, req: GenerationRequest, produced: int, committed: list[int], max_context: int) -> int:
        """The most draft tokens the next round may send: output left, context left, the target's max window."""
        return min(req.max_tokens - produced - 1, max_context - len(committed) - 1, self.max_window)

    def _decode_alone(self, session_id: str, committed: list[int], req: GenerationRequest, drafter: Drafter,
                      stats: GenerationStats, logprobs: list[dsd_pb2.TokenLogprob] | None, cancel: threading.Event,
                      max_context: int) -> Generator[int, None, Window | None]:
        """Target-only mode: yields the target's tokens from a Decode stream, appending them to `committed`.

        After each token the drafter is asked whether a window now beats the target alone (its measured token
        interval); if so the stream is cancelled and that window returned. None: the request is finished.
        """
        prompt_len = len(req.prompt_ids)
        with_context = False
        # Seconds per token of the stream, measured per step (a step ends with the target's own token, after any
        # self-drafted ones it accepted): what the target alone delivers.
        interval = Ema(weight=0.3)
        while True:
            stream = self.client.decode(self._decode_request(session_id, committed, req, with_context))
            address = self.client.address
            last: float | None = None  # when the last step ended
            step_tokens = self_accepted = 0
            try:
                for chunk in self._failing_over(stream, address, stats):
                    if chunk.need_context:
                        if with_context:
                            raise InvalidRequest("target asked for context it was just sent")
                        stats.reprefills += 1
                        with_context = True
                        break
                    committed.append(chunk.token)
                    step_tokens += 1
                    source = f"target-{chunk.source}" if chunk.source else "target"
                    stats.tokens_by_source[source] = stats.tokens_by_source.get(source, 0) + 1
                    stats.target_only_tokens += 1
                    if chunk.source:
                        self_accepted += 1
                    else:
                        stats.count_self_step(chunk.self_window, self_accepted)
                        self_accepted = 0
                    if self.metrics is not None:
                        self.metrics.target_only_tokens.inc()
                    if logprobs is not None and req.logprobs:
                        logprobs.append(chunk.logprob)
                    yield chunk.token
                    produced = len(committed) - prompt_len
                    if chunk.token in req.stop_token_ids or produced >= req.max_tokens:
                        if chunk.source:  # the step ends on a self-drafted token: its own token never comes
                            stats.count_self_step(chunk.self_window, self_accepted)
                        return None
                    if cancel.is_set():
                        raise Cancelled
                    if chunk.source:
                        continue  # the step's own token is still to come
                    now = time.perf_counter()
                    if last is not None:
                        interval.update((now - last) / step_tokens)
                        if self.metrics is not None:
                            self.metrics.target_only_interval.observe((now - last) / step_tokens)
                    last, step_tokens = now, 0
                    if interval.value:
                        cap = self._window_cap(req, produced, committed, max_context)
                        planned = drafter.plan(committed, [], cap, alone_goodput=1.0 / interval.value)
                        if planned.source != "none":
                            return planned
                else:
                    return None  # the stream ended: max_tokens reached on the target's side
            except _ReplicaLost:
                with_context = True  # the next replica has never seen this session
            finally:
                stream.cancel()

    def _failing_over(self, stream: Iterator[dsd_pb2.DecodeChunk], address: str,
                      stats: GenerationStats) -> Iterator[dsd_pb2.DecodeChunk]:
        """The stream's chunks; a replica that fails mid-stream is left for the next one (_ReplicaLost)."""
        try:
            yield from stream
        except (TargetUnavailable, Overloaded):
            if stats.failovers >= len(self.client.addresses) or not self.client.failover(address):
                raise
            stats.failovers += 1
            raise _ReplicaLost from None

    def _decode_request(self, session_id: str, committed: list[int], req: GenerationRequest,
                        with_context: bool) -> dsd_pb2.DecodeRequest:
        """The stream drafts for itself with the draft's model-free proposer (lookup or suffix when told, else
        the target's hybrid of both where it has one), up to the window bound the operator's loop sets.

        `--proposer none` means no drafting at all: the target alone. The operator's mode `off` only stops the
        draft's own windows: the target's self-drafting costs no round trip and stays.
        """
        cfg = self.window.config
        if cfg.proposer in ("lookup", "suffix", "none"):
            proposer = cfg.proposer
        else:
            proposer = "hybrid" if "hybrid" in self.target_self_drafting else "suffix"
        return dsd_pb2.DecodeRequest(
            session_id=session_id, committed_len=len(committed), context=committed if with_context else [],
            sampling=Speculator._sampling(req), max_tokens=req.max_tokens - (len(committed) - len(req.prompt_ids)),
            stop_token_ids=sorted(req.stop_token_ids), logprobs=req.logprobs, top_logprobs=req.top_logprobs,
            proposer=proposer, max_window=cfg.gamma_max)

    @staticmethod
    def _sampling(req: GenerationRequest) -> dsd_pb2.SamplingParams:
        return dsd_pb2.SamplingParams(temperature=0.0 if req.params.greedy else req.params.temperature,
                                      top_k=req.params.top_k, top_p=req.params.top_p, seed=req.seed)

    @staticmethod
    def _request(session_id: str, committed: list[int], window: list[Proposal], req: GenerationRequest,
                 with_context: bool) -> dsd_pb2.VerifyRequest:
        return dsd_pb2.VerifyRequest(
            session_id=session_id, committed_len=len(committed), context=committed if with_context else [],
            draft_tokens=[p.token for p in window], sampling=Speculator._sampling(req),
            logprobs=req.logprobs, top_logprobs=req.top_logprobs,
        )

    def _account(self, stats: GenerationStats, source: str, gamma: int, n: int, round_trip_s: float) -> None:
        """Every round yields n accepted tokens from `source` and one from the target (recovered or bonus)."""
        if gamma:
            stats.tokens_by_source[source] = stats.tokens_by_source.get(source, 0) + n
        stats.tokens_by_source["target"] = stats.tokens_by_source.get("target", 0) + 1
        if not gamma:
            if self.metrics is not None:
                self.metrics.empty_rounds.inc()
            return
        stats.rounds += 1
        stats.proposed += gamma
        stats.accepted += n
        if self.metrics is not None:
            self.metrics.proposed_by_source[source].inc(gamma)
            self.metrics.accepted_by_source[source].inc(n)
        _count_positions(stats.accepted_per_position, stats.reached_per_position, gamma, n)
        if self.metrics is not None:
            m = self.metrics
            m.rounds.inc()
            m.draft_proposed.inc(gamma)
            m.draft_accepted.inc(n)
            for i in range(min(n, MAX_POSITION_LABELS)):
                m.accepted_at[i].inc()
            for i in range(min(n + 1, gamma, MAX_POSITION_LABELS)):
                m.reached_at[i].inc()
            m.verify_rtt.observe(round_trip_s)
            m.gamma.set(gamma)
