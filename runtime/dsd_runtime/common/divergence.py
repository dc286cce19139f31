"""Why two greedy outputs of one model differ: a broken verification, or a tie the dtype cannot resolve.

A packed pass adds the same numbers as a one-sequence forward in another order, so their logits differ in the
last bits (float32, SmolLM2: at most 4e-5; bfloat16: tenths at logit magnitudes of 10-20). Where the target's
two best tokens at some step are closer than that, a batched target and the target alone may pick different
ones, and the outputs part from there: rounding, not a lossless-ness bug. `first_divergence` finds the first
differing token and decides from the target's own logits there (a plain forward in the model's dtype): within
rounding only when the token DSD produced is the runner-up and trails the best by no more than the dtype's bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Relative bound on the logit difference two summation orders can produce, by dtype; times max(1, |top logit|).
# float32: 8e-5 at logit 20 (measured packed vs alone on SmolLM2: <= 4e-5); bfloat16: 0.4 at logit 20 (~2.5 of
# its 2^-7 relative steps); the lossless tests check the bound against packed forwards of their own models.
RELATIVE_ROUNDING = {torch.float64: 1e-12, torch.float32: 4e-6, torch.bfloat16: 2e-2, torch.float16: 4e-3}


def rounding_tolerance(dtype: torch.dtype, magnitude: float) -> float:
    return RELATIVE_ROUNDING.get(dtype, 2e-2) * max(1.0, abs(magnitude))


@dataclass(frozen=True)
class Divergence:
    index: int  # first output position where the two differ
    expected: int  # the target alone's token there
    got: int  # the other output's token
    expected_logit: float
    got_logit: float
    got_rank: int  # 0 = the best token, 1 = the runner-up, ...
    tolerance: float
    dtype: str

    @property
    def gap(self) -> float:
        return self.expected_logit - self.got_logit

    @property
    def within_rounding(self) -> bool:
        return self.got_rank <= 1 and abs(self.gap) <= self.tolerance

    def describe(self) -> str:
        verdict = "within rounding" if self.within_rounding else "NOT within rounding: a real difference"
        return (f"outputs differ at token {self.index}: target alone {self.expected} (logit {self.expected_logit:.6g})"
                f", other {self.got} (logit {self.got_logit:.6g}, rank {self.got_rank}); gap {self.gap:.3g} vs "
                f"{self.dtype} rounding bound {self.tolerance:.3g}: {verdict}")


@torch.inference_mode()
def first_divergence(model: torch.nn.Module, prompt_ids: Sequence[int], expected: Sequence[int],
                     got: Sequence[int]) -> Divergence | None:
    """None when `got` equals `expected` (or one is a prefix of the other: a shorter output is not a
    disagreement about any token); else the first differing token, judged by `model`'s logits there."""
    index = next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), None)
    if index is None:
        return None
    context = torch.tensor([[*prompt_ids, *expected[:index]]], device=next(model.parameters()).device)
    logits = model(context).logits[0, -1].float()
    dtype = next(model.parameters()).dtype
    want, other = int(expected[index]), int(got[index])
    tolerance = rounding_tolerance(dtype, float(logits.max()))
    return Divergence(index, want, other, float(logits[want]), float(logits[other]),
                      int((logits > logits[other]).sum()), tolerance, str(dtype).removeprefix("torch."))
