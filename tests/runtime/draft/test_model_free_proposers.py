"""Prompt lookup and suffix proposers: what they propose, with which confidence, and the goodput cut."""

from __future__ import annotations

import numpy as np
import pytest

from dsd_runtime.common.lookup import PromptLookup, SuffixCache, SuffixProposer
from dsd_spec import VerifyCostModel, best_prefix


def h(*tokens: int) -> np.ndarray:
    return np.array(tokens, dtype=np.int64)


@pytest.mark.parametrize(("history", "max_tokens", "tokens", "match"), [
    (h(1, 2, 3, 9, 1, 2, 3), 3, (9, 1, 2), 3),            # trigram match, continuation up to max_tokens
    (h(1, 2, 3, 4, 5, 9, 1, 2, 3, 4, 6, 1, 2, 3), 2, (4, 6), 3),  # the most recent match wins
    (h(5, 6, 7, 8, 6), 2, (7, 8), 1),                      # falls back to a unigram
    (h(1, 2, 3, 4), 3, (), 0),                             # nothing repeats
    (h(7), 3, (), 0),                                      # too short
    (h(1, 2, 1, 2), 0, (), 0),                             # nothing asked for
])
def test_prompt_lookup(history, max_tokens, tokens, match):
    c = PromptLookup().propose(history, max_tokens)
    assert c.tokens == tokens and c.match_length == match
    assert len(c.confidence) == len(c.tokens)


def test_prompt_lookup_confidence_is_the_share_of_matches_that_continue_alike():
    c = PromptLookup(max_ngram=1).propose(h(1, 5, 1, 6, 1, 5, 1), 1)
    assert c.tokens == (5,)  # the most recent of three continuations of "1" (5, 6, 5)
    assert c.confidence == pytest.approx((2 / 3,))


def test_suffix_proposer_takes_the_longest_match_and_the_most_frequent_continuation():
    cache = SuffixCache()
    cache.add([7, 1, 2, 3, 4, 5, 8])
    cache.add([1, 2, 3, 4, 5, 0])
    c = SuffixProposer(cache).propose(h(1, 2, 3, 4, 5, 9, 1, 2, 3, 4, 6, 1, 2, 3), 6)
    assert c.match_length == 3
    assert c.tokens == (4, 5)  # 4 in 4/4 matches; then 5 in 3/4; then 8, 0 or 9 (1/3 each) is a guess: stop
    assert c.confidence == pytest.approx((1.0, 0.75))


def test_suffix_matches_never_cross_documents():
    cache = SuffixCache()
    cache.add([1, 2])
    cache.add([3, 4])
    assert SuffixProposer(cache, min_match=2).propose(h(9, 1, 2), 3).tokens == ()  # "1 2" ends doc one


def test_draft_length_grows_with_match_length():
    text = list(range(100, 140))
    cache = SuffixCache()
    cache.add(text)
    short = SuffixProposer(cache).propose(h(5, 100, 101), 20)
    long = SuffixProposer(cache).propose(h(*text[:10]), 20)
    assert len(short) == 3 and short.tokens == (102, 103, 104)
    assert len(long) == 11 and long.tokens[0] == 110


def test_the_cache_is_bounded_oldest_first():
    cache = SuffixCache(max_tokens=10)
    cache.add([1, 2, 3, 4])
    cache.add([5, 6, 7, 8])
    cache.add([9, 10, 11])
    assert 1 not in cache.text().tolist() and 9 in cache.text().tolist()
    assert len(cache.text()) <= 10


# The measured one-thread SmolLM2 verify costs (ms) for 1, 3, 9, 17 positions.
BF16 = VerifyCostModel(((1, 0.0407), (3, 0.0593), (9, 0.0613), (17, 0.0663)))
FP32 = VerifyCostModel(((1, 0.0558), (3, 0.0656), (5, 0.0957), (9, 0.1229)))


@pytest.mark.parametrize(("confidence", "calibration", "wait", "k"), [
    ((), 1.0, BF16, 0),                        # nothing to send: the target decodes one token
    ((0.2, 0.2), 1.0, BF16, 0),                # a weak guess does not pay for t_v(3) / t_v(1) = 1.46
    ((1.0, 1.0, 1.0, 1.0), 1.0, BF16, 4),      # a certain continuation is sent whole
    ((1.0, 1.0, 0.1, 0.9), 1.0, BF16, 4),      # flat curve: the unlikely tail is nearly free, sent
    ((1.0, 1.0, 0.1, 0.9), 1.0, FP32, 2),      # steep curve: cut where the chain becomes unlikely
    ((1.0, 1.0, 1.0, 1.0), 0.1, BF16, 0),      # a proposer measured to be wrong 90 % of the time
])
def test_best_prefix_sends_what_pays(confidence, calibration, wait, k):
    got, goodput = best_prefix(confidence, calibration, wait)
    assert got == k
    assert goodput >= 1 / wait(1)
