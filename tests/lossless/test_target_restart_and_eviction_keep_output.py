"""The draft is the source of truth: a restarted target or an evicted session re-prefills with identical output."""

from __future__ import annotations

import pytest

from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_runtime.target.server import TargetServer, TargetSettings
from tests.lossless.test_greedy_equals_target_alone import target_alone
from tests.support.runtime_fixtures import start_target


@pytest.mark.parametrize("pipelined", [False, True])
def test_restarting_the_target_between_rounds_gives_identical_output(loaded, pipelined):
    target = loaded["target"]
    prompt = target.tokenizer("Q: What is DSD?\nA:")["input_ids"]
    want = target_alone(target, prompt, 40)
    server = start_target(target)
    port = server.port
    client = TargetClient(f"127.0.0.1:{port}", deadline_s=20)
    stats = GenerationStats()
    spec = Speculator(loaded["partial"].lm, client, WindowController(WindowConfig(gamma=3, pipelined=pipelined)))
    got = []
    try:
        for tok in spec.generate(GenerationRequest(prompt, 40), stats=stats):
            got.append(tok)
            if len(got) == 12:
                server.stop(0)  # a new server on the same port: an empty session store, like a restart
                server = TargetServer(target, TargetSettings(), f"127.0.0.1:{port}")
                server.start()
    finally:
        client.close()
        server.stop(0)
    assert got == want
    assert stats.reprefills >= 1


def test_evicted_sessions_are_rebuilt_transparently(loaded):
    target = loaded["target"]
    server = start_target(target, max_sessions=1)
    client = TargetClient(f"127.0.0.1:{server.port}")
    try:
        prompts = [target.tokenizer(p)["input_ids"] for p in ("Hello there", "1 2 3 4")]
        specs = [Speculator(loaded["partial"].lm, client, WindowController(WindowConfig(gamma=2)))
                 for _ in prompts]
        stats = [GenerationStats(), GenerationStats()]
        gens = [s.generate(GenerationRequest(p, 30), stats=st) for s, p, st in zip(specs, prompts, stats, strict=False)]
        outs: list[list[int]] = [[], []]
        for _ in range(30):  # interleave: each round of one evicts the other's session
            for i, g in enumerate(gens):
                outs[i].append(next(g))
        for p, out in zip(prompts, outs, strict=False):
            assert out == target_alone(target, p, 30)
        assert all(st.reprefills > 0 for st in stats)
        assert server.servicer.store.evictions > 0
    finally:
        client.close()
        server.stop(0)
