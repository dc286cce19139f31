"""What coupled (drafter-invariant) sampling costs in acceptance against rejection sampling's maximal coupling.

Along the target's own sampled continuations, per position: alpha of rejection sampling = sum_x min(p, q)
(exact), alpha of the Gumbel coupling = P(argmax(log p + G) == argmax(log q + G)) over 300 noise draws. Tiny
target and its perturbed-head draft (the lossless tests' pair), built locally. Prints one line per temperature.

    python bench/coupling_cost.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from dsd_runtime.common import models, seeding, tiny
from dsd_spec import sampling

PROMPTS = ["Once upon a time", "The quick brown fox", "1 2 3"]


def main() -> None:
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="dsd-coupling-"))
    t = tiny.build_tiny_model(root / "target", seed=1)
    target, draft = models.load(str(t)), models.load(str(tiny.build_tiny_model(root / "draft", seed=2, base=t,
                                                                                 perturb=0.25)))
    for temperature in (0.7, 1.0):
        params = sampling.SamplingParams(temperature=temperature)
        maximal, coupled = [], []
        for s in range(6):
            ids = target.tokenizer(PROMPTS[s % 3])["input_ids"]
            for _ in range(30):
                with torch.no_grad():
                    p = sampling.warp(target.lm.model(torch.tensor([ids])).logits[0, -1], params).double()
                    q = sampling.warp(draft.lm.model(torch.tensor([ids])).logits[0, -1], params).double()
                maximal.append(float(torch.minimum(p, q).sum()))
                g = seeding.gumbel_noise(1000 + s, 0, 300, p.shape[-1])
                coupled.append(float((sampling.sample_coupled(p, g) == sampling.sample_coupled(q, g)).double().mean()))
                ids.append(int(sampling.sample_coupled(p, seeding.gumbel_noise(s, len(ids), 1, p.shape[-1])[0])))
        a_max, a_cpl = sum(maximal) / len(maximal), sum(coupled) / len(coupled)
        print(f"temperature {temperature}: alpha rejection (maximal coupling) {a_max:.3f}, coupled {a_cpl:.3f} "
              f"({a_cpl / a_max:.2f}x), {len(maximal)} positions")


if __name__ == "__main__":
    main()
