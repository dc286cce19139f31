"""`dsd profile`: measure the real runtime into a profile the simulator reads (calibration).

Measures, on this machine: the draft's step time, the target's forward time over k positions (verify windows
and prompt prefills), per-position acceptance of the pair on real generations (greedy, through a real target
server over gRPC), and the loopback gRPC round trip. `dsd sim` scenarios take these numbers via
`targets.verify_points_ms`, `drafts.tiers[].step_ms`, `acceptance.alpha_by_position` and `network.rtt_ms`.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from dsd_runtime.common import models
from dsd_runtime.draft.client import LinkEmulation
from dsd_runtime.draft.engine import DraftEngine
from dsd_runtime.draft.proposing import Proposer
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats
from dsd_runtime.draft.windowing import WindowConfig
from dsd_runtime.target.server import TargetServer, TargetSettings
from dsd_spec.sampling import SamplingParams

PROFILE_PROMPTS = [
    "Explain why the ocean is salty.", "Give me a short plan for learning to cook.",
    "What is the difference between a virus and a bacterium?", "Write a friendly reminder about a meeting.",
]
PREFILL_POINTS = (16, 32, 64, 128)


@dataclass
class Profile:
    target: str
    draft: str
    threads: int
    draft_step_ms: float
    verify_points_ms: list[tuple[int, float]]
    alpha_by_position: list[float]
    rtt_ms: float  # loopback gRPC round trip of an empty request (no model work)
    gamma: int
    rounds: int
    notes: dict[str, float] = field(default_factory=dict)
    # Output tokens of the acceptance run by who produced them (draft.speculating.GenerationStats).
    tokens_by_source: dict[str, int] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def chat_prompt_ids(model: models.LoadedModel, text: str) -> list[int]:
    tok = model.tokenizer
    if tok.chat_template:
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      tokenize=True, return_dict=False)
    else:
        ids = tok(text)["input_ids"]
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)


def verify_points(target: models.LoadedModel, context: list[int], ks: list[int], repeats: int = 5,
                  keep_last: int | None = None) -> list[tuple[int, float]]:
    """Median ms of the target's forward over k new positions after `context` (KV cache warm); `keep_last` as
    in CausalLM.forward (a prefill computes logits only for the window's positions)."""
    lm = target.lm
    out = []
    filler = (context * (max(ks) // max(1, len(context)) + 1))
    for k in ks:
        times = []
        for _ in range(repeats):
            seq = lm.new_sequence()
            lm.forward(seq, context)
            t0 = time.perf_counter()
            lm.forward(seq, filler[:k], keep_last=keep_last)
            times.append(time.perf_counter() - t0)
        out.append((k, 1000 * statistics.median(times)))
    return out


def draft_step_ms(draft: models.LoadedModel, context: list[int], steps: int = 64) -> float:
    """Mean step over a whole generation: steps get slower as the context (attention over the KV) grows."""
    proposer = Proposer(draft.lm, SamplingParams(temperature=0.0), 0)
    ids = list(context)
    times = []
    for _ in range(steps):
        p = proposer.propose(ids)
        times.append(p.seconds)
        ids.append(p.token)
    return 1000 * statistics.mean(times[1:])  # the first step includes the prompt's prefill


def conditional_alphas(stats: list[GenerationStats], gamma: int) -> list[float]:
    """alpha_i (i = 1..gamma): P(position i accepted | 1..i-1 accepted), from the requests' per-position counts."""
    reached = [float(sum(st.rounds for st in stats))]
    reached += [float(sum(st.accepted_per_position[i] for st in stats)) for i in range(gamma)]
    return [reached[i + 1] / reached[i] if reached[i] else 0.0 for i in range(gamma)]


def acceptance_by_position(engine: DraftEngine, prompts: list[list[int]], gamma: int, max_tokens: int
                           ) -> tuple[list[float], int, dict[str, int]]:
    """Conditional acceptance alpha_i (i = 1..gamma) over greedy DSD generations, the rounds seen, and the
    output tokens by source."""
    all_stats = []
    for ids in prompts:
        stats = GenerationStats()
        req = GenerationRequest(ids, max_tokens, SamplingParams(temperature=0.0), 0,
                                frozenset({int(engine.draft.tokenizer.eos_token_id or -1)}))
        for _ in engine.speculator.generate(req, None, stats):
            pass
        all_stats.append(stats)
    by_source: dict[str, int] = {}
    for st in all_stats:
        for k, v in st.tokens_by_source.items():
            by_source[k] = by_source.get(k, 0) + v
    return conditional_alphas(all_stats, gamma), sum(st.rounds for st in all_stats), by_source


def loopback_rtt_ms(engine: DraftEngine, repeats: int = 20) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.client.info(5.0)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def profile(target_ref: str, draft_ref: str, gamma: int = 8, max_tokens: int = 64, threads: int = 1,
            prompts: list[str] | None = None) -> Profile:
    torch.set_num_threads(threads)
    target, draft = models.load(target_ref), models.load(draft_ref)
    ids = [chat_prompt_ids(target, p) for p in (prompts or PROFILE_PROMPTS)]
    # Verify windows run mid-generation: time them after the prompt plus half the output; prefills after nothing.
    mid = (ids[0] * (1 + max_tokens // max(1, len(ids[0]))))[:len(ids[0]) + max_tokens // 2]
    points = verify_points(target, mid, list(range(1, gamma + 2)))
    points += verify_points(target, ids[0][:1], list(PREFILL_POINTS), keep_last=1)
    step = draft_step_ms(draft, ids[0], max_tokens)
    server = TargetServer(target, TargetSettings(), "127.0.0.1:0")
    server.start()
    engine = DraftEngine(draft, f"127.0.0.1:{server.port}", WindowConfig(gamma, 1, gamma, "static", False),
                         LinkEmulation())
    try:
        engine.connect()
        rtt = loopback_rtt_ms(engine)
        alphas, rounds, by_source = acceptance_by_position(engine, ids, gamma, max_tokens)
    finally:
        engine.close()
        server.stop(0)
    return Profile(target.name, draft.name, threads, step, points, alphas, rtt, gamma, rounds,
                   {"mean_prompt_tokens": statistics.mean(len(i) for i in ids)}, by_source)
