"""Calibration of DSD-Sim against the real runtime: simulate exactly what bench/runtime_bench.py measured.

    python bench/runtime_bench.py          # measures docs/benchmarks/runtime.csv
    python bench/sim_calibration.py        # profiles (dsd profile, on the benchmark's prompts), simulates, compares

The profile is measured independently of the benchmark run (`dsd_runtime.profiling`, the code behind
`dsd profile`): draft step, t_v(k), per-position acceptance, loopback RTT. Each benchmark row becomes a scenario:
one draft, one target, a closed-loop client issuing the benchmark's requests back to back, RTT = emulated RTT +
measured loopback RTT. Writes docs/simulator/calibration.{csv,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from dsd_runtime import profiling
from dsd_runtime.common import models
from dsd_sim import scenario, simulation

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from runtime_bench import PROMPTS  # noqa: E402  (the benchmark's own prompts)

MODES = {"target only (HF generate)": "target_only", "DSD blocking": "blocking", "DSD pipelined": "pipelined"}


def _scenario(profile: profiling.Profile | dict, mode: str, rtt_ms: float, gamma: int, output_tokens: int,
              requests: int) -> scenario.Scenario:
    p = profile if isinstance(profile, dict) else profile.__dict__
    per_request_s = output_tokens * p["verify_points_ms"][0][1] / 1000
    return scenario.from_dict({
        "name": f"calibration-{mode}-{rtt_ms:g}ms", "mode": mode, "duration_s": requests * per_request_s,
        "drafts": {"count": 1, "tiers": [{"fraction": 1.0, "step_ms": p["draft_step_ms"]}]},
        "targets": {"count": 1, "verify_points_ms": p["verify_points_ms"]},
        "network": {"rtt_ms": {"mean": rtt_ms + p["rtt_ms"]}},
        "acceptance": {"kind": "trace", "alpha_by_position": p["alpha_by_position"]},
        "gamma": {"policy": "static", "value": gamma, "max": max(8, gamma)},
        "workload": {"kind": "closed", "prompt_tokens": {"mean": p["notes"]["mean_prompt_tokens"]},
                     "output_tokens": {"mean": output_tokens}},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measured", type=Path, default=REPO / "docs" / "benchmarks" / "runtime.csv")
    parser.add_argument("--profile", type=Path, default=REPO / "docs" / "simulator" / "profile.json",
                        help="reused if it exists (delete it to re-profile)")
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "simulator")
    args = parser.parse_args()
    if args.profile.exists():
        prof = json.loads(args.profile.read_text())
    else:
        p = profiling.profile(models.SMOLLM2_TARGET, models.SMOLLM2_DRAFT, gamma=8,
                              max_tokens=args.output_tokens, threads=1, prompts=PROMPTS)
        p.write(args.profile)
        prof = json.loads(args.profile.read_text())
    measured = list(csv.DictReader(args.measured.open()))
    rows = []
    for m in measured:
        if m["mode"] not in MODES:
            continue
        rtt = float(m["rtt_ms"])
        sim = simulation.run(_scenario(prof, MODES[m["mode"]], rtt, args.gamma, args.output_tokens, 40)).summary()
        # tokens/s of one request stream: requests run back to back, so total tokens over total time
        predicted_tps = sim["tokens_total"] / sim["simulated_s"]
        predicted_tpot = sim["tpot_ms"]["mean"]
        rows.append({
            "mode": m["mode"], "rtt_ms": rtt, "measured_tokens_per_s": float(m["tokens_per_s"]),
            "predicted_tokens_per_s": round(predicted_tps, 2),
            "tokens_per_s_error": round(predicted_tps / float(m["tokens_per_s"]) - 1, 3),
            "measured_tpot_ms": float(m["tpot_ms"]), "predicted_tpot_ms": round(predicted_tpot, 2),
            "tpot_error": round(predicted_tpot / float(m["tpot_ms"]) - 1, 3),
        })
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "calibration.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    md = ["| mode | RTT ms | measured tokens/s | predicted | error | measured TPOT ms | predicted | error |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['mode']} | {r['rtt_ms']:g} | {r['measured_tokens_per_s']} | {r['predicted_tokens_per_s']} | "
           f"{r['tokens_per_s_error']:+.1%} | {r['measured_tpot_ms']} | {r['predicted_tpot_ms']} | "
           f"{r['tpot_error']:+.1%} |" for r in rows]
    worst = max(max(abs(r["tokens_per_s_error"]), abs(r["tpot_error"])) for r in rows)
    md.append(f"\nWorst error: {worst:.1%}. Profile: draft step {prof['draft_step_ms']:.1f} ms, "
              f"t_v(1) {prof['verify_points_ms'][0][1]:.1f} ms, alpha_1 {prof['alpha_by_position'][0]:.2f}, "
              f"loopback RTT {prof['rtt_ms']:.2f} ms.")
    (args.out / "calibration.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
