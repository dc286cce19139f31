"""The target's hybrid self-drafter sends the better of its lookup and suffix candidates (pure logic).

With no round costs measured yet a candidate goes whole, so the longer one is sent; once costs are known each
candidate is cut by the goodput model and the one that pays more wins.
"""

from __future__ import annotations

from dsd_runtime.target.self_drafting import SelfDrafting


def test_with_no_costs_the_longer_candidate_goes_whole():
    shared = SelfDrafting(cache_tokens=1000)
    shared.remember([7, 8, 9, 10, 11, 12, 13])  # a closed session: suffix matches "7 8 9" -> "10 11 12 13"
    history = [3, 7, 4, 2, 7, 8, 9]  # lookup: the most recent "9"-ending n-gram has no earlier occurrence
    window = shared.stream("hybrid", max_window=4).plan(history, cap=4)
    assert window.source == "suffix"
    assert window.tokens == (10, 11, 12, 13)


def test_lookup_wins_where_only_it_finds_a_match():
    shared = SelfDrafting(cache_tokens=0)
    history = [5, 6, 1, 2, 3, 9, 6]  # "6" occurred before, followed by "1 2 3 9"; suffix needs a 2-token match
    window = shared.stream("hybrid", max_window=3).plan(history, cap=3)
    assert window.source == "lookup"
    assert window.tokens == (1, 2, 3)


def test_with_costs_the_candidate_that_pays_more_is_sent():
    shared = SelfDrafting(cache_tokens=1000)
    for _ in range(8):  # a flat cost curve: every extra position is nearly free, so the longer sure guess pays
        for positions in range(1, 6):
            shared.observe_round(positions, 0.050 + 0.001 * positions)
    shared.remember([7, 8, 9, 10, 11, 12, 13])
    # lookup: "9" was followed once by 2 and once by 3 (half sure); suffix: "7 8 9" always by "10 11 12 13"
    window = shared.stream("hybrid", max_window=4).plan([9, 2, 9, 3, 7, 8, 9], cap=4)
    assert window.source == "suffix", window
    assert len(window.tokens) == 4
