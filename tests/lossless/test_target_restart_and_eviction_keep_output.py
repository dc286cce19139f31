"""The draft is the source of truth: a restarted target or an evicted session re-prefills with identical output."""

from __future__ import annotations

import pytest

from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_runtime.errors import Overloaded
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


def test_idle_expired_sessions_are_rebuilt_transparently(loaded):
    """A session idle past --idle-ttl-s makes room for a newcomer; when it comes back it re-prefills."""
    target = loaded["target"]
    server = start_target(target, max_sessions=1, idle_ttl_s=0.0)
    client = TargetClient(f"127.0.0.1:{server.port}")
    try:
        prompts = [target.tokenizer(p)["input_ids"] for p in ("Hello there", "1 2 3 4")]
        specs = [Speculator(loaded["partial"].lm, client, WindowController(WindowConfig(gamma=2)))
                 for _ in prompts]
        stats = [GenerationStats(), GenerationStats()]
        gens = [s.generate(GenerationRequest(p, 30), stats=st) for s, p, st in zip(specs, prompts, stats, strict=True)]
        outs: list[list[int]] = [[], []]
        for _ in range(30):  # interleave: between its rounds each session is idle, so the other's evicts it
            for i, g in enumerate(gens):
                outs[i].append(next(g))
        for p, out in zip(prompts, outs, strict=True):
            assert out == target_alone(target, p, 30)
        assert all(st.reprefills > 0 for st in stats)
        assert server.servicer.store.evictions > 0
    finally:
        client.close()
        server.stop(0)


def test_a_full_target_refuses_newcomers_and_never_evicts_an_active_session(loaded):
    """Back-pressure, not thrashing: the second session gets RESOURCE_EXHAUSTED at once, the first finishes."""
    target = loaded["target"]
    server = start_target(target, max_sessions=1)
    client = TargetClient(f"127.0.0.1:{server.port}")
    try:
        first, second = (target.tokenizer(p)["input_ids"] for p in ("Hello there", "1 2 3 4"))
        spec = Speculator(loaded["partial"].lm, client, WindowController(WindowConfig(gamma=2)))
        gen = spec.generate(GenerationRequest(first, 30))
        out = [next(gen)]
        with pytest.raises(Overloaded, match="at capacity"):
            next(Speculator(loaded["partial"].lm, client, WindowController(WindowConfig(gamma=2))).generate(
                GenerationRequest(second, 30)))
        out.extend(gen)
        assert out == target_alone(target, first, 30)
        assert server.servicer.store.evictions == 0
        assert server.servicer.verifier.reprefills == 1  # the first session was never rebuilt
    finally:
        client.close()
        server.stop(0)


@pytest.mark.parametrize("proposer", ["model", "none"])  # none: the replica dies under a target-only stream
def test_a_draft_whose_replica_dies_finishes_on_another_with_identical_output(loaded, proposer):
    target = loaded["target"]
    replicas = [start_target(target), start_target(target)]
    client = TargetClient(",".join(f"127.0.0.1:{r.port}" for r in replicas), deadline_s=20)
    prompt = target.tokenizer("Once upon a time")["input_ids"]
    model = loaded["partial"].lm if proposer == "model" else None
    spec = Speculator(model, client, WindowController(WindowConfig(gamma=2, proposer=proposer),
                                                      has_model=model is not None), max_context=512)
    stats = GenerationStats()
    got = []
    try:
        for tok in spec.generate(GenerationRequest(prompt, 40), stats=stats):
            got.append(tok)
            if len(got) == 10:
                replicas[0].stop(0)  # the replica serving this session goes away mid-request
        assert got == target_alone(target, prompt, 40)
        assert stats.failovers == 1
        assert replicas[1].servicer.verifier.reprefills == 1  # the second replica rebuilt the session
    finally:
        client.close()
        for r in replicas:
            r.stop(0)


def test_a_full_replica_sends_the_new_session_to_another(loaded):
    target = loaded["target"]
    full, free = start_target(target, max_sessions=0), start_target(target)
    client = TargetClient(f"127.0.0.1:{full.port},127.0.0.1:{free.port}")
    prompt = target.tokenizer("1 2 3 4")["input_ids"]
    try:
        spec = Speculator(loaded["partial"].lm, client, WindowController(WindowConfig(gamma=2)))
        assert list(spec.generate(GenerationRequest(prompt, 20))) == target_alone(target, prompt, 20)
        assert free.servicer.verifier.reprefills == 1
    finally:
        client.close()
        full.stop(0)
        free.stop(0)
