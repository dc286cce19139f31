"""Capacity benchmark: one target serving 1..32 concurrent sessions, batched vs serialised, through `dsd serve`.

    python bench/capacity_bench.py                 # 1, 4, 8, 16, 32 clients, 3 repeats; ~25 min on 2 cores
    python bench/capacity_bench.py --quick         # 1, 4, 8 clients, shorter answers, 1 repeat (a smoke run)
    python bench/capacity_bench.py --load-only     # only the bounded load test below (~3 min)

What a user runs: `dsd serve` (target and draft processes over gRPC, the OpenAI API), SmolLM2-135M-Instruct
target in float32, the default drafting (hybrid; model-free when no distilled draft is cached). N clients start
at the same moment and each sends streamed greedy chat completions one after another (ceil(8 / N) of them, so a
wave is at least 8 requests long), half open chat and half grounded (an answer that quotes its prompt).
Configurations, side by side in one run:
  - batched:     the target packs every session's round into one forward pass (continuous batching);
  - serialised:  `--no-batching`, one session per forward pass (the behaviour before batching);
  - target-only: batched, `--proposer none`: every session is a target-only stream (no speculation).
Aggregate tokens/s = all completion tokens / wall time of the wave; TPOT per request = (last - first token)
/ (tokens - 1). This machine's speed drifts by tens of percent within minutes, so the whole comparison runs
`--repeats` times (each repeat starts every configuration afresh, in turn, with the client counts in
alternating order) and the table gives medians: tokens/s per cell, and each ratio computed within a repeat
(batched / 1 client: the same server minutes apart; batched / serialised: the repeat's two servers). Every
output is compared token for token with the serialised run's and, for the first
prompts, with the target decoding alone in this process. Writes docs/benchmarks/capacity.{csv,md,png}.

Bounded load test: 64 clients for 60 s against a target limited to 16 sessions (`--max-sessions 16`), each
client sending request after request (backing off for Retry-After on a 429): only 200s and 429s may come
back, the target's and the draft's RSS stay bounded (sampled every second), and every completed answer is
compared with the target decoding alone. Writes docs/benchmarks/load.md.

Each wave also records what DSD-Sim needs to replay it (bench/capacity_sim.py): every forward pass of the
target (`dsd target --pass-trace`: sequences, tokens, seconds), the draft's rounds, proposals, acceptance by
position and target-only tokens (differences of the two servers' /metrics before and after the wave), and every
request's prompt and completion tokens. Writes docs/benchmarks/capacity-runs.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from probes import PassTraceReader, counters, delta, usage_counters

from dsd_runtime.common import models
from dsd_runtime.common.divergence import first_divergence

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "benchmarks"
CONFIGS = {"batched": ("--batching", "hybrid"), "serialised": ("--no-batching", "hybrid"),
           "target-only": ("--batching", "none")}
TOPICS = ["bees", "tides", "bread", "rainbows", "volcanoes", "owls", "glaciers", "comets", "bridges", "clocks",
          "bicycles", "lighthouses", "coral reefs", "thunderstorms", "windmills", "submarines"]
AUDIENCES = ["a ten year old", "a farmer", "a sailor", "a new student", "a retired teacher", "a painter"]
FORMS = ["in a few sentences", "as a short list of steps", "with one everyday example", "in the style of a letter"]
TONES = ["", " Keep it cheerful.", " Avoid any jargon."]  # "" first: prompt(k) for k < 768 is as before it
PLACES = ["Arden", "Belmont", "Carlow", "Dunmore", "Elston", "Fairview", "Glenwood", "Harlow", "Ivybridge",
          "Jarrow", "Kelso", "Ludlow", "Marlow", "Newport", "Oakham", "Penrith"]
WARMUP_PROMPT = 10_000  # never measured
WAVE_REQUESTS = 8  # the fewest requests in a wave (a one-client wave: 8 in turn)
STEADY_MAX_TOKENS = 48  # as the waves' answers


def prompt_kind(k: int) -> str:
    return "chat" if k % 2 == 0 else "grounded"


def prompt(k: int) -> str:
    """Half open chat, half grounded (repeat a given text). Every k below STEADY_PROMPTS gives a different request,
    and no two chat prompts share topic, audience, form and tone, so the draft's cross-request suffix cache cannot
    replay an earlier answer (it would flatter every wave after the first)."""
    c = k // 2
    if k % 2 == 0:
        return (f"Explain to {AUDIENCES[c // 16 % 6]} how {TOPICS[c % 16]} work, {FORMS[c // 96 % 4]}."
                f"{TONES[c // 384 % 3]}")
    place = PLACES[c % 16]
    text = (f"The {place} library opens at {8 + c // 240 % 4} on weekdays and lends up to {4 + c // 16 % 5} books for "
            f"{2 + c // 80 % 3} weeks. Its reading room closes an hour before the building.")
    return f"{text}\n\nRepeat the text above word for word."


@dataclass
class Reply:
    text: str = ""
    tokens: int = 0
    prompt_tokens: int = 0
    first_s: float = 0.0
    end_s: float = 0.0
    client: int = 0  # which of the wave's clients sent it
    kind: str = ""  # "chat" or "grounded" (prompt())
    counters: dict[str, float] = field(default_factory=dict)  # its usage.dsd, as probes.usage_counters keys

    @property
    def tpot_s(self) -> float:
        return (self.end_s - self.first_s) / max(1, self.tokens - 1)


@dataclass
class Wave:
    config: str
    clients: int
    tokens: int
    seconds: float
    tpots: list[float]
    statuses: list[int]
    repeat: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, float] = field(default_factory=dict)
    passes: list[list[float]] = field(default_factory=list)  # [sequences, tokens, seconds] of every pass

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def _chat(http: httpx.Client, port: int, text: str, max_tokens: int, t0: float) -> Reply:
    body = {"model": models.SMOLLM2_TARGET, "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    reply = Reply()
    with http.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=900) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                reply.tokens = int(chunk["usage"]["completion_tokens"])
                reply.prompt_tokens = int(chunk["usage"]["prompt_tokens"])
                reply.counters = usage_counters(chunk["usage"]["dsd"])
            for choice in chunk.get("choices", []):
                content = (choice.get("delta") or {}).get("content") or ""
                if content and not reply.text:
                    reply.first_s = time.perf_counter() - t0
                reply.text += content
    reply.end_s = time.perf_counter() - t0
    return reply


def _wave(port: int, clients: int, max_tokens: int, first: int = 0, per_client: int = 1
          ) -> tuple[float, list[Reply]]:
    """`clients` clients starting at once, each sending `per_client` requests one after another (the next when
    the answer is complete); client i asks prompts first + i * per_client + j."""
    replies: list[Reply | None] = [None] * (clients * per_client)
    barrier = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        with httpx.Client() as http:
            barrier.wait()
            for j in range(per_client):
                k = i * per_client + j
                replies[k] = _chat(http, port, prompt(first + k), max_tokens, t0)
                replies[k].client = i
                replies[k].kind = prompt_kind(first + k)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, [r for r in replies if r is not None]


def requests_per_client(clients: int, quick: bool = False) -> int:
    """Small waves send several requests per client, so every wave lasts long enough (here at least
    WAVE_REQUESTS requests) to average over the machine's second-to-second noise."""
    return -(-(2 if quick else WAVE_REQUESTS) // clients)


def _counters(port: int) -> dict[str, float]:
    return counters(f"127.0.0.1:{port + 1}", f"127.0.0.1:{port}")


PASS_TRACE = Path("/tmp/dsd-capacity-passes.jsonl")


def _serve(config: str, port: int, target_args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """`dsd serve` on `port`; the target's /metrics on port + 1, its passes traced to PASS_TRACE."""
    batching, proposer = CONFIGS[config]
    PASS_TRACE.unlink(missing_ok=True)
    extra = [f"--target-arg={arg}"
             for arg in (f"--metrics-port={port + 1}", f"--pass-trace={PASS_TRACE}", *target_args)]
    proc = subprocess.Popen([sys.executable, "-m", "dsd_cli.main", "serve", "--port", str(port), batching,
                             "--proposer", proposer, "--dtype", "float32", *extra], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"dsd serve ({config}) exited with {proc.returncode}")
        time.sleep(0.5)
    raise SystemExit(f"dsd serve ({config}) not ready in 600 s")


def _rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its children (the draft and target processes of `dsd serve`)."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def _children(pid: int) -> list[int]:
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def load_test(port: int, clients: int = 64, seconds: float = 60.0, max_tokens: int = 24,
              out: Path = OUT) -> None:
    proc = _serve("batched", port, ("--max-sessions=16",))
    statuses: dict[int, int] = {}
    answers: list[tuple[int, str]] = []
    rss: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        with httpx.Client() as http:
            while time.monotonic() < stop:
                body = {"model": models.SMOLLM2_TARGET, "messages": [{"role": "user", "content": prompt(i % 16)}],
                        "max_tokens": max_tokens, "temperature": 0}
                r = http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=300)
                with lock:
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        answers.append((i % 16, r.json()["choices"][0]["message"]["content"]))
                if r.status_code == 429:
                    time.sleep(min(float(r.headers.get("Retry-After", "1")), 1.0))

    try:
        _wave(port, 1, 8)
        base = _rss_mib(proc.pid)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            rss.append(_rss_mib(proc.pid))
            time.sleep(1.0)
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(60)
    _, refs = _target_alone(sorted({k for k, _ in answers}), max_tokens)
    wrong = sum(1 for k, text in answers if text != refs[k].text)
    lines = [f"64 clients for {seconds:.0f} s, target --max-sessions 16: responses by status "
             f"{dict(sorted(statuses.items()))}; {len(answers)} completed answers, {wrong} differing from the "
             f"target alone; RSS of draft + target {base:.0f} MiB before, at most {max(rss):.0f} MiB under load."]
    (out / "load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if set(statuses) - {200, 429} or wrong:
        raise SystemExit("load test failed: a status other than 200/429, or an answer that differs")


STEADY_PROMPTS = 1920  # prompt(k) is unique below this (grounded: c < 960); a steady server stays within it


def steady(port: int, counts: list[int], seconds: float, warmup_s: float, repeats: int, out: Path = OUT) -> None:
    """DSD (batched, hybrid) against target-only sessions in a steady state: N clients each sending request after
    request, tokens/s counted by the draft's per-token counter over a window that starts once every client is
    busy (`warmup_s`) and lasts `seconds`. The waves above measure a makespan: a wave's tokens/s is bounded by its
    slowest answers (open chat, which self-drafting barely speeds up), and a grounded answer finished early
    leaves its client idle; here a client that finishes early asks again, so drafting shows as throughput."""
    configs = ("batched", "target-only")
    rates: dict[tuple[str, int, int], float] = {}
    tpots: dict[tuple[str, int], list[float]] = {}
    answers: dict[str, dict[int, str]] = {c: {} for c in configs}
    for repeat in range(repeats):
        for config in (configs if repeat % 2 == 0 else configs[::-1]):
            proc = _serve(config, port)
            try:
                _wave(port, 1, 8, WARMUP_PROMPT)
                next_prompt = iter(range(STEADY_PROMPTS))  # the same prompts, in order, on every server
                for n in (counts if repeat % 2 == 0 else counts[::-1]):
                    rate, by_clients, replies, texts = _steady_window(port, n, seconds, warmup_s, next_prompt)
                    rates[config, n, repeat] = rate
                    tpots.setdefault((config, n), []).extend(r.tpot_s for _, r in replies)
                    answers[config].update(texts)
                    print(f"steady repeat {repeat} {config:12s} {n:3d} clients  {rate:6.1f} tok/s "
                          f"(answers ended in the window: {by_clients:.1f} tok/s)", flush=True)
            finally:
                proc.terminate()
                proc.wait(60)
    shared = sorted(set(answers["batched"]) & set(answers["target-only"]))
    differing = [k for k in shared if answers["batched"][k] != answers["target-only"][k]]
    lines = ["| clients | DSD batched tok/s (TPOT p50 ms) | target-only tok/s (TPOT p50 ms) | DSD / target-only |",
             "|---|---|---|---|"]
    for n in counts:
        each = sorted(rates["batched", n, r] / rates["target-only", n, r] for r in range(repeats))
        spread = f" ({each[0]:.2f}-{each[-1]:.2f})" if len(each) > 1 else ""
        cells = [f"{statistics.median(rates[c, n, r] for r in range(repeats)):.1f} "
                 f"({1000 * _pct(tpots[c, n], 50):.0f})" for c in configs]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {statistics.median(each):.2f}x{spread} |")
    lines += ["", f"Steady state: each client sends request after request; tokens/s over {seconds:.0f} s after "
              f"{warmup_s:.0f} s of warm-up, medians over {repeats} repeat(s), the ratio the median of the ratios "
              f"within a repeat (range in brackets). Answers to the same prompt under both servers: "
              f"{len(shared) - len(differing)} of {len(shared)} identical"
              + (f" (differing: prompts {differing})." if differing else ".")]
    text = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "capacity-steady.md").write_text(text + "\n")
    print(text)
    if differing:
        raise SystemExit(f"steady state: answers differ between DSD and target-only on prompts {differing}")


def _steady_window(port: int, clients: int, seconds: float, warmup_s: float,
                   next_prompt: Iterator[int]) -> tuple[float, float, list[tuple[int, Reply]], dict[int, str]]:
    """`clients` closed-loop clients. Returns the window's tokens/s by the draft's counter, the same by the clients
    (the tokens of the answers that ended inside the window: a cross-check of the counter), the requests wholly
    inside the window (their TPOT), and every answer by prompt (the lossless check)."""
    lock = threading.Lock()
    replies: list[tuple[int, float, Reply]] = []  # (prompt, start, reply) of every request
    stop, exhausted = threading.Event(), threading.Event()
    t0 = time.perf_counter()

    def client() -> None:
        with httpx.Client() as http:
            while not stop.is_set():
                with lock:
                    k = next(next_prompt, None)
                if k is None:
                    exhausted.set()
                    return
                start = time.perf_counter() - t0
                reply = _chat(http, port, prompt(k), STEADY_MAX_TOKENS, t0)
                with lock:
                    replies.append((k, start, reply))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(warmup_s)  # the measurement's own clock: every client is busy by now
    before, start = _counters(port)["tokens_generated"], time.perf_counter() - t0
    time.sleep(seconds)
    after, end = _counters(port)["tokens_generated"], time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    if exhausted.is_set():  # a client stopped early: the window did not hold `clients` busy clients
        raise SystemExit(f"steady state ran out of unique prompts ({STEADY_PROMPTS} per server)")
    ended = sum(r.tokens for _, _, r in replies if start <= r.end_s <= end)
    inside = [(k, r) for k, s, r in replies if start <= s and r.end_s <= end]
    return (after - before) / (end - start), ended / (end - start), inside, {k: r.text for k, _, r in replies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--load-only", action="store_true")
    parser.add_argument("--no-load", action="store_true", help="skip the bounded load test")
    parser.add_argument("--steady", action="store_true", help="only the steady-state DSD vs target-only "
                        "comparison (8, 16, 32 clients; writes capacity-steady.md)")
    parser.add_argument("--steady-seconds", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=18300)
    parser.add_argument("--out", type=Path, default=OUT, help="where the results go (default docs/benchmarks)")
    parser.add_argument("--repeats", type=int, default=0, help="repeats of the whole comparison (default 3; "
                        "--quick: 1)")
    args = parser.parse_args()
    if args.load_only:
        load_test(args.port, out=args.out)
        return
    if args.steady:
        steady(args.port, [8, 16, 32], args.steady_seconds, 10.0, args.repeats or 2, out=args.out)
        return
    counts = [1, 4, 8] if args.quick else [1, 4, 8, 16, 32]
    max_tokens = 24 if args.quick else 48
    waves: list[Wave] = []
    outputs: dict[str, dict[int, str]] = {}
    repeats = args.repeats or (1 if args.quick else 3)
    # Prompts are unique within a server's life (a fresh one per repeat and configuration), so no wave replays an
    # earlier one from the suffix cache; every configuration gets the same prompts for the same wave.
    sizes = [n * requests_per_client(n, args.quick) for n in counts]  # requests per wave
    first = {(r, n): r * sum(sizes) + sum(sizes[:j]) for r in range(repeats) for j, n in enumerate(counts)}
    for repeat in range(repeats):
        for config in CONFIGS:
            order = counts if repeat % 2 == 0 else counts[::-1]
            waves += _measure(config, repeat, [(n, first[repeat, n]) for n in order], max_tokens, args.port,
                              outputs.setdefault(config, {}), args.quick)
    differing = {c: sorted(k for k, text in outputs["serialised"].items() if outputs[c].get(k) != text)
                 for c in CONFIGS if c != "serialised"}  # every prompt, every configuration
    identical = "True" if not any(differing.values()) else "False (" + "; ".join(
        f"{c} differs from serialised on prompts {ks}" for c, ks in differing.items() if ks) + ")"
    if any(differing.values()):  # both answers of every difference, for judging it
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "capacity-differences.json").write_text(json.dumps(
            {c: {k: {c: outputs[c].get(k), "serialised": outputs["serialised"][k]} for k in ks}
             for c, ks in differing.items() if ks}, indent=1) + "\n")
    lossless, verdict = _check_target_alone(outputs["serialised"], max_tokens, 4)
    _report(waves, counts, identical, verdict, args.out)  # written before failing: a failed check loses nothing
    if not lossless:
        raise SystemExit(verdict)
    if not args.quick and not args.no_load:
        load_test(args.port, out=args.out)


def _measure(config: str, repeat: int, waves_to_run: list[tuple[int, int]], max_tokens: int, port: int,
             outputs: dict[int, str], quick: bool = False) -> list[Wave]:
    """One configuration's waves ((clients, first prompt) in order) on a fresh `dsd serve`; every answer must equal
    what the other configurations answered to the same prompt."""
    waves = []
    proc = _serve(config, port)
    try:
        _wave(port, 1, 8, WARMUP_PROMPT)  # warm-up, not measured
        passes_read = PassTraceReader(PASS_TRACE)
        passes_read.since_last()
        for n, first in waves_to_run:
            before = _counters(port)
            seconds, replies = _wave(port, n, max_tokens, first, requests_per_client(n, quick))
            after = _counters(port)
            passes = passes_read.since_last()
            for i, r in enumerate(replies):
                outputs[first + i] = r.text
            waves.append(Wave(config, n, sum(r.tokens for r in replies), seconds,
                              [r.tpot_s for r in replies], [200] * len(replies), repeat,
                              [{"client": r.client, "prompt_tokens": r.prompt_tokens, "completion_tokens": r.tokens,
                                "first_token_s": round(r.first_s, 4), "end_s": round(r.end_s, 4),
                                "kind": r.kind, "counters": r.counters}
                               for r in replies],
                              delta(after, before), passes))
            print(f"repeat {repeat} {config:12s} {n:3d} clients  {waves[-1].tokens_per_s:6.1f} tok/s  "
                  f"TPOT p50 {1000 * statistics.median(waves[-1].tpots):6.0f} ms", flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    return waves


@dataclass(frozen=True)
class _AloneAnswer:
    prompt_ids: list[int]  # the chat-templated prompt
    tokens: list[int]  # the target's greedy answer, cut at its first end-of-sequence token
    text: str


def _target_alone(prompts: list[int], max_tokens: int) -> tuple[models.LoadedModel, dict[int, _AloneAnswer]]:
    """Answers of the target decoding alone (same chat template, greedy, float32), by prompt index."""
    target = models.load(models.SMOLLM2_TARGET)
    tok = target.tokenizer
    eos = set(target.eos_token_ids)
    answers = {}
    for i in prompts:
        ids = list(tok.apply_chat_template([{"role": "user", "content": prompt(i)}], add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"])
        alone = target.lm.greedy(ids, max_tokens)
        alone = alone[:next((j for j, t in enumerate(alone) if t in eos), len(alone))]
        answers[i] = _AloneAnswer(ids, alone, tok.decode(alone, skip_special_tokens=True))
    return target, answers


def _check_target_alone(outputs: dict[int, str], max_tokens: int, k: int) -> tuple[bool, str]:
    """(no real difference, the verdict in words): the first k prompts' answers (from serialised, as the API
    streamed them) against the target decoding alone. Batched and one-token forwards round differently, so an
    answer may break an exact tie of the target's two best logits the other way: such a difference is judged by
    `first_divergence` (within rounding or not), as the bfloat16 checks are (docs/runtime.md)."""
    target, answers = _target_alone(list(range(k)), max_tokens)
    equal, ok, notes = 0, True, []
    for i, want in answers.items():
        if outputs[i] == want.text:
            equal += 1
            continue
        got = target.tokenizer(outputs[i], add_special_tokens=False)["input_ids"]
        d = first_divergence(target.lm.model, want.prompt_ids, want.tokens, got)
        ok = ok and d is not None and d.within_rounding
        notes.append(f"prompt {i}: " + (d.describe() if d else "one answer is a prefix of the other"))
    return ok, "; ".join([f"{equal} of the first {k} prompts' answers equal the target decoding alone", *notes])


def _report(waves: list[Wave], counts: list[int], identical: str, verdict: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "capacity.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["config", "clients", "repeat", "tokens", "seconds", "tokens_per_s", "tpot_p50_ms",
                    "tpot_p95_ms"])
        for v in waves:
            w.writerow([v.config, v.clients, v.repeat, v.tokens, f"{v.seconds:.2f}", f"{v.tokens_per_s:.2f}",
                        f"{1000 * _pct(v.tpots, 50):.0f}", f"{1000 * _pct(v.tpots, 95):.0f}"])
    (out / "capacity-runs.json").write_text(json.dumps(
        [{**asdict(v), "tpots": [round(t, 4) for t in v.tpots]} for v in waves], indent=1) + "\n")
    repeats = sorted({v.repeat for v in waves})
    rate = {(v.config, v.clients, v.repeat): v.tokens_per_s for v in waves}

    def ratio(a: tuple[str, int], b: tuple[str, int]) -> str:
        each = sorted(rate[(*a, r)] / rate[(*b, r)] for r in repeats)
        spread = f" ({each[0]:.2f}-{each[-1]:.2f})" if len(each) > 1 else ""
        return f"{statistics.median(each):.2f}x{spread}"

    lines = ["| clients | " + " | ".join(f"{c} tok/s (TPOT p50/p95 ms)" for c in CONFIGS)
             + " | batched / serialised | batched / 1 client |", "|---" * (len(CONFIGS) + 3) + "|"]
    for n in counts:
        cells = []
        for c in CONFIGS:
            mine = [x for x in waves if x.config == c and x.clients == n]
            tpots = [t for x in mine for t in x.tpots]
            cells.append(f"{statistics.median(x.tokens_per_s for x in mine):.1f} "
                         f"({1000 * _pct(tpots, 50):.0f}/{1000 * _pct(tpots, 95):.0f})")
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {ratio(('batched', n), ('serialised', n))} | "
                     f"{ratio(('batched', n), ('batched', 1))} |")
    lines += ["", f"Medians over {len(repeats)} repeat(s); ratios: median over the repeats of the ratio within each "
              "repeat (its range in brackets)."]
    lines += ["", f"Outputs identical across configurations and client counts: {identical}; {verdict}."]
    text = "\n".join(lines)
    (out / "capacity.md").write_text(text + "\n")
    print(text)
    _plot(waves, counts, out)


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def _plot(waves: list[Wave], counts: list[int], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for c in CONFIGS:
        mine = [[v for v in waves if v.config == c and v.clients == n] for n in counts]
        a.plot(counts, [statistics.median(v.tokens_per_s for v in cell) for cell in mine], marker="o", label=c)
        b.plot(counts, [1000 * _pct([t for v in cell for t in v.tpots], 50) for cell in mine], marker="o", label=c)
    a.set_xlabel("concurrent clients")
    a.set_ylabel("aggregate tokens/s")
    b.set_xlabel("concurrent clients")
    b.set_ylabel("TPOT p50 (ms)")
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "capacity.png", dpi=120)


if __name__ == "__main__":
    main()
