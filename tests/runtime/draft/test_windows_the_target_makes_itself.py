"""A draft leaves to the target the model-free windows the target would make itself in a Decode stream.

Pure logic of draft.drafting: with no measured costs every candidate is sent whole, so what is asserted is only
where a window is made: at the edge (a Window with a source) or by the target (an empty Window: stream).
"""

from __future__ import annotations

import pytest

from dsd_runtime.draft.drafting import Drafter, DraftingState
from dsd_runtime.draft.windowing import WindowConfig, WindowController

REPEATING = [5, 6, 7, 8, 9, 1, 2, 5, 6, 7]  # "5 6 7" occurred before: lookup and suffix both propose "8 9 ..."


def _drafter(mode: str, target_self_drafting: frozenset[str], state: DraftingState | None = None) -> Drafter:
    window = WindowController(WindowConfig(proposer=mode), has_model=False)
    return Drafter(mode, None, window, state or DraftingState(), target_self_drafting)


@pytest.mark.parametrize("mode", ["lookup", "suffix", "hybrid"])
def test_a_window_from_the_request_is_left_to_a_self_drafting_target(mode):
    assert _drafter(mode, frozenset()).plan(REPEATING, [], cap=4).source != "none", "an old target: the edge drafts"
    left = _drafter(mode, frozenset({"lookup", "suffix"})).plan(REPEATING, [], cap=4)
    assert left.source == "none" and not left.proposals


def test_a_suffix_match_only_the_edges_cache_holds_is_still_sent():
    state = DraftingState()
    state.cache.add([40, 41, 42, 43, 44, 45])  # an earlier request's text on this draft server
    window = _drafter("suffix", frozenset({"lookup", "suffix"}), state).plan([3, 40, 41, 42], [], cap=3)
    assert window.source == "suffix"
    assert [p.token for p in window.proposals] == [43, 44, 45]


def test_a_target_drafting_with_another_proposer_does_not_take_the_window():
    window = _drafter("lookup", frozenset({"suffix"})).plan(REPEATING, [], cap=4)
    assert window.source == "lookup"


def test_a_window_from_a_stream_pays_for_the_step_it_wastes():
    """Leaving a Decode stream cancels the step the target has begun: a one-token match that beats the target's
    40 ms steps between rounds does not once that step is counted; a three-token match still does."""
    state = DraftingState()
    state.cache.add([40, 41, 42, 43, 44, 45])
    drafter = _drafter("suffix", frozenset({"lookup", "suffix"}), state)
    for positions, seconds in ((1, 0.040), (4, 0.060)):
        drafter.window.observe_wait(positions, seconds)
    history = [3, 40, 41, 42]
    assert drafter.plan(history, [], cap=1).source == "suffix", "between rounds 2 tokens in 47 ms beat 1 in 40"
    assert drafter.plan(history, [], cap=1, alone_goodput=25.0).source == "none"
    assert drafter.plan(history, [], cap=3, alone_goodput=25.0).source == "suffix"
