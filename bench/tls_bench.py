"""What mutual TLS costs on the draft-target link: plaintext vs mTLS side by side, one process, one model.

    python bench/tls_bench.py            # SmolLM2-135M-Instruct target (fp32, CPU), ~2 min on 2 cores
    python bench/tls_bench.py --quick    # fewer repetitions

Two target servers on loopback share one loaded SmolLM2 target: one plaintext, one with mutual TLS
(certificates from `dsd tls issue`). Measured in alternation (plain, TLS, TLS, plain, ...) so the machine's
drift and the order hit both alike:
  - the round trip of an Info RPC (no model work): the per-call cost of the encrypted, authenticated link;
  - model-free speculative decoding (Verify rounds; suffix drafting over a grounded prompt that quotes text);
  - target-only decoding (a Decode stream: one message per token).
Outputs are compared token for token between the two links. Writes docs/benchmarks/tls.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

from dsd_cli.main import app
from dsd_runtime.common import models
from dsd_runtime.common.proto import dsd_pb2
from dsd_runtime.common.tls import ClientTls, TlsFiles
from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.speculating import GenerationRequest, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_runtime.target.server import TargetServer, TargetSettings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
GROUNDED = ("Repeat this sentence exactly: The quick brown fox jumps over the lazy dog while the cat "
            "sleeps in the warm afternoon sun.\nRepeated:")
CHAT = "Why is the sky blue?"


def _info_rtt_ms(client: TargetClient, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        client.stub.Info(dsd_pb2.InfoRequest(), timeout=10)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _speculate(client: TargetClient, ids: list[int], n: int) -> tuple[list[int], float]:
    spec = Speculator(None, client, WindowController(WindowConfig(gamma=6, gamma_max=8, proposer="suffix")))
    t0 = time.perf_counter()
    out = list(spec.generate(GenerationRequest(ids, n)))
    return out, len(out) / (time.perf_counter() - t0)


def _decode(client: TargetClient, ids: list[int], n: int, session: str) -> tuple[list[int], float]:
    t0 = time.perf_counter()
    stream = client.decode(dsd_pb2.DecodeRequest(session_id=session, committed_len=len(ids), context=ids,
                                                 max_tokens=n))
    out = [chunk.token for chunk in stream]
    client.close_session(session)
    return out, len(out) / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps, calls, tokens = (2, 50, 24) if args.quick else (6, 200, 48)
    torch.manual_seed(0)
    target = models.load(models.SMOLLM2_TARGET)
    tok = target.tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        pki = Path(tmp) / "pki"
        assert CliRunner().invoke(app, ["tls", "issue", str(pki)]).exit_code == 0
        servers = {"plain": TargetServer(target, TargetSettings(), "127.0.0.1:0"),
                   "mtls": TargetServer(target, TargetSettings(), "127.0.0.1:0",
                                        tls=TlsFiles(pki / "target.crt", pki / "target.key", pki / "ca.crt"))}
        for s in servers.values():
            s.start()
        tls = ClientTls(TlsFiles(pki / "draft.crt", pki / "draft.key", pki / "ca.crt"), server_name="localhost")
        clients = {"plain": TargetClient(f"127.0.0.1:{servers['plain'].port}"),
                   "mtls": TargetClient(f"127.0.0.1:{servers['mtls'].port}", tls=tls)}
        results: dict[str, dict[str, list[float]]] = {k: {"info_ms": [], "speculative": [], "target_only": []}
                                                      for k in clients}
        outputs: dict[str, dict[str, list[int]]] = {k: {} for k in clients}
        grounded, chat = tok(GROUNDED)["input_ids"], tok(CHAT)["input_ids"]
        for c in clients.values():  # warm-up: connections, handshakes, first passes
            c.info(10)
            _speculate(c, grounded, 4)
        for rep in range(reps):
            order = list(clients.items()) if rep % 2 == 0 else list(clients.items())[::-1]  # ABBA: no order bias
            for k, c in order:
                results[k]["info_ms"].append(_info_rtt_ms(c, calls))
                out, rate = _speculate(c, grounded, tokens)
                results[k]["speculative"].append(rate)
                outputs[k]["speculative"] = out
                out, rate = _decode(c, chat, tokens, f"bench-{k}-{rep}")
                results[k]["target_only"].append(rate)
                outputs[k]["target_only"] = out
            print(f"rep {rep + 1}/{reps}: " + "; ".join(
                f"{k} info {results[k]['info_ms'][-1]:.2f} ms, spec {results[k]['speculative'][-1]:.1f} tok/s, "
                f"alone {results[k]['target_only'][-1]:.1f} tok/s" for k in clients), flush=True)
        for c in clients.values():
            c.close()
        for s in servers.values():
            s.stop(0)
    same = outputs["plain"] == outputs["mtls"]
    med = {k: {m: statistics.median(v) for m, v in r.items()} for k, r in results.items()}
    summary = {
        "info_rtt_ms": {k: round(med[k]["info_ms"], 3) for k in med},
        "info_rtt_added_ms": round(med["mtls"]["info_ms"] - med["plain"]["info_ms"], 3),
        "speculative_tok_s": {k: round(med[k]["speculative"], 2) for k in med},
        "speculative_ratio_mtls_over_plain": round(med["mtls"]["speculative"] / med["plain"]["speculative"], 3),
        "target_only_tok_s": {k: round(med[k]["target_only"], 2) for k in med},
        "target_only_ratio_mtls_over_plain": round(med["mtls"]["target_only"] / med["plain"]["target_only"], 3),
        "outputs_identical": same, "repetitions": reps, "info_calls_per_rep": calls, "tokens": tokens,
        "command": "python bench/tls_bench.py" + (" --quick" if args.quick else ""),
    }
    print(json.dumps(summary, indent=2))
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "tls.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=2) + "\n")
    (DOCS / "tls.md").write_text(
        "# Mutual TLS vs plaintext on the draft-target link\n\n"
        f"`{summary['command']}` (SmolLM2-135M-Instruct target, fp32, CPU, loopback; medians of {reps} "
        "alternating (ABBA) repetitions; per-repetition figures in tls.json)\n\n"
        "| measure | plaintext | mutual TLS | mTLS / plaintext |\n| --- | --- | --- | --- |\n"
        f"| Info RPC round trip | {med['plain']['info_ms']:.2f} ms | {med['mtls']['info_ms']:.2f} ms | "
        f"+{summary['info_rtt_added_ms']:.2f} ms |\n"
        f"| speculative decoding (suffix drafting, grounded prompt) | {med['plain']['speculative']:.1f} tok/s | "
        f"{med['mtls']['speculative']:.1f} tok/s | {summary['speculative_ratio_mtls_over_plain']:.3f} |\n"
        f"| target-only decoding (Decode stream) | {med['plain']['target_only']:.1f} tok/s | "
        f"{med['mtls']['target_only']:.1f} tok/s | {summary['target_only_ratio_mtls_over_plain']:.3f} |\n\n"
        f"Outputs identical over both links: {same}.\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
