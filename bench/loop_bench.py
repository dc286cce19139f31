"""Metrics-loop benchmark: a scripted trace of workload and RTT phases under three window policies, side by side.

    python bench/loop_bench.py            # 6 phases x 45 s per policy
    python bench/loop_bench.py --quick    # 6 phases x 20 s

Real processes on this machine: one `dsd target` (SmolLM2-135M-Instruct, one torch thread), a model-free
`dsd draft` (the minimal sample's drafting) restarted per policy, a real Prometheus scraping both (labelled as
pods of a DSDDeployment `bench/loop`), and one client streaming greedy completions back to back. The trace
alternates grounded prompts (the answer quotes the prompt) and open chat, a new prompt every request, with the
draft-target link at 0, 20 and 60 ms round trip, changed through the runtime config's `link` section while the
draft runs.

Policies: the target alone (mode off: every request a target-only stream, the reference); (a) static gamma 4;
(b) the runtime's per-draft adaptive window alone (gamma 1..8); (c) (b) plus the
operator's loop: every 5 s the operator's own code reads Prometheus (`observing.statistics.read`), decides
(`planning.tuning.decide`) and writes the window the operator would put in the ConfigMap
(`planning.children.runtime_config`) into the draft's watched config file. Kubernetes is left out so that only the
decisions differ between runs (the real-node e2e tests cover the loop through a ConfigMap).
Writes docs/benchmarks/loop.{csv,md,png} and loop-runs.json (every phase's requests, counter deltas and the
target's traced passes), which `python bench/loop_sim.py` replays in DSD-Sim.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probes import PassTraceReader, counters, delta
from runtime_bench import REPO, _free_port

from dsd_devcluster.prometheus import start_prometheus, stop_prometheus
from dsd_operator.api import v1alpha1 as api
from dsd_operator.observing import statistics
from dsd_operator.observing.prometheus import MetricsUnavailable, PrometheusClient
from dsd_operator.planning import children, tuning
from dsd_runtime.common import models

TOWNS = ["Elmsworth", "Harrowgate", "Lindqvist", "Port Avery", "Caldmoor", "Westerby", "Ravensholm", "Tarn End"]
PROJECTS = ["harbour wall", "tram line", "library roof", "ferry terminal", "flood barrier", "market hall",
            "bridge repair", "school extension"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
ANIMALS = ["seagull", "fox", "owl", "tortoise", "heron", "badger", "otter", "crow"]
TASKS = ["Write a short poem about a lighthouse keeper who befriends a {a}.",
         "Tell a bedtime story about a {a} who learns to swim.",
         "Describe a day in the life of a {a} living in a big city.",
         "Invent a board game in which the players are {a}s, and explain its rules.",
         "Write a dialogue between a {a} and a gardener about the weather.",
         "Give three surprising facts a child might like about a {a}, and explain each one.",
         "Compose a limerick about a {a} who opens a bakery.",
         "Write a letter from a {a} to the mayor asking for a new park."]
NAMES = ["Ada", "Bram", "Cleo", "Dario", "Elin", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kaia", "Luca", "Mira",
         "Nils", "Orla", "Pavel"]


def _digits(k: int) -> tuple[int, int, int, int]:
    """k in mixed radix (8, 8, 8, 16): distinct k below 8192 give distinct prompts, so no request in a run repeats
    an earlier one and the draft's cross-request suffix cache cannot replay an earlier greedy answer."""
    return k % 8, (k // 8) % 8, (k // 64) % 8, (k // 512) % 16


def grounded_prompt(k: int) -> str:
    """A text no request has seen before, then an instruction whose answer quotes it (prompt lookup pays)."""
    t, p, d, n = _digits(k)
    town, project = TOWNS[t], PROJECTS[p]
    text = (f"The {town} council, chaired by {NAMES[n]}, met on {DAYS[d % 6]} to review the {project}. It approved "
            f"a budget of "
            f"{3 + k % 7} million, asked the engineers for a revised schedule by {DAYS[(k + 2) % 6]}, and postponed "
            f"the decision on the {PROJECTS[(k + 3) % 8]} until the survey of {TOWNS[(k + 5) % 8]} is complete.")
    return f"{text}\n\nRepeat the text above word for word.\n\n{text[:40]}"


def chat_prompt(k: int) -> str:
    """Open chat, a new prompt every request (the suffix cache cannot replay an earlier answer)."""
    task, animal, town, name = _digits(k)
    return f"{TASKS[task].format(a=ANIMALS[animal])} The {ANIMALS[animal]} is called {NAMES[name]} and lives in " \
           f"{TOWNS[town]}."


PROMPTS = {"grounded": grounded_prompt, "chat": chat_prompt}
TRACE = [("grounded", 0.0), ("chat", 0.0), ("grounded", 10.0), ("chat", 10.0), ("grounded", 30.0), ("chat", 30.0)]
POLICIES = ("target alone", "static gamma 4", "runtime adaptive", "operator loop + runtime")
STATIC, LOOP = 1, 3  # indices of the baseline and of the loop
NAMESPACE, NAME = "bench", "loop"
LOOP_SPEC = api.DSDDeploymentSpec.model_validate({
    "target": {"model": {"uri": f"builtin:{models.SMOLLM2_TARGET}"}},
    "speculation": {"gamma": 4, "gammaMin": 1, "gammaMax": 8, "policy": "adaptive"},
    "autotune": {"intervalSeconds": 5, "rateWindowSeconds": 15, "minDwellSeconds": 10, "probeAfterSeconds": 30,
                 "deadbandPercent": 2}})


@dataclass
class PhaseResult:
    policy: str
    phase: int
    workload: str
    rtt_ms: float
    tokens: int = 0
    seconds: float = 0.0
    tpots: list[float] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    requests: list[dict[str, float]] = field(default_factory=list)  # prompt/completion tokens, seconds, TTFT
    counters: dict[str, float] = field(default_factory=dict)  # the draft's and target's counter deltas
    passes: list[list[float]] = field(default_factory=list)  # [sequences, tokens, seconds] of the target's passes


class RuntimeConfig:
    """The draft's watched config file: the window (the policy's or the loop's) and the emulated link."""

    def __init__(self, path: Path, window: dict[str, Any]) -> None:
        self.path, self.window, self.link = path, window, {"delay_ms": 0.0}
        self.lock = threading.Lock()
        self.write()

    def write(self, **changes: Any) -> None:
        with self.lock:
            if "window" in changes:
                self.window = changes["window"]
            if "link" in changes:
                self.link = changes["link"]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(yaml.safe_dump({"window": self.window, "link": self.link}))
            tmp.replace(self.path)


def _start_draft(target: str, config: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    port, control = _free_port(), _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dsd_cli.main", "draft", "--model", "none", "--tokenizer",
                             models.SMOLLM2_TARGET, "--target", target, "--port", str(port), "--control-port",
                             str(control), "--config", str(config), "--threads", "1", "--proposer", "hybrid"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, port, control
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the draft did not become ready")


@dataclass
class Streamed:
    tokens: int
    prompt_tokens: int
    seconds: float
    ttft_s: float

    @property
    def tpot_s(self) -> float:
        return (self.seconds - self.ttft_s) / max(1, self.tokens - 1)


def _stream(http: httpx.Client, port: int, prompt: str, max_tokens: int) -> Streamed:
    """One greedy streamed completion, timed."""
    start, first, n, prompt_n = time.perf_counter(), None, 0, 0
    body = {"model": models.SMOLLM2_TARGET, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                n, prompt_n = int(chunk["usage"]["completion_tokens"]), int(chunk["usage"]["prompt_tokens"])
            elif chunk.get("choices") and first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    return Streamed(n, prompt_n, end - start, (first or end) - start)


class Loop(threading.Thread):
    """The operator's observe-decide code against the bench's Prometheus, acting on the draft's config file."""

    def __init__(self, prom: PrometheusClient, config: RuntimeConfig, log: list[str], name: str) -> None:
        super().__init__(daemon=True)
        self.prom, self.config, self.log, self.name = prom, config, log, name
        self.stopping = threading.Event()
        self.decision = tuning.initial(LOOP_SPEC, time.time())

    def run(self) -> None:
        while not self.stopping.wait(LOOP_SPEC.autotune.interval_seconds):
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            try:
                signals = statistics.read(self.prom, NAMESPACE, self.name, LOOP_SPEC.autotune.rate_window_seconds,
                                          now)
            except MetricsUnavailable:
                continue
            new = tuning.decide(LOOP_SPEC, signals, self.decision, time.time())
            if (new.gamma, new.mode) != (self.decision.gamma, self.decision.mode):
                self.log.append(f"{new.mode} gamma {new.gamma} ({new.reason})")
            self.decision = new
            window = children.runtime_config(LOOP_SPEC, children.LoopDecisions(new.gamma, new.mode))["window"]
            self.config.write(window=window)


def _window(policy: str) -> dict[str, Any]:
    static = {"gamma": 4, "gamma_min": 1, "gamma_max": 4, "policy": "static", "pipelined": True, "mode": "speculate"}
    if policy == POLICIES[0]:  # no drafting anywhere: every request a target-only stream, no self-drafting
        return {**static, "mode": "off", "proposer": "none"}
    if policy == POLICIES[STATIC]:
        return static
    return dict(children.runtime_config(LOOP_SPEC)["window"])


def run_policy(index: int, target: str, prom_url: str, targets_file: Path, target_metrics: str, work: Path,
               phase_s: float, max_tokens: int, passes: PassTraceReader) -> list[PhaseResult]:
    """One policy over the whole trace; its pods are labelled as DSDDeployment `loop<index>` in Prometheus."""
    policy, name = POLICIES[index], f"{NAME}{index}"
    config = RuntimeConfig(work / "runtime.yaml", _window(policy))
    proc, port, _ = _start_draft(target, config.path)
    labels = {"namespace": NAMESPACE, "node": "local"}
    targets_file.write_text(json.dumps([
        {"targets": [target_metrics], "labels": {**labels, "pod": f"{name}-target-0"}},
        {"targets": [f"127.0.0.1:{port}"], "labels": {**labels, "pod": f"{name}-draft-0"}}]))
    results: list[PhaseResult] = []
    log: list[str] = []
    loop = None
    http = httpx.Client()
    try:
        _stream(http, port, "Hello.", 8)  # warm-up, not measured
        if index == LOOP:
            loop = Loop(PrometheusClient(prom_url), config, log, name)
            loop.start()
        for i, (workload, one_way_ms) in enumerate(TRACE):
            config.write(link={"delay_ms": one_way_ms})
            time.sleep(1.5)  # the draft polls its config once a second
            result = PhaseResult(policy, i, workload, 2 * one_way_ms)
            before = counters(target_metrics, f"127.0.0.1:{port}")
            passes.since_last()
            deadline, k = time.monotonic() + phase_s, 0
            while time.monotonic() < deadline:
                reply = _stream(http, port, PROMPTS[workload](1000 * i + k), max_tokens)
                result.tokens += reply.tokens
                result.seconds += reply.seconds
                result.tpots.append(reply.tpot_s)
                result.requests.append({"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.tokens,
                                        "seconds": round(reply.seconds, 4), "ttft_s": round(reply.ttft_s, 4)})
                k += 1
            result.counters = delta(counters(target_metrics, f"127.0.0.1:{port}"), before)
            result.passes = passes.since_last()
            result.decisions = list(log)
            log.clear()
            results.append(result)
            print(f"  {policy:24s} phase {i} {workload:8s} rtt {2 * one_way_ms:3.0f} ms: "
                  f"{result.tokens / result.seconds:5.1f} tokens/s  {'; '.join(result.decisions)}", flush=True)
    finally:
        if loop is not None:
            loop.stopping.set()
        http.close()
        proc.terminate()
        proc.wait(30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--phase-s", type=float, default=45.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--slo-tpot-ms", type=float, default=60.0)
    args = parser.parse_args()
    phase_s = 20.0 if args.quick else args.phase_s
    work = REPO / ".dsd" / "loop-bench"
    work.mkdir(parents=True, exist_ok=True)
    targets_file = work / "targets.json"
    targets_file.write_text("[]")
    tport, mport = _free_port(), _free_port()
    trace = work / "passes.jsonl"
    trace.unlink(missing_ok=True)
    target_proc = subprocess.Popen([sys.executable, "-m", "dsd_cli.main", "target", "--model", models.SMOLLM2_TARGET,
                                    "--port", str(tport), "--metrics-port", str(mport), "--threads", "1",
                                    "--pass-trace", str(trace)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job = {"job_name": "dsd", "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}]}
    rows: list[PhaseResult] = []
    try:
        prom = start_prometheus("loop-bench", {}, 0, 1.0, extra_jobs=[job])
        for index in range(len(POLICIES)):
            rows += run_policy(index, f"127.0.0.1:{tport}", prom.url, targets_file, f"127.0.0.1:{mport}", work,
                               phase_s, args.max_tokens, PassTraceReader(trace))
    finally:
        stop_prometheus("loop-bench")
        target_proc.terminate()
        target_proc.wait(30)
    _report(rows, args.slo_tpot_ms, phase_s)


def _report(rows: list[PhaseResult], slo_ms: float, phase_s: float) -> None:
    out = REPO / "docs" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    runs = {"phase_s": phase_s, "trace": [{"workload": w, "rtt_ms": 2 * d} for w, d in TRACE],
            "policies": list(POLICIES), "phases": [asdict(r) for r in rows]}
    (out / "loop-runs.json").write_text(json.dumps(runs) + "\n")  # what bench/loop_sim.py replays
    with (out / "loop.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["policy", "phase", "workload", "rtt_ms", "tokens", "seconds", "tokens_per_s", "requests",
                    f"tpot_within_{slo_ms:.0f}ms", "decisions"])
        for r in rows:
            w.writerow([r.policy, r.phase, r.workload, r.rtt_ms, r.tokens, f"{r.seconds:.2f}",
                        f"{r.tokens / r.seconds:.2f}", len(r.tpots),
                        f"{sum(t * 1e3 <= slo_ms for t in r.tpots) / max(1, len(r.tpots)):.2f}",
                        "; ".join(r.decisions)])
    totals = {}
    for policy in POLICIES:
        mine = [r for r in rows if r.policy == policy]
        tpots = [t for r in mine for t in r.tpots]
        totals[policy] = (sum(r.tokens for r in mine) / sum(r.seconds for r in mine),
                          sum(t * 1e3 <= slo_ms for t in tpots) / max(1, len(tpots)))
    base = totals[POLICIES[STATIC]][0]
    lines = [f"Trace of {len(TRACE)} phases x {phase_s:.0f} s (`python bench/loop_bench.py`), one client, greedy, "
             f"{datetime.date.today()}:", "",
             "| policy | tokens/s over the trace | vs static gamma 4 | requests with TPOT <= "
             f"{slo_ms:.0f} ms |", "| --- | --- | --- | --- |"]
    lines += [f"| {p} | {tps:.1f} | {tps / base:.2f}x | {att:.0%} |" for p, (tps, att) in totals.items()]
    lines += ["", "| phase | workload | RTT ms | " + " | ".join(POLICIES) + " | loop decisions |",
              "| --- | --- | --- | " + " | ".join("---" for _ in POLICIES) + " | --- |"]
    for i, (workload, one_way) in enumerate(TRACE):
        cells = [next(r for r in rows if r.policy == p and r.phase == i) for p in POLICIES]
        lines.append(f"| {i} | {workload} | {2 * one_way:.0f} | " + " | ".join(
            f"{c.tokens / c.seconds:.1f}" for c in cells) + f" | {'; '.join(cells[LOOP].decisions) or '-'} |")
    (out / "loop.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(rows, out / "loop.png")


def _plot(rows: list[PhaseResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.2
    for j, policy in enumerate(POLICIES):
        mine = sorted((r for r in rows if r.policy == policy), key=lambda r: r.phase)
        ax.bar([r.phase + (j - 1.5) * width for r in mine], [r.tokens / r.seconds for r in mine], width,
               label=policy)
    ax.set_xticks(range(len(TRACE)), [f"{w}\n{2 * d:.0f} ms" for w, d in TRACE])
    ax.set_ylabel("tokens/s")
    ax.set_title("Trace phases (workload, draft-target RTT)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
