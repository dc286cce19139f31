"""One verification round on the target: validate, (re-)prefill if needed, forward, accept, roll back.

Called by the gRPC servicer under the compute lock; calls the shared rules in dsd_spec.sampling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from dsd_runtime.common import seeding
from dsd_runtime.common.lm import CausalLM
from dsd_runtime.errors import InvalidRequest
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


@dataclass(frozen=True)
class VerifyOutput:
    need_context: bool
    num_accepted: int = 0
    next_token: int = 0
    reprefilled: bool = False
    seconds: float = 0.0


class Verifier:
    def __init__(self, model: CausalLM, store: SessionStore, max_window: int) -> None:
        self.model = model
        self.store = store
        self.max_window = max_window
        self.reprefills = 0

    def validate(self, req: VerifyInput) -> None:
        vocab = self.model.vocab_size
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
        if end > self.model.max_context:
            raise InvalidRequest(
                f"sequence would reach {end} tokens, beyond the target's context of {self.model.max_context}",
                "committed_len")
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
            if any(not 0 <= t < self.model.vocab_size for t in ids) or any(p < 0 for p in probs):
                raise InvalidRequest(f"draft_probs[{i}]: token id outside the vocabulary or negative prob",
                                     "draft_probs")
            if abs(sum(probs) - 1.0) > 1e-3:
                raise InvalidRequest(f"draft_probs[{i}] sums to {sum(probs):.6f}, not 1", "draft_probs")
            if tok not in ids:
                raise InvalidRequest(f"draft token {tok} at position {i} is outside its own distribution",
                                     "draft_probs")

    def _prefill(self, req: VerifyInput) -> Session:
        seq = self.model.new_sequence()
        session = Session(req.session_id, seq, req.committed_len, req.context[-1])
        self.store.admit(session, req.committed_len + len(req.draft_tokens))
        self.reprefills += 1
        return session

    def verify(self, req: VerifyInput) -> VerifyOutput:
        self.validate(req)
        start = time.perf_counter()
        session = self.store.get(req.session_id)
        reprefilled = False
        if session is None or session.committed_len != req.committed_len:
            if not req.context:
                return VerifyOutput(need_context=True)
            session = self._prefill(req)
            reprefilled = True
        else:
            self.store.reserve(session, len(req.draft_tokens) + 1)
        gamma = len(req.draft_tokens)
        # A (re-)prefill runs the whole context and the window in ONE forward pass; otherwise the pending token
        # (last round's recovered/bonus token, not yet in the cache) and the window.
        fed = [*req.context, *req.draft_tokens] if reprefilled else [session.pending_token, *req.draft_tokens]
        logits = self.model.forward(session.seq, fed, keep_last=gamma + 1)  # [gamma+1, V]
        drafts = torch.tensor(req.draft_tokens, dtype=torch.long)
        if req.params.greedy:
            verdict = sampling.verify_greedy(logits, drafts)
        else:
            probs = sampling.warp(logits, req.params)
            q = self._dense_draft_probs(req) if req.draft_probs else None
            gen = seeding.position_generator(req.seed, req.committed_len, "target")
            verdict = sampling.verify_rejection(probs, drafts, q, gen)
        CausalLM.rollback(session.seq, gamma - verdict.num_accepted)
        session.committed_len += verdict.num_accepted + 1
        session.pending_token = verdict.next_token
        return VerifyOutput(False, verdict.num_accepted, verdict.next_token, reprefilled,
                            time.perf_counter() - start)

    def _dense_draft_probs(self, req: VerifyInput) -> torch.Tensor:
        q = torch.zeros(len(req.draft_probs), self.model.vocab_size)  # [gamma, vocab]
        for i, (ids, probs) in enumerate(req.draft_probs):
            q[i, torch.tensor(ids, dtype=torch.long)] = torch.tensor(probs, dtype=torch.float32)
        return q
