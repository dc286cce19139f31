"""GPU check of the runtime (run on a CUDA machine; not part of CI):

1. the CUDA path is lossless: tiny target + partially agreeing draft on the GPU, real gRPC on loopback, greedy DSD
   (blocking and pipelined) equals the target decoding alone, token for token; the same in bfloat16;
2. what speculation costs on a GPU: a random 1.1B-parameter Llama target (TinyLlama's shape) and a 4-layer draft
   in bfloat16, forward time over k positions (t_v(k)) and the draft step, through the runtime's CausalLM;
3. the goodput these costs give (dsd_spec) at alpha 0.6 / 0.8 and RTT 0 / 20 ms, against the target alone.

    python bench/gpu_check.py --out results.json            # on the GPU machine
    python bench/gpu_check.py --device cpu --small           # a smoke run of the same code on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dsd_runtime.common import lm, models, tiny
from dsd_runtime.draft.client import LinkEmulation
from dsd_runtime.draft.engine import DraftEngine
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats
from dsd_runtime.draft.windowing import WindowConfig
from dsd_runtime.target.server import TargetServer, TargetSettings
from dsd_spec import RoundCosts, VerifyCostModel, goodput_tokens_per_s
from dsd_spec.sampling import SamplingParams

PROMPTS = ["Hello", "The quick brown fox", "def f(x):\n    return", "1 2 3 4", "Once upon a time", "zzz",
           "A B C", "The sea is"]


def lossless_on(device: str, dtype: torch.dtype, work: Path) -> dict[str, object]:
    target_dir = tiny.build_tiny_model(work / "target", seed=1)
    draft_dir = tiny.build_tiny_model(work / "draft", seed=2, base=target_dir, perturb=0.25)
    target = models.load(str(target_dir), dtype, device)
    draft = models.load(str(draft_dir), dtype, device)
    server = TargetServer(target, TargetSettings(), "127.0.0.1:0")
    server.start()
    result: dict[str, object] = {"device": str(target.lm.device), "dtype": str(target.lm.dtype)}
    try:
        for pipelined in (False, True):
            engine = DraftEngine(draft, f"127.0.0.1:{server.port}", WindowConfig(4, 1, 8, "static", pipelined),
                                 LinkEmulation())
            engine.connect()
            same, accepted, proposed = 0, 0, 0
            for prompt in PROMPTS:
                ids = target.tokenizer(prompt)["input_ids"]
                want = target.lm.greedy(ids, 24)
                stats = GenerationStats()
                got = list(engine.speculator.generate(
                    GenerationRequest(ids, 24, SamplingParams(temperature=0.0), 0, frozenset()), None, stats))
                same += got == want
                accepted, proposed = accepted + stats.accepted, proposed + stats.proposed
            engine.close()
            result["pipelined" if pipelined else "blocking"] = {
                "identical": f"{same}/{len(PROMPTS)}", "acceptance": round(accepted / max(1, proposed), 3)}
    finally:
        server.stop(0)
    return result


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def forward_ms(model: lm.CausalLM, context: int, k: int, device: str, repeats: int = 10) -> float:
    vocab = model.vocab_size
    gen = torch.Generator().manual_seed(k)
    ctx = torch.randint(0, vocab, (context,), generator=gen).tolist()
    new = torch.randint(0, vocab, (k,), generator=gen).tolist()
    times = []
    for _ in range(repeats):
        seq = model.new_sequence()
        model.forward(seq, ctx, keep_last=1)
        _sync(device)
        t0 = time.perf_counter()
        model.forward(seq, new)  # returns CPU logits: includes the device -> host copy the runtime does
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def costs_on(device: str, small: bool) -> dict[str, object]:
    torch.manual_seed(0)
    big = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, vocab_size=32000)
    little = dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=32000)
    if small:
        big.update(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4)
        little.update(hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    target = lm.CausalLM(LlamaForCausalLM(LlamaConfig(**big)).to(device=device, dtype=dtype), "random-1.1b")
    draft = lm.CausalLM(LlamaForCausalLM(LlamaConfig(**little)).to(device=device, dtype=dtype), "random-draft")
    params = sum(p.numel() for p in target.model.parameters())
    ks = [1, 2, 3, 5, 9, 17]
    points = [(k, forward_ms(target, 256, k, device)) for k in ks]
    step = forward_ms(draft, 256, 1, device)
    verify = VerifyCostModel(tuple((k, ms / 1000) for k, ms in points))
    table = {}
    for alpha in (0.6, 0.8):
        for rtt_ms in (0, 20):
            costs = RoundCosts(step / 1000, verify, rtt_ms / 1000)
            alone = 1 / verify(1)
            best = {mode: max(((g, goodput_tokens_per_s(costs, [alpha] * 18, g, mode == "pipelined"))
                               for g in range(1, 9)), key=lambda x: x[1]) for mode in ("blocking", "pipelined")}
            table[f"alpha={alpha} rtt={rtt_ms}ms"] = {
                mode: {"gamma": g, "tokens_per_s": round(tps, 1), "x_target": round(tps / alone, 2)}
                for mode, (g, tps) in best.items()}
    return {"target_params": params, "dtype": str(dtype), "t_v_ms": dict(points), "draft_step_ms": round(step, 3),
            "target_alone_tokens_per_s": round(1000 / points[0][1], 1), "predicted_best": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny shapes (CPU smoke run)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    report: dict[str, object] = {"torch": torch.__version__}
    if args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as work:
        report["lossless_float64"] = lossless_on(args.device, torch.float64, Path(work) / "f64")
        report["lossless_bfloat16"] = lossless_on(args.device, torch.bfloat16, Path(work) / "bf16")
    report["costs"] = costs_on(args.device, args.small)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
