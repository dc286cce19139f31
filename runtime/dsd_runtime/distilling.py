"""`dsd models distill`: train a small draft for a target on the target's own generations, on CPU, in minutes.

Draft = the target's token embedding and final norm, its first `num_layers` decoder layers, and a head over
the `head_tokens` most frequent answer tokens (SmolLM2's full 49,152-token head costs as much as seven of its
decoder layers). The layers and the head are trained on sequences the target generated itself from a shipped
set of chat prompts, against the target's top-k next-token distribution (soft labels) and its greedy token;
the embedding stays frozen. The result shares the target's tokenizer by construction and is cached on disk.
"""


from __future__ import annotations

import hashlib
import itertools
import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from dsd_runtime.common import lm, models

# (stage, detail, fraction of the stage done): the CLI shows one progress bar with an ETA per stage.
Progress = Callable[[str, str, float], None]

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


# A 48-prompt corpus overfits (train loss 0.02, 17% held-out agreement): templates x topics give the draft the
# target's style on many subjects. bench/runtime_bench.py's prompts and EVAL_PROMPTS use none of these topics.
TOPICS = [
    "the ocean", "volcanoes", "the moon", "electricity", "the Roman Empire", "chess", "coffee", "rainbows",
    "honeybees", "the human heart", "glaciers", "jazz music", "the stock market", "sleep", "deserts",
    "penguins", "solar panels", "earthquakes", "libraries", "the printing press", "friendship", "tigers",
    "mathematics", "bread baking", "the Olympic Games", "rivers", "robots", "the immune system", "forests",
    "trains", "the French Revolution", "cloud computing", "music theory", "dinosaurs", "recycling", "gardening",
    "the brain", "airplanes", "photography", "the Great Wall of China", "kindness", "spiders", "wind energy",
    "the alphabet", "marathons", "bridges", "snow", "elephants", "the Renaissance", "cooking rice", "magnets",
    "the Internet", "coral reefs", "time zones", "chocolate", "yoga", "satellites", "owls", "databases",
]
MORE_TOPICS = [
    "lighthouses", "the Moon landing", "octopuses", "origami", "thunderstorms", "the violin", "tea ceremonies",
    "wolves", "the metric system", "submarines", "windmills", "the Silk Road", "comets", "mushrooms", "ballet",
    "pirates", "the periodic table", "hot air balloons", "castles", "whales", "public speaking", "saving money",
    "board games", "the Sahara", "first aid", "knitting", "the Amazon rainforest", "compost", "skyscrapers",
    "camping stoves", "the piano", "sharks", "bread yeast", "street maps", "volunteering", "kites", "rockets",
    "the Arctic", "typewriters", "football", "poetry", "clocks", "sunflowers", "frogs", "lightning",
]
TEMPLATES = [
    "What is {t}?", "Explain {t} in simple terms.", "Write a short poem about {t}.",
    "Give me three facts about {t}.", "Why is {t} important?", "Write one paragraph about {t}.",
    "How would you describe {t} to a child?", "What are the pros and cons of {t}?", "Tell me a story about {t}.",
    "List some questions people ask about {t}.", "Write a short dialogue between two friends about {t}.",
    "Summarize the history of {t} in a few sentences.", "What are common misconceptions about {t}?",
    "Write a tweet about {t}.", "Give me a step-by-step guide related to {t}.",
    "Compare {t} with something similar.", "Write a product description inspired by {t}.",
    "What would a teacher say about {t}?", "Write a haiku about {t}.", "Explain {t} to a busy executive.",
]
# The topic templates above are about a subject ("What is {t}?"); chat is as often a task or a piece of writing.
# Two more families give the draft the target's style there: how-to questions over everyday activities, and
# short writing over occasions and objects. EVAL_PROMPTS and the benchmarks' prompts use none of these subjects.
ACTIVITIES = [
    "change a light bulb", "paint a bedroom wall", "clean a cast-iron pan", "write a cover letter",
    "start a vegetable compost bin", "sharpen a kitchen knife", "learn to juggle", "tie a tie",
    "make a budget for a month", "pack a suitcase for a flight", "back up a laptop", "iron a shirt",
    "train a puppy to sit", "bake banana bread", "prepare for a driving test", "set up a home Wi-Fi network",
    "remove a coffee stain", "write a speech for a retirement party", "organise a bookshelf", "make fresh pasta",
    "care for a sourdough starter", "choose a good watermelon", "start journaling", "hang a picture frame",
    "unclog a kitchen sink", "plan a road trip", "learn to swim as an adult", "make a paper airplane",
    "fall asleep faster", "negotiate a salary", "clean a computer keyboard", "grow tomatoes on a balcony",
    "study for a maths exam", "make a smoothie", "wash a wool sweater", "build a birdhouse",
    "write a short story", "teach a child to ride a scooter", "keep a conversation going", "defrost a freezer",
]
HOWTO_TEMPLATES = [
    "How do I {a}?", "What is the best way to {a}?", "Give me step-by-step instructions to {a}.",
    "What mistakes should I avoid when I {a}?", "I want to {a}. Where do I start?",
    "What do I need to {a}?", "How long does it take to {a}?", "Explain to a beginner how to {a}.",
    "Give me three tips to {a}.", "My friend wants to {a}. What advice would you give?",
]
OCCASIONS = [
    "a new neighbour", "a colleague who is leaving", "a school reunion", "a lost umbrella", "a broken washing "
    "machine", "a surprise gift", "a late train", "a family picnic", "a first day at a new job", "a charity run",
    "a book club meeting", "a delayed parcel", "a rented flat", "a grandmother's birthday", "an old bicycle",
    "a science fair", "a concert ticket", "a noisy upstairs neighbour", "a cancelled flight", "a team victory",
    "a garage sale", "a new coffee machine", "a graduation", "a missed phone call", "a winter holiday",
    "a job application", "a lost dog", "a cooking class", "a museum visit", "a thank-you dinner",
    "a group project", "a hotel stay", "a power cut", "a library card", "a piano recital", "a camping weekend",
]
WRITING_TEMPLATES = [
    "Write a short email about {o}.", "Write a friendly text message about {o}.",
    "Write a two-sentence story about {o}.", "Write a short complaint letter about {o}.",
    "Write an announcement about {o}.", "Write a diary entry about {o}.", "Write a short speech about {o}.",
    "Write a social media post about {o}.", "Write a note to a friend about {o}.",
    "Write three questions someone might ask about {o}.",
]
# Three more kinds of everyday request: how a device works, ideas and plans for an event, and why something
# happens. Each new family raised unseen agreement (docs/benchmarks.md); none of these subjects is in EVAL_PROMPTS
# or the benchmarks' prompts.
DEVICES = [
    "a microwave oven", "a smoke detector", "a thermostat", "a washing machine", "a dishwasher", "a zipper",
    "a vacuum cleaner", "a GPS receiver", "a touchscreen", "an electric kettle", "a car battery", "a stapler",
    "a traffic light", "a barcode scanner", "a hearing aid", "a pressure cooker", "a digital camera",
    "a sewing machine", "a door lock", "a toaster", "a ceiling fan", "a water filter", "a compass", "a heat pump",
    "an electric guitar", "a credit card", "a parachute", "a wind-up watch", "a 3D printer", "a fire extinguisher",
    "a microscope", "a telescope", "a hydroelectric dam", "a doorbell camera", "a pacemaker", "a speed camera",
    "a sailing boat", "a pocket calculator", "a light switch", "a lawn mower",
]
DEVICE_TEMPLATES = [
    "How does {d} work?", "Who invented {d}?", "What are the main parts of {d}?", "How do I choose {d}?",
    "What can go wrong with {d}?", "How has {d} changed over the years?", "Explain how {d} works to a ten-year-old.",
    "Is {d} worth buying?", "How do I look after {d}?", "What did people use before {d}?",
]
EVENTS = [
    "a class trip to a museum", "a baby shower", "a beach day", "a school fundraiser", "a neighbourhood clean-up",
    "a board game night", "a weekend in the mountains", "a company picnic", "a retirement celebration",
    "a book launch", "a family reunion", "a charity bake sale", "a hackathon", "a street festival",
    "a farewell dinner", "a children's science workshop", "a hiking trip with friends", "a charity swim",
    "a movie marathon night", "a first date", "a team offsite", "a cooking competition", "a talent show",
    "a charity concert", "a study group", "a pottery class", "a farmers' market stall", "a poetry evening",
    "a trip to the zoo", "a community garden opening", "a quiz night", "a ski trip", "a sleepover",
    "a bike tour", "a language exchange meetup", "a photography walk",
]
EVENT_TEMPLATES = [
    "Give me five ideas for {e}.", "What should I bring to {e}?", "Make a checklist for {e}.",
    "How do I organise {e}?", "What could go wrong at {e}, and how do I prepare?", "Write a short invitation to {e}.",
    "Suggest a theme for {e}.", "How much should I budget for {e}?", "Make a simple schedule for {e}.",
    "What food should I serve at {e}?",
]
PHENOMENA = [
    "hiccups", "tides", "the northern lights", "jet lag", "static electricity", "yawning", "fog", "rust",
    "echoes", "goosebumps", "hail", "the seasons", "sunburn", "brain freeze", "shooting stars", "muscle cramps",
    "soap bubbles", "sneezing", "ice floating on water", "mirages", "thunder", "the smell of rain", "snoring",
    "tsunamis", "the greenhouse effect", "eclipses", "sea breezes", "frost", "bird migration", "morning dew",
    "wrinkled fingers after a bath", "the Doppler effect", "allergies", "blushing", "monsoons", "quicksand",
    "ocean waves", "jet contrails",
]
PHENOMENON_TEMPLATES = [
    "What causes {p}?", "Why does {p} happen?", "Explain the science behind {p}.", "Is {p} dangerous?",
    "How do scientists study {p}?", "What is a common myth about {p}?", "Describe {p} in simple words.",
    "Where in the world is {p} most common?", "How can I observe {p} myself?",
    "Write a short explanation of {p} for a school report.",
]
# Unseen at training time: other subjects and phrasings, the distribution alpha_1 is reported on.
EVAL_PROMPTS = [
    "How do I fix a flat tyre on a car?", "What makes a good cup of espresso?", "Plan a birthday party for a "
    "seven-year-old.", "Why do onions make people cry?", "Write a short apology email for missing a meeting.",
    "What is the difference between a virus and a bacterium?", "Suggest names for a pet goldfish.",
    "How do noise-cancelling headphones work?", "Write a toast for a wedding.", "What should I do if I feel "
    "stressed at work?", "Explain how interest on a loan works.", "Describe the taste of a mango.",
    "How are pencils made?", "Give me ideas for a rainy Sunday.", "Why is the ocean salty?",
    "Write a review of an imaginary restaurant.", "How can I keep houseplants alive?", "What is a haiku?",
    "Teach me a simple card trick.", "Why do we dream?", "How do elevators know which floor to stop at?",
    "Write a riddle and its answer.", "What should a beginner know about running?", "How does a fridge stay cold?",
]


def prompt_families() -> dict[str, list[str]]:
    """The templated training prompts by family, in template order."""
    return {"subject": [tpl.format(t=topic) for topic in TOPICS + MORE_TOPICS for tpl in TEMPLATES],
            "how-to": [tpl.format(a=activity) for activity in ACTIVITIES for tpl in HOWTO_TEMPLATES],
            "writing": [tpl.format(o=occasion) for occasion in OCCASIONS for tpl in WRITING_TEMPLATES],
            "device": [tpl.format(d=device) for device in DEVICES for tpl in DEVICE_TEMPLATES],
            "event": [tpl.format(e=event) for event in EVENTS for tpl in EVENT_TEMPLATES],
            "phenomenon": [tpl.format(p=phenomenon) for phenomenon in PHENOMENA for tpl in PHENOMENON_TEMPLATES]}


def training_prompts(count: int, seed: int, families: Sequence[str] | None = None) -> list[str]:
    """`count` distinct chat prompts: the hand-written ones, then the templated families (all, or the named
    ones) taken in turn, each in a seeded order. Families are shuffled in a fixed order whichever are taken, so a
    family's order, and a smaller set of families' prompts, stay as they were when families are added."""
    rng = random.Random(seed)
    shuffled = prompt_families()
    for family in shuffled.values():
        rng.shuffle(family)
    chosen = [shuffled[name] for name in (families or shuffled)]
    in_turn = [p for group in itertools.zip_longest(*chosen) for p in group if p is not None]
    return (PROMPTS + in_turn)[:count]


@dataclass(frozen=True)
class Example:
    """A target generation: ids (prompt + answer), the prompt's length, and for each answer token the target's
    top-k next-token ids and probabilities at the position that predicts it (the soft labels)."""

    ids: list[int]
    prompt_len: int
    top_ids: torch.Tensor  # [answer_len, k] int64
    top_probs: torch.Tensor  # [answer_len, k] float32


@dataclass(frozen=True)
class DistillResult:
    path: Path
    greedy_agreement: float  # held-out, training distribution: P(draft argmax == target's next token)
    unseen_agreement: float  # the same on EVAL_PROMPTS: alpha_1 of greedy speculation on unseen chat
    cost_ratio: float  # c: one draft step over one target step (one token after a 200-token context)
    num_train_tokens: int
    seconds: float


def _generate(target: models.LoadedModel, prompts: list[str], max_new: int, batch: int,
              progress: Progress) -> list[tuple[list[int], int]]:
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
        progress("target generations", f"{len(out)}/{len(prompts)}", len(out) / len(prompts))
    return out


@torch.inference_mode()
def _soft_labels(target: models.LoadedModel, data: list[tuple[list[int], int]], k: int) -> list[Example]:
    """The target's top-k next-token distribution at every answer position (one teacher-forced pass each)."""
    model = target.lm.model
    out = []
    for ids, plen in data:
        logits = model(input_ids=torch.tensor([ids[:-1]])).logits[0, plen - 1:].float()
        top = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
        out.append(Example(ids, plen, top.indices, top.values))
    return out


def _cached_examples(target: models.LoadedModel, target_ref: str, prompts: list[str], max_new: int, k: int,
                     progress: Progress) -> list[Example]:
    """The target's generations and soft labels are the slow part (~6 minutes per 640 prompts on 2 cores): cached
    per prompt, so a retrain reuses them and a run with more prompts generates only the new ones."""
    key = hashlib.sha256(json.dumps([target_ref, max_new, k]).encode()).hexdigest()[:16]
    path = models.models_cache() / "distill-data" / f"{key}.pt"
    cached: dict[str, dict | None] = torch.load(path) if path.exists() else {}
    missing = list(dict.fromkeys(p for p in prompts if p not in cached))
    if missing:
        generated = _generate(target, missing, max_new, 16, progress)
        cached.update(dict.fromkeys(missing))  # an empty answer teaches nothing: kept as None, not asked again
        usable = [(p, d) for p, d in zip(missing, generated, strict=True) if len(d[0]) > d[1] + 1]
        for (prompt, _), example in zip(usable, _soft_labels(target, [d for _, d in usable], k), strict=True):
            cached[prompt] = example.__dict__
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(cached, tmp)
        tmp.replace(path)
    return [Example(**e) for e in (cached[p] for p in prompts) if e is not None]


def frequent_tokens(answers: list[list[int]], vocab_size: int, size: int, always: list[int]) -> torch.Tensor:
    """The head's vocabulary: `always` (end-of-text ids), then answer tokens by frequency, then the lowest ids not
    yet taken (BPE assigns ids in merge order, roughly most frequent first). Sorted ids."""
    tokens = torch.tensor([t for ids in answers for t in ids], dtype=torch.long)
    counts = torch.bincount(tokens, minlength=vocab_size)
    order = torch.sort(-counts, stable=True).indices  # by frequency, ties by ascending id
    chosen = list(dict.fromkeys([*always, *order.tolist()]))[:min(size, vocab_size)]
    return torch.tensor(sorted(chosen), dtype=torch.long)


def draft_layer_ids(target_layers: int, num_layers: int) -> list[int]:
    """The target layers a draft keeps: its first `num_layers`.

    Measured alternative (layer-skipping style, first and last layers kept): 20.9% held-out greedy agreement
    against 25.4% for the prefix with the same data and budget, so the prefix stays.
    """
    return list(range(min(num_layers, target_layers)))


def build_draft(target_dir: Path, num_layers: int) -> torch.nn.Module:
    """The target cut to its first `num_layers` (full head); only the layers and the final norm train."""
    draft = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32)
    keep = draft_layer_ids(len(draft.model.layers), num_layers)
    draft.model.layers = torch.nn.ModuleList([draft.model.layers[i] for i in keep])
    for new_index, layer in enumerate(draft.model.layers):  # the KV cache is indexed by layer_idx
        layer.self_attn.layer_idx = new_index
    draft.config.num_hidden_layers = num_layers
    if hasattr(draft.config, "layer_types") and draft.config.layer_types:
        draft.config.layer_types = [draft.config.layer_types[i] for i in keep]
    for p in draft.parameters():
        p.requires_grad = False
    for p in [*draft.model.layers.parameters(), *draft.model.norm.parameters()]:
        p.requires_grad = True
    return draft


class _Trainee(torch.nn.Module):
    """A draft (the target's first layers) with its frequent-token head, as trained."""

    def __init__(self, draft: torch.nn.Module, token_ids: torch.Tensor) -> None:
        super().__init__()
        self.draft = draft
        self.register_buffer("token_ids", token_ids)
        self.head = torch.nn.Parameter(draft.get_output_embeddings().weight[token_ids].detach().clone())
        # Full vocabulary id -> row of the head (-1: not in it).
        index = torch.full((int(draft.config.vocab_size),), -1, dtype=torch.long)
        index[token_ids] = torch.arange(len(token_ids))
        self.register_buffer("row_of", index)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T] -> logits over the head's tokens [B, T, subset]."""
        hidden = self.draft.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden @ self.head.T

    def vocabulary_head(self) -> lm.VocabularyHead:
        return lm.VocabularyHead(self.token_ids.clone(), self.head.detach().clone())


def _batch(examples: list[Example], pad_id: int, row_of: torch.Tensor) -> dict[str, torch.Tensor]:
    """Right-padded inputs and, at each answer-predicting position, the greedy token's head row (-100: none)
    and the soft labels as head rows (-1: outside the head) with their probabilities."""
    width = max(len(e.ids) - 1 for e in examples)
    k = examples[0].top_ids.shape[1]
    inputs = torch.full((len(examples), width), pad_id)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    hard = torch.full((len(examples), width), -100)
    soft_rows = torch.full((len(examples), width, k), -1)
    soft_probs = torch.zeros((len(examples), width, k))
    for row, e in enumerate(examples):
        n, answer = len(e.ids) - 1, torch.tensor(e.ids[e.prompt_len:])
        inputs[row, :n] = torch.tensor(e.ids[:-1])
        mask[row, :n] = 1
        rows = row_of[answer]
        hard[row, e.prompt_len - 1:n] = torch.where(rows >= 0, rows, -100)
        soft_rows[row, e.prompt_len - 1:n] = row_of[e.top_ids]
        soft_probs[row, e.prompt_len - 1:n] = e.top_probs
    return {"inputs": inputs, "mask": mask, "hard": hard, "soft_rows": soft_rows, "soft_probs": soft_probs}


def distillation_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Half cross-entropy against the target's top-k distribution (renormalised over the tokens the head has),
    half against its greedy token: the soft part carries what the target thinks is close (it generalises), the
    hard part what greedy acceptance is decided on."""
    logq = torch.log_softmax(logits, dim=-1)
    inside = batch["soft_rows"] >= 0
    p = batch["soft_probs"] * inside
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-9)
    gathered = logq.gather(-1, batch["soft_rows"].clamp_min(0))
    positions = inside.any(-1)
    soft = -(p * gathered).sum(-1)[positions].mean()
    hard = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["hard"].flatten(), ignore_index=-100)
    return 0.5 * soft + 0.5 * hard


@torch.inference_mode()
def agreement(trainee: _Trainee, examples: list[Example]) -> float:
    """P(draft argmax == the target's greedy next token) over the answers: alpha_1 of greedy speculation."""
    hits = total = 0
    for e in examples:
        logits = trainee(torch.tensor([e.ids[:-1]]))[0, e.prompt_len - 1:]
        pred = trainee.token_ids[logits.argmax(-1)]
        hits += int((pred == torch.tensor(e.ids[e.prompt_len:])).sum())
        total += len(e.ids) - e.prompt_len
    return hits / total if total else 0.0


def coverage(token_ids: torch.Tensor, examples: list[Example]) -> float:
    """Share of the answers' tokens inside the head: the ceiling on its agreement."""
    tokens = torch.tensor([t for e in examples for t in e.ids[e.prompt_len:]], dtype=torch.long)
    return float(torch.isin(tokens, token_ids).float().mean()) if len(tokens) else 0.0


@torch.inference_mode()
def cost_ratio(draft: lm.CausalLM, target: lm.CausalLM, context: int = 200, steps: int = 16) -> float:
    """c = median one-token step of the draft over the target's, both after `context` tokens, as served."""
    def step_s(model: lm.CausalLM) -> float:
        seq = model.new_sequence()
        model.forward(seq, [1] * context, keep_last=1)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            model.forward(seq, [1])
            times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2]
    return step_s(draft) / step_s(target)


def distill(target_ref: str, out_dir: Path, num_layers: int = 2, train_minutes: float = 8.0,
            max_new_tokens: int = 80, num_prompts: int = 2600, batch_size: int = 8, seed: int = 0,
            head_tokens: int = 8192, top_k: int = 16, eval_every_minutes: float = 1.0,
            progress: Progress = lambda stage, detail, fraction: None,
            prompts: list[str] | None = None) -> DistillResult:
    """Trains and saves the draft. `prompts` replaces `training_prompts(num_prompts, seed)` (the benchmark of
    training sets, bench/distill_prompts_bench.py)."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    target = models.load(target_ref)
    prompts = list(training_prompts(num_prompts, seed) if prompts is None else prompts)
    rng.shuffle(prompts)
    data = _cached_examples(target, target_ref, prompts, max_new_tokens, top_k, progress)
    unseen = _cached_examples(target, target_ref, EVAL_PROMPTS, max_new_tokens, top_k, progress)
    held_out, train = data[:16], data[16:]
    draft = build_draft(models.plain_weights_dir(target_ref), num_layers)
    token_ids = frequent_tokens([e.ids[e.prompt_len:] for e in train], int(draft.config.vocab_size), head_tokens,
                                target.eos_token_ids)
    trainee = _Trainee(draft, token_ids)
    opt = torch.optim.AdamW([p for p in trainee.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.0)
    pad_id = target.tokenizer.pad_token_id or 0
    budget_s = train_minutes * 60
    train_start = time.perf_counter()
    curve: list[dict[str, float]] = []
    next_eval_s = eval_s = 0.0  # evaluation time (the agreement-vs-minutes curve) is not training time
    steps = tokens = 0
    while (elapsed := time.perf_counter() - train_start - eval_s) < budget_s:
        if elapsed >= next_eval_s:
            eval_start = time.perf_counter()
            curve.append(_checkpoint(trainee, held_out, unseen, elapsed, steps))
            eval_s += time.perf_counter() - eval_start
            next_eval_s += eval_every_minutes * 60
        trainee.train()
        batch = _batch(rng.sample(train, min(batch_size, len(train))), pad_id, trainee.row_of)
        loss = distillation_loss(trainee(batch["inputs"], batch["mask"]), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        tokens += int((batch["hard"] != -100).sum())
        progress("training", f"step {steps} loss {loss.item():.3f}", min(1.0, elapsed / budget_s))
    curve.append(_checkpoint(trainee, held_out, unseen, budget_s, steps))
    head = trainee.vocabulary_head()
    c = cost_ratio(lm.CausalLM(draft.eval(), "draft", head), target.lm)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    draft.save_pretrained(tmp)
    models.save_vocabulary_head(tmp, head)
    target.tokenizer.padding_side = "right"
    target.tokenizer.save_pretrained(tmp)
    meta = {"target": target_ref, "num_layers": num_layers, "head_tokens": len(token_ids), "top_k": top_k,
            "train_prompts": len(train), "train_steps": steps, "train_tokens": tokens, "train_minutes": train_minutes,
            "held_out_greedy_agreement": curve[-1]["held_out_agreement"],
            "unseen_greedy_agreement": curve[-1]["unseen_agreement"],
            "unseen_head_coverage": coverage(token_ids, unseen), "cost_ratio": c,
            "torch_threads": torch.get_num_threads(), "curve": curve, "seconds": time.perf_counter() - start}
    (tmp / "dsd-distill.json").write_text(json.dumps(meta, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return DistillResult(out_dir, meta["held_out_greedy_agreement"], meta["unseen_greedy_agreement"], c, tokens,
                         time.perf_counter() - start)


def _checkpoint(trainee: _Trainee, held_out: list[Example], unseen: list[Example], elapsed_s: float,
                steps: int) -> dict[str, float]:
    trainee.eval()
    return {"minutes": round(elapsed_s / 60, 2), "steps": steps, "held_out_agreement": agreement(trainee, held_out),
            "unseen_agreement": agreement(trainee, unseen)}
