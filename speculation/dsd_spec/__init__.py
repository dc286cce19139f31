"""The speculation math shared by DSD's runtime, simulator and operator: the single home of these formulas.

Vocabulary (follows vLLM's rejection sampler): in one round the draft proposes `gamma` tokens; the target
verifies them in one forward pass; the first `num_accepted` are **accepted**; then the target emits one more
token: a **recovered** token (a correction sampled from the residual distribution) at the first rejection, or
a **bonus** token (sampled from the target's distribution after the window) when all `gamma` were accepted.
A round therefore always yields `num_accepted + 1` tokens. `alpha` is the acceptance rate; `alpha_i` the
acceptance rate of position i given positions < i were accepted.

Modules: `expectation` (E[tokens per round], walltime factors), `costs` (round time, goodput: blocking and
pipelined edge/cloud rounds), `window` (optimal and adaptive gamma), `acceptance` (per-position statistics),
`capacity` (what offloading drafts buys a target). `sampling` (torch) holds the verification rules themselves
and is the package's only torch import; import it explicitly.

Reference: Leviathan et al., "Fast Inference from Transformers via Speculative Decoding",
https://arxiv.org/abs/2211.17192 .
"""

from dsd_spec.acceptance import AcceptanceStats
from dsd_spec.capacity import offload_capacity_gain
from dsd_spec.costs import (
    RoundCosts,
    VerifyCostModel,
    draft_ahead_pays,
    goodput_tokens_per_s,
    round_time_s,
    survival_probability,
)
from dsd_spec.expectation import (
    expected_tokens_iid,
    expected_tokens_per_round,
    optimal_gamma_colocated,
    walltime_factor_colocated,
)
from dsd_spec.window import (
    Ema,
    EstimatorSnapshot,
    WindowBounds,
    WindowEstimator,
    best_prefix,
    choose_gamma,
    priced_wait,
)

__all__ = [
    "AcceptanceStats",
    "Ema",
    "EstimatorSnapshot",
    "RoundCosts",
    "VerifyCostModel",
    "WindowBounds",
    "WindowEstimator",
    "best_prefix",
    "choose_gamma",
    "draft_ahead_pays",
    "expected_tokens_iid",
    "expected_tokens_per_round",
    "goodput_tokens_per_s",
    "offload_capacity_gain",
    "optimal_gamma_colocated",
    "priced_wait",
    "round_time_s",
    "survival_probability",
    "walltime_factor_colocated",
]
