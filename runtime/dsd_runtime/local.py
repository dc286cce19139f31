"""`dsd serve`: target and draft as two processes wired over gRPC on 127.0.0.1, serving the OpenAI API.

This is the project's main job without Kubernetes. Each role runs exactly what its pod runs (`dsd target`,
`dsd draft`), so local mode exercises the real process boundary and wire protocol.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class ServeOptions:
    target_model: str
    draft_model: str
    port: int = 8000
    target_port: int = 0
    extra_target_args: tuple[str, ...] = ()
    extra_draft_args: tuple[str, ...] = ()
    ready_timeout_s: float = 600.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dsd() -> list[str]:
    return [sys.executable, "-m", "dsd_cli.main"]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def serve(opts: ServeOptions) -> int:
    target_port = opts.target_port or _free_port()
    cores = os.cpu_count() or 2
    if opts.draft_model == "none":  # model-free drafting costs next to nothing: the target gets every core
        target_threads, draft_threads = cores, 1
    else:  # half each, so the draft's drafting overlaps the target's verify
        target_threads = draft_threads = max(1, cores // 2)
    target = subprocess.Popen([*_dsd(), "target", "--model", opts.target_model, "--port", str(target_port),
                               "--metrics-port", "0", "--threads", str(target_threads), *opts.extra_target_args])
    draft = subprocess.Popen([*_dsd(), "draft", "--model", opts.draft_model, "--target",
                              f"127.0.0.1:{target_port}", "--port", str(opts.port), "--control-port", "0",
                              "--threads", str(draft_threads), *opts.extra_draft_args])
    procs = [target, draft]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + opts.ready_timeout_s
    auth = "-H \"Authorization: Bearer $DSD_API_KEY\" " if "--api-keys-file" in opts.extra_draft_args else ""
    announced = False
    try:
        while not stopping:
            for p in procs:
                if p.poll() is not None:
                    print(f"dsd serve: {'target' if p is target else 'draft'} exited with {p.returncode}",
                          file=sys.stderr)
                    return p.returncode or 1
            if not announced and _ready(f"http://127.0.0.1:{opts.port}/readyz"):
                announced = True
                print(f"\nDSD is serving on http://127.0.0.1:{opts.port}/v1 (target {opts.target_model}, "
                      f"draft {opts.draft_model}). Try:\n  curl -s http://127.0.0.1:{opts.port}/v1/completions "
                      f"{auth}-H 'Content-Type: application/json' -d '{{\"prompt\": \"Hello\", \"max_tokens\": 32}}'\n",
                      flush=True)
            if not announced and time.monotonic() > deadline:
                print("dsd serve: not ready in time", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
