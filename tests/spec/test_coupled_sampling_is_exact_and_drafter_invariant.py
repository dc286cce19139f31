"""Coupled (Gumbel-max) sampling: each token is an exact sample of p, and verification never changes the output."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from dsd_runtime.common import seeding
from dsd_spec import sampling


def _probs(*values: float) -> torch.Tensor:
    p = torch.tensor(values, dtype=torch.float64)
    return p / p.sum()


@pytest.mark.parametrize("samples", [500, 5000])
def test_coupled_samples_follow_p(samples):
    p = _probs(0.5, 0.2, 0.15, 0.1, 0.05, 0.0)
    counts = torch.zeros(6)
    for seed in range(samples):
        counts[int(sampling.sample_coupled(p, seeding.gumbel_noise(seed, 7, 1, 6)[0]))] += 1
    assert counts[5] == 0, "a zero-probability token was sampled"
    assert stats.chisquare(counts[:5].numpy(), (p[:5] * samples).numpy()).pvalue > 0.001


def test_a_biased_sampler_fails_the_same_check():
    """Negative control: the chi-square check above can fail."""
    p = _probs(0.5, 0.2, 0.15, 0.1, 0.05)
    biased = _probs(0.4, 0.3, 0.15, 0.1, 0.05)
    counts = torch.zeros(5)
    for seed in range(5000):
        counts[int(sampling.sample_coupled(biased, seeding.gumbel_noise(seed, 7, 1, 5)[0]))] += 1
    assert stats.chisquare(counts.numpy(), (p * 5000).numpy()).pvalue < 0.001


def _rows(*rows: tuple[float, ...]) -> torch.Tensor:
    return torch.stack([_probs(*r) for r in rows])


@pytest.mark.parametrize(("drafts", "accepted"), [
    ([], 0),                    # empty window: only the next token
    ("target", 3),              # drafts equal the target's own samples: all accepted + bonus
    ("wrong-first", 0),         # first draft differs: nothing accepted
    ("wrong-third", 2),         # partial acceptance at a chosen position
])
def test_verify_coupled_accepts_exactly_the_matching_prefix(drafts, accepted):
    p = _rows((0.4, 0.3, 0.2, 0.1), (0.25, 0.25, 0.25, 0.25), (0.1, 0.2, 0.3, 0.4), (0.7, 0.1, 0.1, 0.1))
    gamma = 0 if drafts == [] else 3
    p = p[: gamma + 1]
    noise = seeding.gumbel_noise(11, 40, gamma + 1, 4)
    own = sampling.sample_coupled(p, noise)  # [gamma + 1] the target's tokens at these positions
    x = own[:gamma].clone()
    if drafts == "wrong-first":
        x[0] = (x[0] + 1) % 4
    elif drafts == "wrong-third":
        x[2] = (x[2] + 1) % 4
    verdict = sampling.verify_coupled(p, x, noise)
    assert verdict.num_accepted == accepted
    assert verdict.next_token == int(own[accepted]), "the emitted token is the target's own, whatever was drafted"


def test_shared_noise_makes_a_close_draft_agree_more_than_the_coupling_bound():
    """Acceptance of a draft q sampling with the same noise is at least (1 - TV) / (1 + TV)."""
    p, q = _probs(0.5, 0.3, 0.2), _probs(0.4, 0.4, 0.2)
    tv = 0.5 * float((p - q).abs().sum())
    agree = sum(int(sampling.sample_coupled(p, g)) == int(sampling.sample_coupled(q, g))
                for g in (seeding.gumbel_noise(s, 0, 1, 3)[0] for s in range(4000)))
    assert agree / 4000 >= (1 - tv) / (1 + tv)
    assert agree / 4000 <= 1 - tv + 0.02, "no coupling beats the maximal one"


def test_noise_is_a_function_of_seed_and_position_only():
    a = seeding.gumbel_noise(3, 10, 4, 50)
    assert torch.equal(a[2], seeding.gumbel_noise(3, 12, 1, 50)[0])
    assert not torch.equal(a[0], seeding.gumbel_noise(4, 10, 1, 50)[0])
    assert torch.isfinite(a).all()


@pytest.mark.parametrize("temperature", [0.0, 1e-40, 1e-6, 9.99e-6])
def test_temperatures_below_the_threshold_are_greedy(temperature):
    assert sampling.SamplingParams(temperature=temperature).greedy
    assert not sampling.SamplingParams(temperature=1e-5).greedy


@pytest.mark.parametrize("bad", [{"temperature": float("nan")}, {"top_p": float("nan")}, {"temperature": -1.0}])
def test_nan_and_negative_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        sampling.SamplingParams(**bad)
