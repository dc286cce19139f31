"""Sampling through DSD (rejection sampling over gRPC) reproduces the target's own token distribution."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.speculating import GenerationRequest, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_spec import sampling
from dsd_spec.sampling import SamplingParams

PARAMS = SamplingParams(temperature=1.0, top_k=4)


def _exact_marginals(model, prompt_ids):
    """P(t1) and P(t2) of the target alone under PARAMS, by enumeration over the top-k support."""
    lm = model.lm.model
    with torch.no_grad():
        p1 = sampling.warp(lm(torch.tensor([prompt_ids])).logits[0, -1], PARAMS)
        p2 = torch.zeros_like(p1)
        for t1 in p1.nonzero().flatten().tolist():
            logits = lm(torch.tensor([[*prompt_ids, t1]])).logits[0, -1]
            p2 += p1[t1] * sampling.warp(logits, PARAMS)
    return p1.double(), p2.double()


def _chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    support = probs > 0
    assert counts[~support].sum() == 0, "DSD emitted a token the target can never emit"
    n = counts.sum()
    expected = probs[support] / probs[support].sum() * n
    return float(stats.chisquare(counts[support].numpy(), expected.numpy()).pvalue)


@pytest.mark.parametrize("draft", ["partial", "subset"])
def test_first_two_tokens_follow_the_target_distribution(loaded, target_server, draft):
    """`subset` proposes from half the vocabulary only (a frequent-token head): zero draft probability elsewhere,
    and the residual distribution must still give the target's tokens outside it their full probability."""
    model = loaded["target"]
    prompt = model.tokenizer("The quick brown fox")["input_ids"]
    p1, p2 = _exact_marginals(model, prompt)
    client = TargetClient(f"127.0.0.1:{target_server.port}")
    spec = Speculator(loaded[draft].lm, client, WindowController(WindowConfig(gamma=2, pipelined=False)))
    runs = 1500
    c1 = torch.zeros_like(p1)
    c2 = torch.zeros_like(p2)
    try:
        for seed in range(runs):
            toks = list(spec.generate(GenerationRequest(prompt, 2, PARAMS, seed=seed)))
            c1[toks[0]] += 1
            c2[toks[1]] += 1
    finally:
        client.close()
    assert _chi_square_p(c1, p1) > 0.001, (c1[p1 > 0], p1[p1 > 0])
    assert _chi_square_p(c2, p2) > 0.001, (c2[p2 > 0], p2[p2 > 0])


def test_sampling_is_reproducible_under_a_seed_in_both_modes(loaded, target_server):
    prompt = loaded["target"].tokenizer("Once upon a time")["input_ids"]
    outputs = []
    for pipelined in (False, True, False):
        client = TargetClient(f"127.0.0.1:{target_server.port}")
        spec = Speculator(loaded["partial"].lm, client, WindowController(WindowConfig(gamma=3, pipelined=pipelined)))
        outputs.append(list(spec.generate(GenerationRequest(prompt, 20, PARAMS, seed=42))))
        client.close()
    assert outputs[0] == outputs[1] == outputs[2]
