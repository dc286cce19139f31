"""Which training prompts make the distilled draft agree with the target on unseen chat: alpha_1 against minutes.

    python bench/distill_prompts_bench.py              # 4 training sets x 4 minutes, ~25 min on 2 cores
    python bench/distill_prompts_bench.py --minutes 2  # quicker, noisier

Each training set runs `dsd models distill`'s own code (`distilling.distill`: 2 layers, 8192-token head, top-16
soft labels, same seed), one after the other on the same machine, for the same minutes:
  - 640 topic prompts: the hand-written prompts and questions about a subject (the default before 2026-12-07);
  - 1400 from three families: the hand-written prompts, then subject, how-to and writing prompts in turn (the
    default of 2026-12-07 morning);
  - 1400 from six families: the same count, with device, event and phenomenon questions taken in turn too;
  - 2600 from six families: `dsd models distill`'s default.
Alpha_1 = greedy agreement on `distilling.EVAL_PROMPTS` (24 unseen chat prompts), measured every minute of
training. The target's generations are cached per prompt (~6 min per 640 prompts the first time), so the
sets share them. Writes docs/benchmarks/distill-prompts.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

from dsd_runtime import distilling
from dsd_runtime.common import models

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "benchmarks"


def training_sets() -> dict[str, list[str]]:
    """Each set keeps its families' seeded order (`training_prompts`), so the older sets are the defaults they were."""
    first_three = ("subject", "how-to", "writing")
    return {"640 topic prompts": distilling.training_prompts(640, seed=0, families=("subject",)),
            "1400 from three families": distilling.training_prompts(1400, seed=0, families=first_three),
            "1400 from six families": distilling.training_prompts(1400, seed=0),
            "2600 from six families (default)": distilling.training_prompts(2600, seed=0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0, help="Training minutes per set.")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, prompts in training_sets().items():
            result = distilling.distill(models.SMOLLM2_TARGET, Path(tmp) / "draft", train_minutes=args.minutes,
                                        prompts=prompts)
            meta = json.loads((result.path / "dsd-distill.json").read_text())
            for point in meta["curve"]:
                rows.append({"training set": name, "prompts": len(prompts), "minutes": point["minutes"],
                             "steps": point["steps"], "unseen agreement": round(point["unseen_agreement"], 4),
                             "held-out agreement": round(point["held_out_agreement"], 4)})
            print(f"{name}: unseen {result.unseen_agreement:.1%}, held out {result.greedy_agreement:.1%}, "
                  f"c = {result.cost_ratio:.3f}, {meta['train_steps']} steps", flush=True)
    _write(rows, args.minutes)


def _write(rows: list[dict], minutes: float) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "distill-prompts.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"Greedy agreement of the 2-layer draft on 24 unseen chat prompts (alpha_1), {minutes:g} min per set "
             "(`python bench/distill_prompts_bench.py`).", "",
             "| training set | minutes | steps | unseen | held out |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['training set']} | {r['minutes']} | {r['steps']} | {r['unseen agreement']:.1%} | "
              f"{r['held-out agreement']:.1%} |" for r in rows]
    (OUT / "distill-prompts.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name in dict.fromkeys(r["training set"] for r in rows):
        points = [r for r in rows if r["training set"] == name]
        ax.plot([r["minutes"] for r in points], [r["unseen agreement"] for r in points], marker="o", label=name)
    ax.axhline(0.4, color="grey", linestyle="--", label="goal (0.4)")
    ax.set_xlabel("training minutes (2 cores)")
    ax.set_ylabel("alpha_1 on unseen chat")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "distill-prompts.png", dpi=120)


if __name__ == "__main__":
    main()
