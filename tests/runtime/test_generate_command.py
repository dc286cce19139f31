"""`dsd generate` as a user runs it, in its own process: text, the speed report, and a clean exit.

With SmolLM2 its exit used to abort (SIGABRT, "terminate called without an active exception") in 4 of 6 runs:
the target's batcher worker outlived the command and freed tensors while the interpreter finalised. The tiny
models here rarely hit that race; test_continuous_batching's close tests are the deterministic check.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _generate(tiny_models, draft_ref: str, window_stats: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", "from dsd_cli.main import app; app()", "generate", "abc", "--no-chat",
         "--target-model", str(tiny_models["target"]), "--draft-model", draft_ref, "--max-tokens", "12",
         "--window-stats", window_stats],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "500"})  # no wrapped lines
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("draft", ["none", "partial"])
def test_generate_prints_its_report_and_exits_cleanly(tiny_models, draft):
    proc = _generate(tiny_models, "none" if draft == "none" else str(tiny_models[draft]), "off")
    assert "12 tokens in" in proc.stderr
    assert "tokens by source:" in proc.stderr
    assert "DSD speedup" in proc.stderr
    assert "window statistics" not in proc.stderr


def test_a_second_generate_starts_from_the_first_ones_window_statistics(tiny_models, tmp_path):
    stats = tmp_path / "stats.json"
    first = _generate(tiny_models, str(tiny_models["partial"]), str(stats))
    assert f"none saved for this pair yet; this run's go to {stats}" in first.stderr
    assert stats.exists()
    second = _generate(tiny_models, str(tiny_models["partial"]), str(stats))
    assert f"started from {stats}" in second.stderr
