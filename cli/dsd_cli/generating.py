"""`dsd generate`: one request through a real target server (in-process, gRPC on loopback) and a draft."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console

from dsd_runtime.common import models
from dsd_runtime.draft.client import LinkEmulation
from dsd_runtime.draft.engine import DraftEngine, TextRequest
from dsd_runtime.draft.windowing import WindowConfig
from dsd_runtime.target.server import TargetServer, TargetSettings
from dsd_spec.sampling import SamplingParams


def _target_alone_tokens_per_s(target: models.LoadedModel, prompt_ids: list[int], n: int) -> float:
    start = time.perf_counter()
    target.lm.greedy(prompt_ids, n)
    return n / (time.perf_counter() - start)


def generate_once(prompt: str, target_ref: str, draft_ref: str, max_tokens: int, temperature: float, seed: int,
                  chat: bool, window: WindowConfig, delay_ms: float, compare: bool,
                  window_stats: Path | None = None) -> None:
    console = Console(stderr=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with console.status("loading models"):
        target = models.load(target_ref)
        draft = models.load_tokenizer(target_ref) if draft_ref == models.NO_MODEL else models.load(draft_ref)
    server = TargetServer(target, TargetSettings(), "127.0.0.1:0")
    server.start()
    engine = DraftEngine(draft, f"127.0.0.1:{server.port}", window, LinkEmulation(delay_ms),
                         window_stats=window_stats)
    try:
        engine.connect()
        tok = draft.tokenizer
        if chat and tok.chat_template:
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                          tokenize=True, return_dict=False)
        else:
            ids = tok(prompt)["input_ids"]
        ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
        done = engine.complete(TextRequest(ids, max_tokens, SamplingParams(temperature=temperature), seed))
        print(done.text)
        tps = done.completion_tokens / done.seconds if done.seconds else 0.0
        s = done.stats
        console.print(f"\n[bold]{done.completion_tokens} tokens in {done.seconds:.2f}s = {tps:.1f} tokens/s[/]  "
                      f"acceptance {s.acceptance:.1%}  mean accepted length {s.mean_accepted_length:.2f}  "
                      f"rounds {s.rounds}  gamma {window.gamma} ({window.policy}, "
                      f"{'pipelined' if window.pipelined else 'blocking'}), proposer {window.proposer}, "
                      f"draft {draft.name if draft.lm is not None else 'none'}")
        console.print("tokens by source: " + ", ".join(f"{k} {v}" for k, v in sorted(s.tokens_by_source.items())) +
                      "  (model/lookup/suffix: accepted drafts; target: its recovered/bonus tokens and "
                      "empty-window rounds)")
        if window_stats is not None:
            saved = engine.restored_stats
            console.print(f"window statistics: started from {window_stats} ({saved.model_rounds:.0f} model-drafted "
                          f"rounds, saved {time.time() - saved.saved_at:.0f} s ago)" if saved else
                          f"window statistics: none saved for this pair yet; this run's go to {window_stats}")
        if compare and done.completion_tokens:
            base = _target_alone_tokens_per_s(target, ids, done.completion_tokens)
            console.print(f"target alone: {base:.1f} tokens/s  ->  DSD speedup {tps / base:.2f}x")
    finally:
        engine.close()
        server.stop(0)
