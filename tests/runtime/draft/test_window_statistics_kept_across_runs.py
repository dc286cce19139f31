"""A draft engine with `window_stats` saves what it measured at close, and the next engine of the same pair starts
from it: no trial rounds of a draft model the saved statistics say does not pay. Real gRPC, tiny models."""

from __future__ import annotations

import json
import time

from dsd_runtime.draft import persisting
from dsd_runtime.draft.engine import DraftEngine
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats
from dsd_runtime.draft.windowing import WindowConfig

HYBRID = WindowConfig(gamma=3, gamma_max=8, policy="adaptive", proposer="hybrid", pipelined=False)


def _first_request(loaded, port, stats_file, prompt="The quick brown fox"):
    """A fresh engine's first request; returns (its stats, the engine's restored statistics)."""
    engine = DraftEngine(loaded["partial"], f"127.0.0.1:{port}", HYBRID, window_stats=stats_file)
    try:
        engine.connect()
        ids = loaded["target"].tokenizer(prompt)["input_ids"]
        stats = GenerationStats()
        list(engine.speculator.generate(GenerationRequest(ids, 24), stats=stats))
        return stats, engine.restored_stats
    finally:
        engine.close()


def test_the_next_engine_starts_from_what_the_last_one_measured(loaded, target_server, tmp_path):
    stats_file = tmp_path / "stats" / "pair.json"
    first, restored = _first_request(loaded, target_server.port, stats_file)
    assert restored is None and first.draft_steps > 0, "a fresh hybrid tries its draft model"
    saved = json.loads(stats_file.read_text())
    assert (saved["draft"], saved["target"]) == (loaded["partial"].name, loaded["target"].name)
    assert saved["observed"][0] > 0 and saved["step_s"] > 0 and saved["wait_s"]

    engine = DraftEngine(loaded["partial"], f"127.0.0.1:{target_server.port}", HYBRID, window_stats=stats_file)
    try:
        engine.connect()
        assert engine.restored_stats is not None
        assert engine.window.goodput(engine.window.next_gamma()) is not None, "decides before its first round"
    finally:
        engine.close()


def test_a_draft_model_saved_as_not_paying_is_not_tried(loaded, target_server, tmp_path):
    stats_file = tmp_path / "pair.json"
    # Every first draft token rejected over 16 rounds, a slow draft step, and a target that answers fast.
    persisting.save(stats_file, loaded["partial"].name, loaded["target"].name, persisting.SavedWindowStats(
        draft="", target="", saved_at=time.time(), accepted=[0.0] * 8, observed=[16.0] + [0.0] * 7, step_s=0.05,
        wait_s={1: 0.01, 2: 0.012, 3: 0.013, 4: 0.014}).snapshot())
    stats, restored = _first_request(loaded, target_server.port, stats_file)
    assert restored is not None
    assert stats.draft_steps == 0 and "model" not in stats.tokens_by_source, stats.tokens_by_source


def test_another_pairs_or_a_broken_file_is_ignored_and_replaced(loaded, target_server, tmp_path, caplog):
    other = tmp_path / "other.json"
    persisting.save(other, "some-other-draft", loaded["target"].name, persisting.SavedWindowStats(
        draft="", target="", saved_at=0.0, accepted=[0.0], observed=[1.0], step_s=0.05, wait_s={1: 0.01}).snapshot())
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1, "draft": ')
    for path in (other, broken):
        _, restored = _first_request(loaded, target_server.port, path)
        assert restored is None
        assert json.loads(path.read_text())["draft"] == loaded["partial"].name, "rewritten for this pair"
    assert "for draft 'some-other-draft'" in caplog.text
    assert f"ignoring window statistics {broken}" in caplog.text


def test_an_unwritable_path_is_logged_not_raised(loaded, target_server, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    _first_request(loaded, target_server.port, blocker / "stats.json")  # close() must not raise
    assert "could not save window statistics" in caplog.text
