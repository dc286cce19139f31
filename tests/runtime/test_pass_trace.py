"""`--pass-trace`: one line per forward pass, agreeing with the target's own pass metrics."""

from __future__ import annotations

import json

from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.speculating import GenerationRequest, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from tests.support.runtime_fixtures import start_target


def test_every_forward_pass_is_one_trace_line(loaded, tmp_path):
    trace = tmp_path / "passes.jsonl"
    server = start_target(loaded["target"], pass_trace=str(trace))
    client = TargetClient(f"127.0.0.1:{server.port}")
    try:
        spec = Speculator(loaded["partial"].lm, client, WindowController(WindowConfig(gamma=3)))
        prompt = loaded["target"].tokenizer("The quick brown fox")["input_ids"]
        assert len(list(spec.generate(GenerationRequest(prompt, 12)))) == 12
    finally:
        client.close()
        server.stop(0)
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    samples = {s.name: s.value for m in (server.servicer.metrics.pass_seconds, server.servicer.metrics.batch_tokens)
               for s in m.collect()[0].samples}
    assert len(lines) == samples["dsd_target_forward_pass_seconds_count"] >= 2
    assert sum(p["tokens"] for p in lines) == samples["dsd_target_batch_tokens_sum"]
    assert lines[0]["tokens"] == len(prompt)  # the prefill
    assert all(p["sequences"] == 1 and p["seconds"] > 0 for p in lines)
