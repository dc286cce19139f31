"""One verification round on the target: validate, (re-)prefill if needed, forward, accept, roll back.

Called by the gRPC servicer on each request's thread (rounds of many sessions batch in the backend); calls
the shared rules in dsd_spec.sampling: greedy, coupled sampling (point-mass drafts, the default) or
rejection sampling (drafts that send their q).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from dsd_runtime.common import seeding
from dsd_runtime.errors import InvalidRequest
from dsd_runtime.target.backend import TargetBackend
from dsd_runtime.target.sessions import Session, SessionStore
from dsd_spec import sampling
from dsd_spec.sampling import SamplingParams


@dataclass(frozen=True)
class VerifyInput:
    session_id: str
    committed_len: int
    context: list[int]
    draft_tokens: list[int]
    # One (token_ids, probs) support per draft token when the draft sampled; empty for point masses.
    draft_probs: list[tuple[list[int], list[float]]]
    params: SamplingParams
    seed: int
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first


@dataclass(frozen=True)
class VerifyOutput:
    need_context: bool
    num_accepted: int = 0
    next_token: int = 0
    reprefilled: bool = False
    seconds: float = 0.0
    logprobs: tuple[TokenLogprob, ...] = ()


MAX_TOP_LOGPROBS = 20  # OpenAI's limit for chat `top_logprobs`


class Verifier:
    def __init__(self, backend: TargetBackend, store: SessionStore, max_window: int) -> None:
        self.backend = backend
        self.store = store
        self.max_window = max_window
        self.reprefills = 0

    def validate(self, req: VerifyInput) -> None:
        vocab = self.backend.vocab_size
        if not req.session_id:
            raise InvalidRequest("session_id is empty", "session_id")
        if req.committed_len < 1:
            raise InvalidRequest("committed_len must be >= 1 (the prompt is never empty)", "committed_len")
        if len(req.draft_tokens) > self.max_window:
            raise InvalidRequest(
                f"window of {len(req.draft_tokens)} draft tokens exceeds this target's max window "
                f"{self.max_window}", "draft_tokens")
        for name, ids in (("context", req.context), ("draft_tokens", req.draft_tokens)):
            bad = next((t for t in ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise InvalidRequest(f"{name} contains token id {bad} outside the vocabulary [0, {vocab})", name)
        if req.context and len(req.context) != req.committed_len:
            raise InvalidRequest(
                f"context has {len(req.context)} tokens but committed_len is {req.committed_len}", "context")
        end = req.committed_len + len(req.draft_tokens) + 1
        if end > self.backend.max_context:
            raise InvalidRequest(
                f"sequence would reach {end} tokens, beyond the target's context of {self.backend.max_context}",
                "committed_len")
        if req.top_logprobs > MAX_TOP_LOGPROBS:
            raise InvalidRequest(f"top_logprobs is {req.top_logprobs}, at most {MAX_TOP_LOGPROBS}", "top_logprobs")
        if req.draft_probs:
            self._validate_probs(req)

    def _validate_probs(self, req: VerifyInput) -> None:
        if len(req.draft_probs) != len(req.draft_tokens):
            raise InvalidRequest(
                f"{len(req.draft_probs)} draft distributions for {len(req.draft_tokens)} draft tokens",
                "draft_probs")
        for i, ((ids, probs), tok) in enumerate(zip(req.draft_probs, req.draft_tokens, strict=True)):
            if len(ids) != len(probs) or not ids:
                raise InvalidRequest(f"draft_probs[{i}]: token_ids and probs differ in length or are empty",
                                     "draft_probs")
            if any(not 0 <= t < self.backend.vocab_size for t in ids) or not all(0 <= p <= 1 for p in probs):
                raise InvalidRequest(f"draft_probs[{i}]: token id outside the vocabulary, or a probability "
                                     "outside [0, 1] (NaN included)", "draft_probs")
            if len(set(ids)) != len(ids):
                raise InvalidRequest(f"draft_probs[{i}]: a token id appears twice", "draft_probs")
            if not abs(sum(probs) - 1.0) <= 1e-3:
                raise InvalidRequest(f"draft_probs[{i}] sums to {sum(probs):.6f}, not 1", "draft_probs")
            if tok not in ids:
                raise InvalidRequest(f"draft token {tok} at position {i} is outside its own distribution",
                                     "draft_probs")

    def verify(self, req: VerifyInput) -> VerifyOutput:
        """Transactional: the session changes only after the whole round succeeded (a retry is safe).

        Runs on the caller's thread; the forward pass joins whatever other sessions' rounds are batched with
        it. Only the session's own state is touched, so rounds of different sessions run concurrently.
        """
        self.validate(req)
        start = time.perf_counter()
        session = self.store.begin(req.session_id)
        try:
            return self._round(req, session, start)
        finally:
            if session is not None:
                self.store.end(session)

    def _round(self, req: VerifyInput, session: Session | None, start: float) -> VerifyOutput:
        if session is not None and req.committed_len < session.committed_len and (
                not req.context or session.tokens[:req.committed_len] == req.context):
            session.truncate(req.committed_len)  # the draft holds a prefix of what we hold: no re-prefill
        reprefilled = session is None or session.committed_len != req.committed_len
        if reprefilled and not req.context:
            return VerifyOutput(need_context=True)
        gamma = len(req.draft_tokens)
        if reprefilled:
            self.store.admit_check(req.session_id, req.committed_len + gamma + 1)
            seq, logits = self.backend.prefill(req.context, req.draft_tokens)  # [gamma+1, V]
        else:
            assert session is not None
            self.store.reserve(session, gamma + 1)
            seq = session.seq
            # The pending token (last round's recovered/bonus token, not yet in the cache) and the window.
            logits = self.backend.verify(seq, session.pending_token, req.draft_tokens)
        try:
            verdict = self._accept(req, logits)
            logprobs = self._logprobs(req, logits, verdict) if req.logprobs else ()
        except BaseException:
            if not reprefilled:  # undo exactly what the forward pass added
                self.backend.rollback(seq, gamma + 1)
            raise
        self.backend.rollback(seq, gamma - verdict.num_accepted)
        if reprefilled:
            session = Session(req.session_id, seq, req.committed_len, req.context[-1], list(req.context))
            self.store.admit(session)
            self.reprefills += 1
        assert session is not None
        session.committed_len = req.committed_len + verdict.num_accepted + 1
        session.pending_token = verdict.next_token
        session.tokens.extend([*req.draft_tokens[: verdict.num_accepted], verdict.next_token])
        return VerifyOutput(False, verdict.num_accepted, verdict.next_token, reprefilled,
                            time.perf_counter() - start, logprobs)

    def _accept(self, req: VerifyInput, logits: torch.Tensor) -> sampling.Verdict:
        drafts = torch.tensor(req.draft_tokens, dtype=torch.long)
        if req.params.greedy:
            return sampling.verify_greedy(logits, drafts)
        probs = sampling.warp(logits, req.params)
        if req.draft_probs:  # an independently sampling draft sent its q: classical rejection sampling
            gen = seeding.position_generator(req.seed, req.committed_len, "target")
            return sampling.verify_rejection(probs, drafts, self._dense_draft_probs(req), gen)
        noise = seeding.gumbel_noise(req.seed, req.committed_len, len(req.draft_tokens) + 1, self.backend.vocab_size)
        return sampling.verify_coupled(probs, drafts, noise)

    @staticmethod
    def _logprobs(req: VerifyInput, logits: torch.Tensor, verdict: sampling.Verdict) -> tuple[TokenLogprob, ...]:
        n = verdict.num_accepted
        emitted = [*req.draft_tokens[:n], verdict.next_token]
        logp = torch.log_softmax(logits[: n + 1].float(), dim=-1)  # [n+1, V] raw distribution
        chosen = logp.gather(1, torch.tensor(emitted).unsqueeze(1)).squeeze(1).tolist()
        tops: list[tuple[tuple[int, float], ...]] = [()] * (n + 1)
        if req.top_logprobs:
            top = torch.topk(logp, req.top_logprobs, dim=-1)
            tops = [tuple(zip(ids, vals, strict=True))
                    for ids, vals in zip(top.indices.tolist(), top.values.tolist(), strict=True)]
        return tuple(TokenLogprob(t, lp, top) for t, lp, top in zip(emitted, chosen, tops, strict=True))

    def _dense_draft_probs(self, req: VerifyInput) -> torch.Tensor:
        q = torch.zeros(len(req.draft_probs), self.backend.vocab_size)  # [gamma, vocab]
        for i, (ids, probs) in enumerate(req.draft_probs):
            q[i, torch.tensor(ids, dtype=torch.long)] = torch.tensor(probs, dtype=torch.float32)
        return q
