"""`dsd serve | generate | target | draft | models ...`: the runtime's commands."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

SMOLLM2_TARGET = "smollm2-135m-instruct"
SMOLLM2_DRAFT = "smollm2-135m-draft"

models_app = typer.Typer(help="Local models: tiny test models, the distilled SmolLM2 draft.", no_args_is_help=True)


def _window(gamma: int, gamma_min: int, gamma_max: int, policy: str, pipelined: bool,  # type: ignore[no-untyped-def]
            proposer: str = "hybrid"):
    from dsd_runtime.draft.windowing import WindowConfig

    try:
        return WindowConfig(gamma, gamma_min, max(gamma_max, gamma), policy, pipelined, proposer)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


GAMMA = typer.Option(4, help="Speculation window (static policy) / starting window (adaptive).")
GAMMA_MIN = typer.Option(1, help="Smallest window the adaptive policy may choose.")
GAMMA_MAX = typer.Option(16, help="Largest window the adaptive policy may choose, and the longest model-free "
                         "window (the draft's, and the target's own in target-only mode).")
POLICY = typer.Option("static", help="static | adaptive (per-round goodput-optimal gamma).")
PIPELINED = typer.Option(True, "--pipelined/--blocking", help="Draft ahead while a verify is in flight.")
PROPOSER = typer.Option("hybrid", help="hybrid (each round: a suffix match when it pays, else the draft model "
                        "when it pays, else nothing) | suffix (request + cross-request cache) | lookup (n-gram "
                        "over prompt + output) | model (the draft model only).")
DRAFT_MODEL = typer.Option("auto", help="Draft model: a directory, .gguf, built-in name, `none` (model-free "
                           "drafting only) or `auto` (the distilled SmolLM2 draft when `dsd models distill` has "
                           "cached it, else none).")
DELAY = typer.Option(0.0, "--delay-ms", help="Emulated one-way delay on the draft-target link.")
JITTER = typer.Option(0.0, "--jitter-ms", help="Emulated jitter (uniform +-).")
BANDWIDTH = typer.Option(0.0, "--bandwidth-mbps", help="Emulated bandwidth cap (0 = none).")
DEVICE = typer.Option("auto", help="auto (a CUDA GPU when torch sees one, else cpu), cpu, cuda, cuda:N.")
DTYPE = typer.Option("auto", help="auto (as saved), float32, bfloat16, float16.")
DTYPES = ("auto", "float32", "bfloat16", "float16")
TLS_CERT = typer.Option(None, help="Mutual TLS: this server's / client's certificate (PEM), re-read on change.")
TLS_KEY = typer.Option(None, help="Mutual TLS: the private key of --tls-cert (PEM).")
WINDOW_STATS = typer.Option("auto", help="Keep the drafting statistics (acceptance, draft step, verify waits) "
                            "across runs in this JSON file, so a new run decides without trial rounds: `auto` "
                            "(a file per draft/target pair under the models' cache), a path, or `off`.")


def _window_stats(option: str, draft_ref: str, target_ref: str, setting: str) -> Path | None:
    """`setting`: what changes the measured waits besides the pair (dtype, emulated link): its own file."""
    from dsd_runtime.draft import persisting

    if option == "off":
        return None
    return persisting.default_path(draft_ref, target_ref, setting) if option == "auto" else Path(option)


def _tls_files(cert: Path | None, key: Path | None, ca: Path | None, ca_flag: str):  # type: ignore[no-untyped-def]
    from dsd_runtime.common.tls import TlsConfigError, TlsFiles

    try:
        return TlsFiles.from_flags(cert, key, ca, ca_flag)
    except TlsConfigError as e:
        raise typer.BadParameter(str(e)) from None


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise typer.BadParameter(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")

    @app.command("target")
    def target(
        model: str = typer.Option(SMOLLM2_TARGET, help="Directory, .gguf file or built-in name."),
        host: str = "127.0.0.1", port: int = 50051,
        metrics_port: int = typer.Option(9101, help="Prometheus /metrics port (0 = any, -1 = off)."),
        max_sessions: int = 64, max_cached_tokens: int = 65536, idle_ttl_s: float = 300.0,
        max_window: int = 32, max_pending: int = typer.Option(64, help="Rounds in flight at most; more get "
                                                               "RESOURCE_EXHAUSTED at once."),
        max_kv_bytes: int = typer.Option(0, help="KV memory budget in bytes (0 = --max-cached-tokens positions)."),
        max_batch_tokens: int = typer.Option(1024, help="Tokens per packed forward pass (longer prefills are "
                                             "chunked)."),
        batching: bool = typer.Option(True, help="--no-batching: one session per forward pass (serialised)."),
        pass_trace: str = typer.Option("", help="Append one JSON line per forward pass (sequences, tokens, "
                                       "seconds) to this file: for fitting cost models."),
        gather_ms: float = typer.Option(5.0, min=0.0, help="A pass waits up to this long (at most a fifth of the "
                                        "last pass) for the last pass's sessions to queue again."),
        self_drafting: bool = typer.Option(True, help="Target-only streams draft for themselves with the model-free "
                                           "proposer their draft names; --no-self-drafting: one token per step."),
        self_drafting_cache_tokens: int = typer.Option(100_000, min=0, help="Recent sessions' tokens the suffix "
                                                       "proposer of target-only streams matches against (0 = none)."),
        threads: int = typer.Option(0, help="torch threads (0=auto)."),
        device: str = DEVICE, dtype: str = DTYPE,
        tls_cert: Path | None = TLS_CERT, tls_key: Path | None = TLS_KEY,
        tls_client_ca: Path | None = typer.Option(None, help="Mutual TLS: CA bundle every client's certificate "
                                                  "must chain to; with it plaintext clients are refused."),
        health_port: int = typer.Option(-1, help="Also serve the gRPC health service in plaintext on this port "
                                        "(for probes that cannot speak TLS; -1 = off)."),
    ) -> None:
        """Run the target role: gRPC verification of many sessions, batched into shared forward passes."""
        from dsd_runtime.target.running import run_target
        from dsd_runtime.target.server import TargetSettings

        logging.basicConfig(level=logging.INFO)
        settings = TargetSettings(max_sessions, max_cached_tokens, idle_ttl_s, max_window, max_pending, max_kv_bytes,
                                  max_batch_tokens, batching, pass_trace, gather_ms, self_drafting,
                                  self_drafting_cache_tokens)
        _check_dtype(dtype)
        tls = _tls_files(tls_cert, tls_key, tls_client_ca, "--tls-client-ca")
        run_target(model, f"{host}:{port}", metrics_port, settings, threads or None, device=device, dtype=dtype,
                   tls=tls, health_port=health_port)

    @app.command("draft")
    def draft(
        model: str = DRAFT_MODEL,
        tokenizer: str = typer.Option(SMOLLM2_TARGET, help="With --model none: whose tokenizer to use (the "
                                      "target's model reference)."),
        proposer: str = PROPOSER,
        target: str = typer.Option("127.0.0.1:50051", help="Target gRPC address host:port; several replicas "
                                   "comma-separated (a replica that fails is left for the next)."),
        host: str = "127.0.0.1", port: int = 8000, control_port: int = 50052,
        gamma: int = GAMMA, gamma_min: int = GAMMA_MIN, gamma_max: int = GAMMA_MAX, policy: str = POLICY,
        pipelined: bool = PIPELINED, delay_ms: float = DELAY, jitter_ms: float = JITTER,
        bandwidth_mbps: float = BANDWIDTH,
        config: Path | None = typer.Option(None, help="Runtime config file (window section), re-read on change."),
        threads: int = typer.Option(0, help="torch threads (0=auto)."),
        target_deadline_s: float = typer.Option(30.0, help="Give up on the target after this long (HTTP 503)."),
        device: str = DEVICE, dtype: str = DTYPE,
        tls_cert: Path | None = TLS_CERT, tls_key: Path | None = TLS_KEY,
        tls_ca: Path | None = typer.Option(None, help="Mutual TLS: CA bundle the target's certificate must chain "
                                           "to (and the control RPC's clients')."),
        tls_server_name: str = typer.Option("", help="Name the target's certificate carries, when it differs "
                                            "from the host in --target (an IP, a NodePort)."),
        api_keys_file: Path | None = typer.Option(None, help="Require `Authorization: Bearer <key>` on /v1/*: "
                                                  "one key per line, re-read on change (401 otherwise)."),
        window_stats: Path | None = typer.Option(None, help="Keep the drafting statistics in this JSON file: "
                                                 "read at start (same draft/target pair only), written every "
                                                 "minute and at exit. Default: not kept."),
    ) -> None:
        """Run the draft role: speculation against a target and the OpenAI-compatible API."""
        from dsd_runtime.api.auth import ApiKeys
        from dsd_runtime.common.tls import ClientTls
        from dsd_runtime.draft.client import LinkEmulation
        from dsd_runtime.draft.running import run_draft

        logging.basicConfig(level=logging.INFO)
        _check_dtype(dtype)
        from dsd_runtime.common import models

        files = _tls_files(tls_cert, tls_key, tls_ca, "--tls-ca")
        if tls_server_name and files is None:
            raise typer.BadParameter("--tls-server-name needs --tls-cert, --tls-key and --tls-ca")
        try:
            api_keys = ApiKeys(api_keys_file) if api_keys_file is not None else None
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        run_draft(models.resolve_draft(model), target, host, port, control_port,
                  _window(gamma, gamma_min, gamma_max, policy, pipelined, proposer),
                  LinkEmulation(delay_ms, jitter_ms, bandwidth_mbps), config, threads or None, target_deadline_s,
                  device=device, dtype=dtype, tokenizer_ref=tokenizer,
                  tls=ClientTls(files, tls_server_name) if files else None, api_keys=api_keys,
                  window_stats=window_stats)

    @app.command("serve")
    def serve(
        target_model: str = typer.Option(SMOLLM2_TARGET, help="Target model."),
        draft_model: str = DRAFT_MODEL,
        port: int = typer.Option(8000, help="OpenAI API port on 127.0.0.1."),
        gamma: int = GAMMA, policy: str = POLICY, pipelined: bool = PIPELINED, delay_ms: float = DELAY,
        jitter_ms: float = JITTER, bandwidth_mbps: float = BANDWIDTH, proposer: str = PROPOSER,
        dtype: str = typer.Option("auto", help="Target dtype: auto (as saved), float32, bfloat16."),
        batching: bool = typer.Option(True, help="--no-batching: the target runs one session per forward pass."),
        target_arg: list[str] = typer.Option([], help="Extra `dsd target` argument, repeatable "
                                             "(e.g. --target-arg=--max-sessions=16)."),
        tls_dir: Path | None = typer.Option(None, help="Mutual TLS between the two processes with the "
                                            "certificates in this directory (issued there by `dsd tls issue` "
                                            "when absent)."),
        api_keys_file: Path | None = typer.Option(None, help="Require these bearer keys on /v1/* (one per "
                                                  "line)."),
        window_stats: str = WINDOW_STATS,
    ) -> None:
        """Run target and draft as two local processes over gRPC and serve the OpenAI API (the main job)."""
        from dsd_cli import tls
        from dsd_runtime.local import ServeOptions
        from dsd_runtime.local import serve as run_serve

        _check_dtype(dtype)
        draft_args = ("--gamma", str(gamma), "--gamma-max", str(max(16, gamma)), "--policy", policy,
                      "--pipelined" if pipelined else "--blocking", "--delay-ms", str(delay_ms),
                      "--jitter-ms", str(jitter_ms), "--bandwidth-mbps", str(bandwidth_mbps), "--proposer", proposer,
                      "--tokenizer", target_model)
        target_tls: tuple[str, ...] = ()
        if tls_dir is not None:
            if not (tls_dir / "ca.crt").exists():
                tls.issue_bundle(tls_dir, tls.LOCAL_NAMES, tls.LOCAL_NAMES)
            target_tls, draft_args = tls.target_flags(tls_dir), (*draft_args, *tls.draft_flags(tls_dir))
        if api_keys_file is not None:
            draft_args = (*draft_args, "--api-keys-file", str(api_keys_file))
        from dsd_runtime.common import models

        draft_ref = models.resolve_draft(draft_model)
        stats = _window_stats(window_stats, draft_ref, target_model,
                              f"dtype={dtype} batching={batching} delay_ms={delay_ms} jitter_ms={jitter_ms} "
                              f"bandwidth_mbps={bandwidth_mbps} target_args={target_arg}")
        if stats is not None:
            draft_args = (*draft_args, "--window-stats", str(stats))

        raise typer.Exit(run_serve(ServeOptions(target_model, draft_ref, port,
                                                extra_draft_args=draft_args,
                                                extra_target_args=("--dtype", dtype,
                                                                   "--batching" if batching else "--no-batching",
                                                                   *target_tls, *target_arg))))

    @app.command("generate")
    def generate(
        prompt: str,
        target_model: str = typer.Option(SMOLLM2_TARGET), draft_model: str = DRAFT_MODEL,
        max_tokens: int = 64, temperature: float = 0.0, seed: int = 0, chat: bool = typer.Option(True),
        gamma: int = GAMMA, policy: str = POLICY, pipelined: bool = PIPELINED, delay_ms: float = DELAY,
        proposer: str = PROPOSER,
        compare: bool = typer.Option(True, help="Also time the target decoding alone and report the speedup."),
        window_stats: str = WINDOW_STATS,
    ) -> None:
        """Generate once through DSD (real gRPC on loopback) and print text, tokens/s and acceptance."""
        from dsd_cli.generating import generate_once
        from dsd_runtime.common import models

        draft_ref = models.resolve_draft(draft_model)
        generate_once(prompt, target_model, draft_ref, max_tokens, temperature, seed, chat,
                      _window(gamma, 1, max(16, gamma), policy, pipelined, proposer), delay_ms, compare,
                      _window_stats(window_stats, draft_ref, target_model, f"delay_ms={delay_ms}"))

    @app.command("profile")
    def profile(
        target_model: str = typer.Option(SMOLLM2_TARGET), draft_model: str = typer.Option(SMOLLM2_DRAFT),
        out: Path = typer.Option(Path("profile.json"), help="Where to write the profile (JSON)."),
        gamma: int = typer.Option(8, help="Window for the acceptance measurement (positions 1..gamma)."),
        max_tokens: int = 64, threads: int = typer.Option(1, help="torch threads (match what you deploy)."),
        prompt: list[str] = typer.Option([], help="Prompts for the acceptance measurement (repeatable); use the "
                                         "workload you will serve. Default: a few general chat prompts."),
    ) -> None:
        """Measure draft step, verify time vs positions, per-position acceptance and RTT for DSD-Sim."""
        from dsd_runtime.profiling import profile as run_profile

        p = run_profile(target_model, draft_model, gamma, max_tokens, threads, prompt or None)
        p.write(out)
        print(f"profile written to {out}: draft step {p.draft_step_ms:.1f} ms, "
              f"t_v(1) {p.verify_points_ms[0][1]:.1f} ms, t_v({gamma + 1}) {p.verify_points_ms[gamma][1]:.1f} ms, "
              f"alpha_1 {p.alpha_by_position[0]:.2f}, loopback RTT {p.rtt_ms:.2f} ms ({p.rounds} rounds); "
              "tokens by source: " + ", ".join(f"{k} {v}" for k, v in sorted(p.tokens_by_source.items())))

    @models_app.command("build-tiny")
    def build_tiny(out: Path = typer.Argument(..., help="Directory to write target/ and drafts into.")) -> None:
        """Build tiny random models (target, same, partial, random drafts) for fast local experiments."""
        from dsd_runtime.common import tiny

        target_dir = tiny.build_tiny_model(out / "target", seed=1)
        tiny.build_tiny_model(out / "draft-partial", seed=2, base=target_dir, perturb=0.25)
        tiny.build_tiny_model(out / "draft-random", seed=3, hidden=32, layers=1)
        print(out)


@models_app.command("distill")
def distill(
    target_model: str = typer.Option(SMOLLM2_TARGET, help="Target to distill a draft for."),
    out: Path | None = typer.Option(None, help="Output directory (default: the cache used by smollm2-135m-draft)."),
    layers: int = typer.Option(2, help="Decoder layers of the draft (copied from the target, then trained)."),
    minutes: float = typer.Option(8.0, help="Training time budget on CPU (the target's generations come first)."),
    prompts: int = typer.Option(2600, help="Chat prompts the target answers for the training set (generated once, "
                                "cached)."),
    head_tokens: int = typer.Option(8192, help="Vocabulary of the draft's head: the most frequent answer tokens."),
    force: bool = typer.Option(False, help="Retrain even if a cached draft exists."),
) -> None:
    """Train a small draft on the target's own generations (cached; reused by `smollm2-135m-draft`)."""
    from rich.progress import Progress

    from dsd_runtime import distilling
    from dsd_runtime.common import models

    out_dir = out or models.distilled_draft_dir()
    if (out_dir / "config.json").exists() and not force:
        meta = json.loads((out_dir / "dsd-distill.json").read_text())
        print(f"cached draft in {out_dir}: {meta.get('num_layers')} layers, unseen greedy agreement "
              f"{meta.get('unseen_greedy_agreement', 0):.1%}; --force retrains")
        return
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with Progress() as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, detail: str, fraction: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=1.0)
            bar.update(tasks[stage], completed=fraction, description=f"{stage}: {detail}")

        result = distilling.distill(target_model, out_dir, layers, minutes, num_prompts=prompts,
                                    head_tokens=head_tokens, progress=progress)
    print(f"draft written to {result.path}: greedy agreement {result.unseen_agreement:.1%} on unseen chat prompts "
          f"({result.greedy_agreement:.1%} held out from training), cost ratio c = {result.cost_ratio:.3f}, "
          f"{result.num_train_tokens} training tokens, {result.seconds:.0f} s")


@models_app.command("prepare")
def prepare(model: str = typer.Argument(SMOLLM2_TARGET, help="Model reference to make ready to load.")) -> None:
    """Resolve a model and write its load-ready form (a GGUF's dequantised weights) into the models cache.

    Image builds run this so that pods load the built-in target in a second instead of dequantising it.
    """
    from dsd_runtime.common import models

    loaded = models.load(model)
    print(f"{loaded.name}: ready in {models.plain_weights_dir(model)}")
