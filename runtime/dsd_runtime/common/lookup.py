"""Model-free proposers: continuations found in text the request (or earlier requests) already contains.

Both return a Candidate: tokens plus, per token, the empirical probability that it is the continuation
(the fraction of matching places in the text that continue with it, given the tokens before it). The
drafter (draft.drafting) calibrates those confidences against measured acceptance and sends as much of the
candidate as the goodput model says pays. Proposals are point masses, so they are exact under greedy and
coupled sampling alike.

* PromptLookup: n-gram lookup over prompt + output (HF's `prompt_lookup_num_tokens`, vLLM's n-gram proposer):
  the most recent earlier occurrence of the last n tokens (n = max_ngram..1), then what followed it.
* SuffixProposer: SuffixDecoding's idea (arXiv 2411.04975) over the request plus a bounded cross-request
  SuffixCache: the longest suffix of the context that occurs in that text, then a walk down the implicit
  suffix tree, at each depth taking the most frequent next token among the surviving matches; the walk stops
  when that token's frequency drops under `min_confidence` or the match is too short to support more
  (draft length grows with match length). The tree is never built: the matches are kept as index arrays.

All the work is vectorised numpy over the token arrays; Python loops run over match lengths and depths only.
Shared by both roles: a draft server drafts with them (draft.drafting), and the target drafts for itself in
target-only mode (target.self_drafting). `Calibration` learns how far each proposer's confidences can be
trusted, by match length.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SEPARATOR = -1  # between documents in a SuffixCache: no match or continuation crosses it
CALIBRATION_DECAY = 0.98


@dataclass(frozen=True)
class Candidate:
    tokens: tuple[int, ...] = ()
    confidence: tuple[float, ...] = ()  # P(token i | tokens < i) in the text the match came from
    match_length: int = 0

    def __len__(self) -> int:
        return len(self.tokens)


class PromptLookup:
    """n-gram lookup over the request's own tokens."""

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram

    def propose(self, history: np.ndarray, max_tokens: int) -> Candidate:
        """history: [L] int64 (prompt + committed output)."""
        for n in range(self.max_ngram, self.min_ngram - 1, -1):
            if len(history) <= n or max_tokens <= 0:
                continue
            # Windows that end before the last token, so each has a continuation: rows i = 0 .. L-1-n.
            hits = np.flatnonzero((sliding_window_view(history[:-1], n) == history[-n:]).all(axis=1))
            if hits.size:
                ends = hits + n  # index of the continuation's first token, per match
                tokens = history[ends[-1]: ends[-1] + max_tokens]  # the most recent match
                return Candidate(tuple(int(t) for t in tokens), _walk_confidence(history, ends, tokens), n)
        return Candidate()


def _walk_confidence(text: np.ndarray, starts: np.ndarray, tokens: np.ndarray) -> tuple[float, ...]:
    """For a chosen continuation, P(token d | tokens < d) over all matches that agreed so far."""
    out: list[float] = []
    pos = starts
    for tok in tokens:
        pos = pos[pos < len(text)]
        if not pos.size:
            break
        agree = text[pos] == tok
        out.append(float(agree.mean()))
        pos = pos[agree] + 1
    return tuple(out) + (0.0,) * (len(tokens) - len(out))


class SuffixCache:
    """Token sequences of recent requests (prompt + output), bounded in tokens, oldest dropped first.

    Shared by every request of a draft server; `text()` is one array with separators, rebuilt lazily.
    """

    def __init__(self, max_tokens: int = 100_000) -> None:
        self.max_tokens = max_tokens
        self._docs: deque[np.ndarray] = deque()
        self._size = 0
        self._text: np.ndarray | None = np.empty(0, dtype=np.int64)
        self._lock = threading.Lock()

    def add(self, tokens: Sequence[int]) -> None:
        doc = np.asarray(tokens, dtype=np.int64)[-self.max_tokens:]
        with self._lock:
            self._docs.append(doc)
            self._size += len(doc) + 1
            while self._size > self.max_tokens and len(self._docs) > 1:
                self._size -= len(self._docs.popleft()) + 1
            self._text = None

    def text(self) -> np.ndarray:
        with self._lock:
            if self._text is None:
                parts = [p for d in self._docs for p in (d, np.array([SEPARATOR]))]
                self._text = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
            return self._text


class SuffixProposer:
    """Longest suffix match over the request + a SuffixCache, continued by frequency."""

    def __init__(self, cache: SuffixCache | None = None, max_match: int = 16, min_match: int = 2,
                 min_confidence: float = 0.4, tokens_per_matched: float = 1.0) -> None:
        self.cache = cache or SuffixCache()
        self.max_match = max_match
        self.min_match = min_match
        self.min_confidence = min_confidence  # below it a continuation is a guess: stop the draft there
        # Draft length grows with match length (SuffixDecoding's alpha * p): a 2-token match supports 2 + ...
        self.tokens_per_matched = tokens_per_matched

    def propose(self, history: np.ndarray, max_tokens: int) -> Candidate:
        if len(history) < self.min_match or max_tokens <= 0:
            return Candidate()
        # The request's own text comes last, so its matches are the most recent; the final suffix itself is
        # excluded by requiring a continuation.
        text = np.concatenate([self.cache.text(), history])
        ends, m = self._longest_match(text, history)
        if not ends.size:
            return Candidate()
        limit = min(max_tokens, max(1, round(self.tokens_per_matched * m) + 1))
        tokens: list[int] = []
        confidence: list[float] = []
        pos = ends + 1
        for _ in range(limit):
            pos = pos[pos < len(text)]
            nxt = text[pos]
            keep = nxt != SEPARATOR
            pos, nxt = pos[keep], nxt[keep]
            if not pos.size:
                break
            values, counts = np.unique(nxt, return_counts=True)
            best = int(np.argmax(counts))
            share = float(counts[best]) / float(pos.size)
            if share < self.min_confidence:
                break
            tokens.append(int(values[best]))
            confidence.append(share)
            pos = pos[nxt == values[best]] + 1
        return Candidate(tuple(tokens), tuple(confidence), m)

    def _longest_match(self, text: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, int]:
        """End indices (last matched token) of the longest suffix of `history` found in `text` with a
        continuation, and that length. Starts from `min_match` tokens and extends backwards on survivors."""
        m = self.min_match
        head = text[:-1]  # text's last token is the history's own: a match must end before it
        if len(head) < m:
            return np.empty(0, dtype=np.int64), 0
        # Positions whose last min_match tokens equal the suffix's: one vector compare per token, on
        # shrinking candidate sets (the first compare is the only full pass over the text).
        ends = np.flatnonzero(head[m - 1:] == history[-1]) + m - 1  # [matches] index of the last matched token
        for back in range(1, m):
            ends = ends[head[ends - back] == history[-1 - back]]
        if not ends.size:
            return ends, 0
        while m < min(self.max_match, len(history)):
            back = ends - m
            ok = back >= 0
            cand = ends[ok]
            cand = cand[text[back[ok]] == history[-m - 1]]
            if not cand.size:
                break
            ends, m = cand, m + 1
        return ends, m


class Calibration:
    """Measured / predicted accepted tokens of a model-free proposer (decayed sums, thread-safe)."""

    def __init__(self) -> None:
        self._accepted = 1.0  # a one-token prior at ratio 1: trust the frequencies until measured
        self._predicted = 1.0
        self._lock = threading.Lock()

    @property
    def ratio(self) -> float:
        with self._lock:
            return self._accepted / self._predicted

    def observe(self, accepted: int, predicted: float) -> None:
        with self._lock:
            self._accepted = self._accepted * CALIBRATION_DECAY + accepted
            self._predicted = self._predicted * CALIBRATION_DECAY + predicted


# Calibration buckets by match length: a long match is far more reliable than a one- or two-token one, and
# the many failed guesses of short matches must not talk the drafter out of long ones.
MATCH_BUCKETS = (2, 5)  # <= 2, 3..5, >= 6 tokens matched


def match_bucket(match_length: int) -> int:
    return sum(match_length > b for b in MATCH_BUCKETS)


def calibration_table() -> dict[tuple[str, int], Calibration]:
    """One Calibration per (proposer, match bucket), for a server's model-free proposers."""
    return {(name, b): Calibration() for name in ("lookup", "suffix") for b in range(len(MATCH_BUCKETS) + 1)}


def predicted_accepted(confidence: Sequence[float]) -> float:
    """Expected accepted tokens of a candidate sent whole, by its own confidences: sum_i prod_{j<=i} c_j."""
    predicted, survive = 0.0, 1.0
    for c in confidence:
        survive *= c
        predicted += survive
    return predicted
