"""`dsd generate` as a user runs it, in its own process: text, the speed report, and a clean exit.

With SmolLM2 its exit used to abort (SIGABRT, "terminate called without an active exception") in 4 of 6 runs:
the target's batcher worker outlived the command and freed tensors while the interpreter finalised. The tiny
models here rarely hit that race; test_continuous_batching's close tests are the deterministic check.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("draft", ["none", "partial"])
def test_generate_prints_its_report_and_exits_cleanly(tiny_models, draft):
    draft_ref = "none" if draft == "none" else str(tiny_models[draft])
    proc = subprocess.run(
        [sys.executable, "-c", "from dsd_cli.main import app; app()", "generate", "abc", "--no-chat",
         "--target-model", str(tiny_models["target"]), "--draft-model", draft_ref, "--max-tokens", "12"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "12 tokens in" in proc.stderr
    assert "tokens by source:" in proc.stderr
    assert "DSD speedup" in proc.stderr
