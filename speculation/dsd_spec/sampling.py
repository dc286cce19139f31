"""The verification rules: greedy acceptance and lossless rejection sampling (torch).

Leviathan et al. 2023, Algorithm 1 (https://arxiv.org/abs/2211.17192): accept draft token x_i while
r_i <= p_i(x_i) / q_i(x_i), r_i ~ U(0, 1); at the first rejection sample the **recovered** token from
norm(max(0, p_i - q_i)); if all gamma are accepted sample the **bonus** token from p_{gamma+1}.
p and q are distributions AFTER the same temperature / top-k / top-p transforms (`warp`), which both sides
call from here. A draft that proposed greedily (or by lookup) is a point mass q = delta(x_i): accept with
probability p_i(x_i); the residual is p with x_i removed.

Coupled sampling (the default of DSD's own drafts): every position k of a request has its own Gumbel noise
G_k, drawn from (seed, k) alone. The target's token at k is argmax(log p_k + G_k) (the Gumbel-max trick: an
exact sample of p_k), and the draft proposes argmax(log q_k + G_k) with the same noise, a point mass. The
target accepts while the draft token equals its own, so the output is a function of (seed, target) only:
identical to the target decoding alone under that seed, whatever the window, pipelining or draft. The
acceptance is the Gumbel coupling's, at least (1 - TV)/(1 + TV) of p and q (TV: total variation) and 1 when
p == q (Lee et al., "Towards drafter-invariant speculative decoding", arXiv 2408.07978).

This is the only module of dsd_spec that imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Below this temperature a request is greedy: logits / 1e-40 overflow to inf and softmax gives NaN, and no
# sampler can tell T = 1e-6 from argmax on float32 logits anyway (vLLM uses the same cut-off).
GREEDY_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 (or below GREEDY_TEMPERATURE) = greedy. top_k 0 = off. top_p 1.0 = off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:  # also NaN
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:  # also NaN
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE


@dataclass(frozen=True)
class Verdict:
    """Outcome of verifying one window: `num_accepted` drafts kept, then `next_token` (recovered or bonus)."""

    num_accepted: int
    next_token: int


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Probabilities after temperature, top-k and top-p. logits: [..., vocab] -> probs [..., vocab] (fp32).

    Greedy params give a one-hot of the argmax, so greedy is the point-mass special case of the same rules.
    """
    logits = logits.float()
    if params.greedy:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, idx = torch.sort(probs, dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the token crossing the threshold is kept).
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= params.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token from a [vocab] distribution."""
    return int(torch.multinomial(probs, 1, generator=generator).item())


def verify_greedy(target_logits: torch.Tensor, draft_tokens: torch.Tensor) -> Verdict:
    """Accept while argmax p_i == x_i; then emit argmax p_{n+1}.

    target_logits: [gamma + 1, vocab] (position i predicts the token after prefix + x_1..x_{i-1}).
    draft_tokens:  [gamma].
    """
    gamma = draft_tokens.shape[0]
    if target_logits.shape[0] != gamma + 1:
        raise ValueError(f"need gamma+1={gamma + 1} target rows, got {target_logits.shape[0]}")
    target_argmax = target_logits.argmax(dim=-1)  # [gamma + 1]
    mismatch = (target_argmax[:gamma] != draft_tokens).nonzero()
    n = int(mismatch[0].item()) if mismatch.numel() else gamma
    return Verdict(num_accepted=n, next_token=int(target_argmax[n].item()))


def verify_rejection(target_probs: torch.Tensor, draft_tokens: torch.Tensor,
                     draft_probs: torch.Tensor | None, generator: torch.Generator | None) -> Verdict:
    """Lossless rejection sampling (Leviathan et al., Algorithm 1).

    target_probs: [gamma + 1, vocab] p_1..p_{gamma+1}, already warped.
    draft_tokens: [gamma] x_1..x_gamma.
    draft_probs:  [gamma, vocab] q_1..q_gamma, warped; None when the draft proposed point masses.
    """
    gamma = draft_tokens.shape[0]
    if target_probs.shape[0] != gamma + 1:
        raise ValueError(f"need gamma+1={gamma + 1} target rows, got {target_probs.shape[0]}")
    if gamma:
        r = torch.rand(gamma, generator=generator, dtype=torch.float64)  # [gamma]
    for i in range(gamma):
        x = int(draft_tokens[i])
        p_x = float(target_probs[i, x])
        q_x = 1.0 if draft_probs is None else float(draft_probs[i, x])
        if q_x > 0.0 and float(r[i]) * q_x <= p_x:
            continue
        # Rejected at position i: recovered token from norm(max(0, p - q)).
        if draft_probs is None:
            residual = target_probs[i].clone()
            residual[x] = 0.0
        else:
            residual = torch.clamp(target_probs[i] - draft_probs[i], min=0.0)
        if float(residual.sum()) <= 0.0:  # p == q where it matters: fall back to p (no 0/0)
            residual = target_probs[i]
        return Verdict(num_accepted=i, next_token=sample(residual, generator))
    return Verdict(num_accepted=gamma, next_token=sample(target_probs[gamma], generator))


def sample_coupled(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Gumbel-max sample(s): argmax(log probs + noise). probs: [..., vocab], noise: [..., vocab] -> [...] ids.

    Tokens with probability 0 (cut by top-k/top-p) get log 0 = -inf and are never chosen.
    """
    return (torch.log(probs.double()) + noise.double()).argmax(dim=-1)


def verify_coupled(target_probs: torch.Tensor, draft_tokens: torch.Tensor, noise: torch.Tensor) -> Verdict:
    """Drafter-invariant verification: accept while x_i equals the target's own coupled sample y_i.

    target_probs: [gamma + 1, vocab] p_1..p_{gamma+1}, warped. draft_tokens: [gamma].
    noise:        [gamma + 1, vocab] the Gumbel noise of those positions (the same the draft used).
    y_i = argmax(log p_i + G_i) is an exact sample of p_i, and the emitted tokens are y_1..y_{n+1}, so the
    output never depends on what was drafted; greedy is the same rule with zero noise.
    """
    gamma = draft_tokens.shape[0]
    if target_probs.shape[0] != gamma + 1 or noise.shape != target_probs.shape:
        raise ValueError(f"need gamma+1={gamma + 1} target rows and noise of the same shape, got "
                         f"{tuple(target_probs.shape)} and {tuple(noise.shape)}")
    y = sample_coupled(target_probs, noise)  # [gamma + 1]
    mismatch = (y[:gamma] != draft_tokens).nonzero()
    n = int(mismatch[0].item()) if mismatch.numel() else gamma
    return Verdict(num_accepted=n, next_token=int(y[n].item()))
