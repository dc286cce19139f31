"""`dsd serve --tls-dir D --api-keys-file K` as a user runs it: two real processes, mutual TLS between them
(certificates issued on first use), bearer keys on the API; output equals the target alone; the draft's window
statistics are saved when it stops (`--window-stats`)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest

from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from tests.lossless.test_greedy_equals_target_alone import target_alone
from tests.runtime.api.conftest import _free_port
from tests.support.waiting import wait_for

KEY = "sk-local-test"


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def served(tiny_models, tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n")
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dsd_cli.main", "serve", "--target-model",
                                 str(tiny_models["target"]), "--draft-model", str(tiny_models["partial"]),
                                 "--port", str(port), "--tls-dir", str(tmp_path / "pki"),
                                 "--api-keys-file", str(keys), "--window-stats", str(tmp_path / "stats.json")],
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _ready(f"http://127.0.0.1:{port}/readyz") or proc.poll() is not None, 180,
                     "dsd serve ready")
            assert proc.poll() is None, log.read_text()
            yield port, tmp_path / "pki", log, proc
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def test_serve_links_its_processes_over_mutual_tls_behind_api_keys(served, loaded, tmp_path):
    port, pki, log, proc = served
    assert {p.name for p in pki.iterdir()} >= {"ca.crt", "target.crt", "draft.crt", "client.crt"}
    body = {"model": "target", "prompt": "Hello", "max_tokens": 12, "temperature": 0}
    url = f"http://127.0.0.1:{port}/v1/completions"
    assert httpx.post(url, json=body, timeout=60).status_code == 401
    r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 200, r.text
    tok = loaded["target"].tokenizer
    want = tok.decode(target_alone(loaded["target"], tok("Hello")["input_ids"], 12))
    assert r.json()["choices"][0]["text"] == want
    target = re.search(r"-> target 127\.0\.0\.1:(\d+) over mutual TLS", log.read_text())
    assert target, log.read_text()
    with grpc.insecure_channel(f"127.0.0.1:{target.group(1)}") as plain, pytest.raises(grpc.RpcError) as e:
        dsd_pb2_grpc.TargetStub(plain).Info(dsd_pb2.InfoRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, "the target refuses plaintext"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()
    assert (tmp_path / "stats.json").exists(), log.read_text()[-3000:]
    saved = json.loads((tmp_path / "stats.json").read_text())  # written by the draft as it stopped
    assert saved["target"] == loaded["target"].name and saved["wait_s"], saved
