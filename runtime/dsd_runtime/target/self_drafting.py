"""Target-only mode's own speculation: each step of a Decode stream verifies a model-free guess of what follows.

Why: a draft hands its request to the target (a Decode stream) when no window of its own pays: open chat with
a weak draft, or a round trip above the crossover. Text that repeats the prompt or earlier requests still
verifies several tokens per forward pass there, on the target itself and with no round trip, which is what
Hugging Face's prompt lookup does in-process. The guess comes from the shared model-free proposers
(dsd_runtime.common.lookup) over the session's committed tokens and, for the suffix proposer, a cache of
recent sessions on this target. How much of it to verify is dsd_spec.best_prefix on the target's own costs:
the seconds of its rounds by positions verified (every session's rounds teach them), each position beyond the
first charged the position price the other sessions of a packed pass pay. Proposals are point masses, so the
stream stays exact under greedy and seeded sampling alike.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsd_runtime.common.lookup import (
    PromptLookup,
    SuffixCache,
    SuffixProposer,
    calibration_table,
    match_bucket,
    predicted_accepted,
)
from dsd_runtime.errors import InvalidRequest
from dsd_spec import VerifyCostModel, WindowEstimator, best_prefix

SELF_DRAFTING_PROPOSERS = ("lookup", "suffix", "hybrid")  # Info.self_drafting; hybrid: the better of both
PROPOSERS = ("none", *SELF_DRAFTING_PROPOSERS)  # DecodeRequest.proposer ("" is "none")
# A stream whose candidates the goodput cut to nothing still sends one whole every this many steps: costs and
# calibration that are never refreshed cannot recover from a bad start.
EXPLORE_EVERY = 16


@dataclass(frozen=True)
class SelfWindow:
    tokens: tuple[int, ...] = ()
    source: str = "none"
    predicted_accepted: float = 0.0
    bucket: int = 0


class SelfDrafting:
    """What the target's streams share: the cross-request cache, per-proposer calibration, round costs."""

    def __init__(self, cache_tokens: int = 100_000) -> None:
        self.cache = SuffixCache(cache_tokens) if cache_tokens > 0 else None
        self.calibration = calibration_table()
        self._costs = WindowEstimator()
        self._lock = threading.Lock()

    def observe_round(self, positions: int, seconds: float) -> None:
        """A verified round of any session (not a prefill): `positions` = window + 1 took `seconds`."""
        with self._lock:
            self._costs.observe_wait(positions, seconds)

    def observe_price(self, position_price_s: float) -> None:
        with self._lock:
            self._costs.observe_price(position_price_s)

    def wait_model(self) -> VerifyCostModel | None:
        with self._lock:
            return self._costs.wait_model()

    def remember(self, tokens: Sequence[int]) -> None:
        """A finished session's text, for the suffix proposer of later streams."""
        if self.cache is not None and tokens:
            self.cache.add(tokens)

    def stream(self, proposer: str, max_window: int) -> StreamDrafter:
        name = proposer or "none"
        if name not in PROPOSERS:
            raise InvalidRequest(f"proposer must be one of {PROPOSERS}, got {proposer!r}", "proposer")
        return StreamDrafter(self, name, max_window)


class StreamDrafter:
    """Plans the self-drafted window of each step of one Decode stream."""

    def __init__(self, shared: SelfDrafting, proposer: str, max_window: int) -> None:
        self.shared = shared
        self.proposer = proposer
        self.max_window = max_window
        self._lookup = PromptLookup()
        self._suffix = SuffixProposer(shared.cache or SuffixCache(0))
        self._since_cut = 0

    def plan(self, history: Sequence[int], cap: int) -> SelfWindow:
        """`history`: the session's committed tokens; `cap`: the most tokens this step may draft.

        `hybrid` scores the lookup and the suffix candidate alike and sends the better (lookup finds the most
        recent n-gram, as when editing given code; suffix the longest, most frequent match, as when quoting).
        """
        cap = min(cap, self.max_window)
        if self.proposer == "none" or cap <= 0 or not history:
            return SelfWindow()
        text = np.asarray(history, dtype=np.int64)
        wait = self.shared.wait_model()
        best, best_rate, longest = SelfWindow(), 0.0, SelfWindow()
        for source in ("lookup", "suffix") if self.proposer == "hybrid" else (self.proposer,):
            candidate = (self._lookup if source == "lookup" else self._suffix).propose(text, cap)
            if not len(candidate):
                continue
            bucket = match_bucket(candidate.match_length)
            if len(candidate) > len(longest.tokens):
                longest = _window(candidate.tokens, candidate.confidence, source, bucket)
            if wait is None:
                continue  # no costs measured yet: the longest candidate goes whole
            k, rate = best_prefix(candidate.confidence, self.shared.calibration[(source, bucket)].ratio, wait)
            if k and rate > best_rate:
                best = _window(candidate.tokens[:k], candidate.confidence[:k], source, bucket)
                best_rate = rate
        if wait is None:
            return longest
        self._since_cut = self._since_cut + 1 if longest.tokens and not best.tokens else 0
        if self._since_cut >= EXPLORE_EVERY:
            best, self._since_cut = longest, 0
        return best

    def observe(self, window: SelfWindow, num_accepted: int) -> None:
        if window.tokens:
            self.shared.calibration[(window.source, window.bucket)].observe(num_accepted, window.predicted_accepted)


def _window(tokens: Sequence[int], confidence: Sequence[float], source: str, bucket: int) -> SelfWindow:
    return SelfWindow(tuple(tokens), source, predicted_accepted(confidence), bucket)
