"""Verification rules: table-driven greedy cases and statistical checks of rejection sampling."""

import pytest
import torch
from scipy import stats

from dsd_spec import sampling
from dsd_spec.sampling import SamplingParams

VOCAB = 6


def logits_for(tokens, vocab=VOCAB):
    """Rows whose argmax is the given token."""
    out = torch.zeros(len(tokens), vocab)
    for i, t in enumerate(tokens):
        out[i, t] = 5.0
    return out


@pytest.mark.parametrize(
    ("target_argmax", "draft", "accepted", "next_token"),
    [
        ([1, 2, 3, 4], [1, 2, 3], 3, 4),  # all accepted -> bonus
        ([1, 2, 3, 4], [0, 2, 3], 0, 1),  # early mismatch -> recovered
        ([1, 2, 3, 4], [1, 2, 5], 2, 3),  # late mismatch
        ([5], [], 0, 5),  # empty window: just the next token
    ],
)
def test_verify_greedy_table(target_argmax, draft, accepted, next_token):
    v = sampling.verify_greedy(logits_for(target_argmax), torch.tensor(draft, dtype=torch.long))
    assert (v.num_accepted, v.next_token) == (accepted, next_token)


def test_warp_greedy_is_one_hot_and_topk_topp_restrict_support():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0, -1.0, 0.5]])
    assert sampling.warp(logits, SamplingParams()).tolist() == [[0, 1, 0, 0, 0, 0]]
    p = sampling.warp(logits, SamplingParams(temperature=1.0, top_k=2))
    assert set(p[0].nonzero().flatten().tolist()) == {1, 2}
    p = sampling.warp(logits, SamplingParams(temperature=1.0, top_p=0.5))
    assert p[0, 1] == pytest.approx(1.0)
    assert float(p.sum()) == pytest.approx(1.0)


def _first_token_histogram(p, q, n, seed, point_mass=False):
    """Distribution of the first emitted token of a 1-token window."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.zeros(VOCAB)
    target_probs = torch.stack([p, p])
    for _ in range(n):
        x = int(torch.multinomial(q, 1, generator=gen))
        draft_probs = None if point_mass else q.unsqueeze(0)
        v = sampling.verify_rejection(target_probs, torch.tensor([x]), draft_probs, gen)
        counts[x if v.num_accepted == 1 else v.next_token] += 1
    return counts


@pytest.mark.parametrize("point_mass", [False, True])
@pytest.mark.parametrize("n", [2000, 20000])
def test_rejection_sampling_reproduces_target_distribution(point_mass, n):
    p = torch.tensor([0.05, 0.40, 0.25, 0.10, 0.15, 0.05])
    q = torch.tensor([0.30, 0.10, 0.10, 0.30, 0.10, 0.10])
    counts = _first_token_histogram(p, q, n, seed=1234, point_mass=point_mass)
    _, pvalue = stats.chisquare(counts.numpy(), (p * n).numpy())
    assert pvalue > 0.001, f"emitted tokens deviate from p: {counts.tolist()}"


def test_rejection_sampling_detects_a_wrong_rule():
    """The chi-square check has teeth: accepting every draft token reproduces q, not p."""
    p = torch.tensor([0.05, 0.40, 0.25, 0.10, 0.15, 0.05])
    q = torch.tensor([0.30, 0.10, 0.10, 0.30, 0.10, 0.10])
    gen = torch.Generator().manual_seed(1)
    counts = torch.bincount(torch.multinomial(q, 5000, replacement=True, generator=gen), minlength=VOCAB)
    _, pvalue = stats.chisquare(counts.float().numpy(), (p * 5000).numpy())
    assert pvalue < 1e-6


def test_rejection_sampling_is_deterministic_under_a_seed():
    p = torch.softmax(torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(0)), -1)
    q = torch.softmax(torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(1)), -1)
    drafts = torch.tensor([1, 2, 3])
    runs = [sampling.verify_rejection(p, drafts, q, torch.Generator().manual_seed(7)) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_identical_draft_and_target_accepts_everything():
    p = torch.softmax(torch.randn(5, VOCAB, generator=torch.Generator().manual_seed(3)), -1)
    gen = torch.Generator().manual_seed(0)
    drafts = torch.tensor([int(torch.multinomial(p[i], 1, generator=gen)) for i in range(4)])
    v = sampling.verify_rejection(p, drafts, p[:4], gen)
    assert v.num_accepted == 4
