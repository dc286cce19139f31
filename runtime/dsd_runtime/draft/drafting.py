"""Which proposer drafts each round, and how much: the hybrid drafting of a request.

Called by draft.speculating once per round. Proposers (chosen once, at construction, by `WindowConfig.proposer`):
  model   the draft model (draft.proposing), window from the WindowController (static or adaptive);
  lookup  n-gram lookup over prompt + output (common.lookup.PromptLookup);
  suffix  suffix match over the request + the server's cross-request cache (common.lookup.SuffixProposer);
  hybrid  each round: a suffix match when it pays, else the draft model when it pays, else nothing: the target
          decodes alone (target-only mode, a Decode stream) until a proposal pays again;
  none    no drafting anywhere: the target decodes alone, and its streams do not draft for themselves either
          (the operator's speculation mode "off" plans like none but keeps the target's self-drafting).
A target that drafts for itself in target-only mode (Info.self_drafting) makes any model-free window it can
reproduce from the request's own tokens with no round trip, so such windows are left to it: the request streams
instead. The draft sends a model-free window only when the target cannot make it (a suffix match that needs this
draft server's cross-request cache) or does not self-draft.
"Pays" is dsd_spec's goodput model on measured costs: the wait for k verified positions (network + target),
the draft model's step time and per-position acceptance, and the model-free candidates' own continuation
frequencies calibrated by their measured acceptance. Every proposal is a point mass, so all of it is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsd_runtime.common.lookup import (
    Candidate,
    PromptLookup,
    SuffixCache,
    SuffixProposer,
    calibration_table,
    match_bucket,
    predicted_accepted,
)
from dsd_runtime.draft.proposing import Proposal, Proposer
from dsd_runtime.draft.windowing import PROPOSERS, WindowController
from dsd_spec import best_prefix

SOURCES = ("model", "lookup", "suffix")  # where a window's tokens came from ("none": an empty window)
# Try the draft model (hybrid), or send a model-free candidate the goodput cut to nothing, at least once every
# this many rounds: statistics that are never refreshed cannot recover from a bad start.
EXPLORE_EVERY = 16


@dataclass(frozen=True)
class Window:
    proposals: list[Proposal]
    source: str  # one of SOURCES, or "none"
    predicted_accepted: float = 0.0  # model-free windows: sum_i prod_{j<=i} confidence_j
    bucket: int = 0  # model-free windows: match_bucket of the match they came from


class DraftingState:
    """What all requests of a draft server share: the cross-request cache and the proposers' calibration."""

    def __init__(self, cache_tokens: int = 100_000) -> None:
        self.cache = SuffixCache(cache_tokens)
        self.calibration = calibration_table()


class Drafter:
    """Plans the window of each round of one request."""

    def __init__(self, mode: str, proposer: Proposer | None, window: WindowController, state: DraftingState,
                 target_self_drafting: frozenset[str] = frozenset()) -> None:
        if mode not in PROPOSERS:
            raise ValueError(f"proposer must be one of {PROPOSERS}, got {mode!r}")
        if mode == "model" and proposer is None:
            raise ValueError("proposer 'model' needs a draft model; use 'lookup', 'suffix' or 'hybrid'")
        self.mode = mode
        self.proposer = proposer
        self.window = window
        self.state = state
        self.lookup = PromptLookup()
        self.suffix = SuffixProposer(state.cache)
        self.target_self_drafting = target_self_drafting  # the proposers the target drafts with on its own
        self._request_only = SuffixProposer(SuffixCache(0))  # what the target's suffix proposer sees at least
        self._since_model = 0
        self._since_free = 0  # rounds whose model-free candidate was cut to nothing

    @property
    def has_model(self) -> bool:
        return self.proposer is not None and self.mode in ("model", "hybrid")

    def plan(self, committed: list[int], carried: list[Proposal], cap: int,
             alone_goodput: float | None = None) -> Window:
        """The window for the next round: at most `cap` tokens (remaining output, context, target's max).

        `alone_goodput`: tokens/s of the target decoding alone, when the request is in target-only mode (a
        Decode stream): a window must beat that, counting the stream step it wastes, to be worth leaving the
        stream; no exploration meanwhile.
        """
        if cap <= 0 or self.mode == "none":
            return Window([], "none")
        if self.mode == "model" or (carried and self.has_model):  # pipelined drafts that survived are free
            return self._model_window(committed, carried, min(cap, self.window.next_gamma()))
        streaming = alone_goodput is not None
        # Leaving a stream costs the step the target has already begun for it (cancelled, its tokens truncated):
        # a window sent from a stream must pay for that step as well as its own wait.
        leave_s = 1.0 / alone_goodput if alone_goodput else 0.0
        source = "lookup" if self.mode == "lookup" else "suffix"
        # gamma_max bounds every window: the operator's loop narrows it when long windows stop paying.
        candidate = (self.lookup if source == "lookup" else self.suffix).propose(
            np.asarray(committed, dtype=np.int64), min(cap, self.window.config.gamma_max))
        wait = self.window.wait_model()
        k, free = len(candidate), None
        if wait is not None:
            calibration = self.state.calibration[(source, match_bucket(candidate.match_length))].ratio
            k, free = best_prefix(candidate.confidence, calibration, wait, propose_s=leave_s)
            self._since_free = self._since_free + 1 if len(candidate) and not k else 0
            if self._since_free >= EXPLORE_EVERY and not streaming:  # re-measure what the statistics gave up on
                k, free, self._since_free = len(candidate), None, 0
        if k and self._target_makes(source, committed, candidate.tokens[:k]):
            k, free = 0, None
        baseline = alone_goodput if streaming else (1.0 / wait(1) if wait is not None else None)
        free_pays = bool(k) and (free is None or baseline is None or free > baseline)
        if self.mode != "hybrid" or self.proposer is None:
            return _free_window(candidate, k, source) if free_pays else Window([], "none")
        gamma = min(cap, self.window.next_gamma())
        model = self.window.goodput(gamma)
        self._since_model += 1
        if free_pays and (free is None or model is None or free >= model):
            return _free_window(candidate, k, source)
        # An unmeasured model is tried, but not at the price of leaving a stream.
        use_model = not streaming if model is None else baseline is None or model > baseline
        if use_model or (not streaming and self._since_model >= EXPLORE_EVERY):
            return self._model_window(committed, carried, gamma)
        return Window([], "none")

    def _target_makes(self, source: str, committed: list[int], tokens: tuple[int, ...]) -> bool:
        """Whether the target, drafting for itself in a stream, would propose `tokens` here: lookup reads only
        the request, so always; suffix when the request alone (the target's cache holds more) yields them."""
        if source not in self.target_self_drafting:
            return False
        if source == "lookup":
            return True
        alone = self._request_only.propose(np.asarray(committed, dtype=np.int64), len(tokens))
        return alone.tokens[:len(tokens)] == tokens

    def _model_window(self, committed: list[int], carried: list[Proposal], gamma: int) -> Window:
        assert self.proposer is not None
        self._since_model = 0
        proposals = carried[:gamma]
        while len(proposals) < gamma:
            proposals.append(self.proposer.propose(committed + [p.token for p in proposals]))
        return Window(proposals, "model")

    def observe(self, window: Window, num_accepted: int, draft_step_s: float | None, wait_s: float) -> None:
        gamma = len(window.proposals)
        if window.source == "model":
            self.window.observe(gamma, num_accepted, draft_step_s, wait_s)
            return
        self.window.observe_wait(gamma + 1, wait_s)
        if gamma:
            self.state.calibration[(window.source, window.bucket)].observe(num_accepted, window.predicted_accepted)


def _free_window(candidate: Candidate, k: int, source: str) -> Window:
    if not k:
        return Window([], "none")
    return Window([Proposal(t, 0.0) for t in candidate.tokens[:k]], source,
                  predicted_accepted(candidate.confidence[:k]), match_bucket(candidate.match_length))
