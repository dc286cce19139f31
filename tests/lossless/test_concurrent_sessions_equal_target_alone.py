"""Many sessions on one target at once, their rounds batched into shared forward passes: every session's output
is the target alone's, greedy and seeded sampling, drafted by a model, by prompt lookup, or target-only."""

from __future__ import annotations

from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.drafting import DraftingState
from dsd_runtime.draft.speculating import GenerationRequest, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_spec.sampling import SamplingParams
from tests.lossless.test_greedy_equals_target_alone import PROMPTS, target_alone
from tests.lossless.test_seeded_sampling_is_window_invariant import target_alone_sampled
from tests.support.runtime_fixtures import start_target
from tests.support.threads import results

SAMPLED = SamplingParams(temperature=0.8, top_p=0.9)
N = 24


def test_concurrent_sessions_each_equal_the_target_alone(loaded):
    target = loaded["target"]
    server = start_target(target, max_batch_tokens=64)
    client = TargetClient(f"127.0.0.1:{server.port}")
    tok = target.tokenizer
    # (prompt, draft, proposer, params, seed): 16 sessions mixing every drafting path.
    cases = []
    for i, text in enumerate(PROMPTS * 2):
        draft, proposer = [("partial", "model"), (None, "lookup"), (None, "none"), ("same", "model")][i % 4]
        params, seed = (SAMPLED, 100 + i) if i % 3 == 0 else (SamplingParams(), 0)
        cases.append((tok(text)["input_ids"], draft, proposer, params, seed))

    def run(i: int) -> list[int]:
        prompt, draft, proposer, params, seed = cases[i]
        model = loaded[draft].lm if draft else None
        spec = Speculator(model, client, WindowController(WindowConfig(gamma=3, proposer=proposer),
                                                          has_model=model is not None),
                          drafting=DraftingState(), max_context=512)
        return list(spec.generate(GenerationRequest(prompt, N, params, seed=seed)))

    try:
        outputs = results([lambda i=i: run(i) for i in range(len(cases))])
        for i, (prompt, _, _, params, seed) in enumerate(cases):
            want = (target_alone(target, prompt, N) if params.greedy
                    else target_alone_sampled(target, prompt, N, params, seed))
            assert outputs[i] == want, f"session {i} ({cases[i][1:3]}) differs from the target alone"
        batch = server.servicer.metrics.batch_sequences.collect()[0].samples
        passes = next(s.value for s in batch if s.name.endswith("_count"))
        sequences = next(s.value for s in batch if s.name.endswith("_sum"))
        assert sequences / passes > 1.5, "rounds of concurrent sessions were not batched"
    finally:
        client.close()
        server.stop(0)
