"""`dsd models distill`: train a small draft for a target on the target's own generations, on CPU, in minutes.

Draft = the target's token embedding, final norm and (tied) head, plus its first `num_layers` decoder layers,
fine-tuned by teacher forcing to predict the target's greedy next token on sequences the target itself
generated from chat prompts. Embedding and head are frozen (they dominate the parameter count). The result
shares the target's tokenizer by construction and is cached on disk.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from dsd_runtime.common import models

PROMPTS = [
    "Write one sentence about the sea.", "What is the capital of France?", "Explain what a neural network is.",
    "Give me three tips for better sleep.", "Write a short poem about autumn.", "How do I boil an egg?",
    "What is 12 times 7?", "Summarize the plot of Romeo and Juliet.", "Why is the sky blue?",
    "Write a Python function that reverses a string.", "What are the benefits of exercise?",
    "Describe a cat to someone who has never seen one.", "What is photosynthesis?", "Tell me a fun fact.",
    "How does a computer store numbers?", "Write a haiku about mountains.", "What is machine learning?",
    "Give me a recipe for pancakes.", "Explain gravity to a child.", "What is the largest planet?",
    "List five fruits.", "How do airplanes fly?", "What is the meaning of life?", "Write a thank-you note.",
    "Explain what an API is.", "What causes rain?", "How do I learn to code?", "Describe the city of Paris.",
    "What is the difference between weather and climate?", "Write a limerick about a dog.",
    "What is a prime number?", "How do vaccines work?", "Give advice for a job interview.",
    "Explain the water cycle.", "What is democracy?", "Write a short story opening line.",
    "How does the internet work?", "What is the speed of light?", "Name three famous painters.",
    "Why do leaves change color?", "What is a black hole?", "Write a motivational quote.",
    "How do I make a cup of tea?", "What is recursion in programming?", "Describe a sunset.",
    "What are the planets of the solar system?", "Explain supply and demand.", "What is DNA?",
]


@dataclass(frozen=True)
class DistillResult:
    path: Path
    greedy_agreement: float  # held-out: P(draft argmax == target's next token) = greedy acceptance estimate
    num_train_tokens: int
    seconds: float


def _generate(target: models.LoadedModel, prompts: list[str], max_new: int, batch: int,
              progress: Callable[[str, float], None]) -> list[tuple[list[int], int]]:
    """(sequence ids, prompt length) of the target's own greedy chat generations."""
    tok = target.tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    out: list[tuple[list[int], int]] = []
    for i in range(0, len(prompts), batch):
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                         add_generation_prompt=True) for p in prompts[i:i + batch]]
        enc = tok(texts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            gen = target.lm.model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                                           pad_token_id=tok.pad_token_id)
        for row, mask in zip(gen, enc["attention_mask"], strict=True):
            pad = int((mask == 0).sum())
            ids = row[pad:].tolist()
            while ids and ids[-1] == tok.pad_token_id:
                ids.pop()
            out.append((ids, int(mask.sum())))
        progress(f"target generations {len(out)}/{len(prompts)}", len(out) / len(prompts))
    return out


def build_draft(target_dir: Path, num_layers: int) -> torch.nn.Module:
    draft = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32)
    draft.model.layers = draft.model.layers[:num_layers]
    draft.config.num_hidden_layers = num_layers
    if hasattr(draft.config, "layer_types") and draft.config.layer_types:
        draft.config.layer_types = draft.config.layer_types[:num_layers]
    for p in draft.parameters():
        p.requires_grad = False
    for p in [*draft.model.layers.parameters(), *draft.model.norm.parameters()]:
        p.requires_grad = True
    return draft


def _agreement(draft: torch.nn.Module, data: list[tuple[list[int], int]]) -> float:
    hits = total = 0
    with torch.inference_mode():
        for ids, plen in data:
            if len(ids) <= plen + 1:
                continue
            pred = draft(input_ids=torch.tensor([ids[:-1]])).logits[0].argmax(-1)
            hits += int((pred[plen - 1:] == torch.tensor(ids[plen:])).sum())
            total += len(ids) - plen
    return hits / total if total else 0.0


def distill(target_ref: str, out_dir: Path, num_layers: int = 2, train_minutes: float = 4.0,
            max_new_tokens: int = 96, seed: int = 0,
            progress: Callable[[str, float], None] = lambda msg, frac: None) -> DistillResult:
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    target = models.load(target_ref)
    prompts = PROMPTS[:]
    rng.shuffle(prompts)
    data = _generate(target, prompts, max_new_tokens, 8, progress)
    held_out, train = data[:6], data[6:]
    draft = build_draft(models.plain_weights_dir(target_ref), num_layers)
    opt = torch.optim.AdamW([p for p in draft.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.0)
    deadline = time.perf_counter() + train_minutes * 60
    steps = tokens = 0
    draft.train()
    while time.perf_counter() < deadline:
        ids, plen = train[rng.randrange(len(train))]
        if len(ids) <= plen + 1:
            continue
        logits = draft(input_ids=torch.tensor([ids[:-1]])).logits[0, plen - 1:]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[plen:]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        tokens += len(ids) - plen
        left = max(0.0, deadline - time.perf_counter())
        progress(f"training step {steps} loss {loss.item():.3f}", 1 - left / (train_minutes * 60))
    draft.eval()
    agreement = _agreement(draft, held_out)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    draft.save_pretrained(tmp)
    target.tokenizer.padding_side = "right"
    target.tokenizer.save_pretrained(tmp)
    meta = {"target": target_ref, "num_layers": num_layers, "train_steps": steps, "train_tokens": tokens,
            "held_out_greedy_agreement": agreement, "seconds": time.perf_counter() - start}
    (tmp / "dsd-distill.json").write_text(json.dumps(meta, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return DistillResult(out_dir, agreement, tokens, time.perf_counter() - start)
