"""Mutual TLS on the draft-target link and the draft's control RPC, with certificates from `dsd tls issue`:
output over TLS equals the target alone; plaintext, certificate-less and wrong-CA peers are refused both ways;
a rotation under traffic loses no request and new handshakes present the new certificate."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from typer.testing import CliRunner

from dsd_cli.main import app
from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from dsd_runtime.common.tls import ClientTls, TlsConfigError, TlsFiles
from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.control import start_control_server
from dsd_runtime.draft.speculating import GenerationRequest, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_runtime.errors import DsdError
from dsd_runtime.target.server import TargetServer, TargetSettings
from tests.lossless.test_greedy_equals_target_alone import target_alone
from tests.support.waiting import wait_for

PROMPTS = ["Hello", "The quick brown fox", "def f(x):\n    return"]


def issue(out: Path) -> Path:
    result = CliRunner().invoke(app, ["tls", "issue", str(out)])
    assert result.exit_code == 0, result.output
    return out


def target_files(d: Path) -> TlsFiles:
    return TlsFiles(d / "target.crt", d / "target.key", d / "ca.crt")


def draft_tls(d: Path, role: str = "draft") -> ClientTls:
    return ClientTls(TlsFiles(d / f"{role}.crt", d / f"{role}.key", d / "ca.crt"), server_name="localhost")


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    return issue(tmp_path / "pki")


@pytest.fixture
def tls_target(loaded, pki: Path):
    server = TargetServer(loaded["target"], TargetSettings(), "127.0.0.1:0", tls=target_files(pki),
                          health_address="127.0.0.1:0")
    server.start()
    yield server
    server.stop(0)


def _info(channel: grpc.Channel) -> dsd_pb2.InfoResponse:
    with channel:
        return dsd_pb2_grpc.TargetStub(channel).Info(dsd_pb2.InfoRequest(), timeout=5)


def _generate(loaded, client: TargetClient, prompt: str, n: int = 16) -> list[int]:
    spec = Speculator(loaded["partial"].lm, client, WindowController(WindowConfig(gamma=4)))
    return list(spec.generate(GenerationRequest(loaded["target"].tokenizer(prompt)["input_ids"], n)))


def _served_serial(port: int, pki: Path) -> int:
    """The serial of the certificate a fresh TLS handshake with the target presents."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(pki / "client.crt", pki / "client.key")
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_greedy_output_over_mutual_tls_equals_the_target_alone(loaded, tls_target, pki):
    client = TargetClient(f"127.0.0.1:{tls_target.port}", tls=draft_tls(pki))
    try:
        for prompt in PROMPTS:
            want = target_alone(loaded["target"], loaded["target"].tokenizer(prompt)["input_ids"], 16)
            assert _generate(loaded, client, prompt) == want, prompt
    finally:
        client.close()


def test_plaintext_certificateless_and_wrong_ca_clients_are_refused(tls_target, pki, tmp_path):
    address = f"127.0.0.1:{tls_target.port}"
    with pytest.raises(grpc.RpcError) as plaintext:
        _info(grpc.insecure_channel(address))
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    no_cert = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.crt").read_bytes())
    with pytest.raises(grpc.RpcError) as certless:
        _info(grpc.secure_channel(address, no_cert, options=[("grpc.ssl_target_name_override", "localhost")]))
    assert certless.value.code() == grpc.StatusCode.UNAVAILABLE
    other = issue(tmp_path / "other")  # another CA: its client certificate must not pass
    stranger = ClientTls(TlsFiles(other / "draft.crt", other / "draft.key", pki / "ca.crt"), "localhost")
    client = TargetClient(address, tls=stranger, deadline_s=5)
    try:
        with pytest.raises(DsdError, match="unavailable"):
            client.info(timeout_s=5)
    finally:
        client.close()
    assert _info(grpc.secure_channel(address, draft_tls(pki).credentials(),
                                     draft_tls(pki).channel_options())).model_name


def test_a_draft_refuses_a_target_whose_certificate_is_from_another_ca(loaded, pki, tmp_path):
    other = issue(tmp_path / "other")
    server = TargetServer(loaded["target"], TargetSettings(), "127.0.0.1:0", tls=target_files(other))
    server.start()
    client = TargetClient(f"127.0.0.1:{server.port}", tls=draft_tls(pki), deadline_s=5)
    try:
        with pytest.raises(DsdError, match="unavailable"):
            client.info(timeout_s=5)
    finally:
        client.close()
        server.stop(0)


def test_the_plaintext_health_port_answers_probes_and_serves_nothing_else(tls_target):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{tls_target.health_port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as e:
            dsd_pb2_grpc.TargetStub(channel).Info(dsd_pb2.InfoRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_rotating_every_certificate_under_traffic_loses_no_request(loaded, tls_target, pki):
    tok = loaded["target"].tokenizer
    wants = {p: target_alone(loaded["target"], tok(p)["input_ids"], 16) for p in PROMPTS}
    client = TargetClient(f"127.0.0.1:{tls_target.port}", tls=draft_tls(pki))
    results: list[bool] = []
    errors: list[BaseException] = []
    rotated = threading.Event()

    def traffic() -> None:
        rounds_after = 0
        while rounds_after < 3:  # keep going until three requests ran after the rotation
            for prompt, want in wants.items():
                try:
                    results.append(_generate(loaded, client, prompt) == want)
                except BaseException as e:
                    errors.append(e)
                    return
                rounds_after += rotated.is_set()

    before = _served_serial(tls_target.port, pki)
    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    wait_for(lambda: len(results) >= 2 or bool(errors), 60, "traffic before the rotation")
    issue(pki)  # same CA, fresh target/draft/client leaves, each file replaced atomically
    assert client.reload_tls(), "the draft notices its rotated certificate"
    rotated.set()
    worker.join(120)
    client.close()
    assert not worker.is_alive(), "the traffic never finished"
    assert not errors, errors
    assert results and all(results), "every request before, during and after the rotation is exact"
    assert _served_serial(tls_target.port, pki) != before, "new handshakes present the new certificate"
    assert not client.reload_tls(), "nothing changed since"


def test_a_half_written_rotation_keeps_the_working_certificate(tls_target, pki, tmp_path):
    before = _served_serial(tls_target.port, pki)
    (tmp_path / "next").mkdir()
    for name in ("ca.crt", "ca.key"):  # the next leaves of the same CA, issued elsewhere
        shutil.copy(pki / name, tmp_path / "next" / name)
    other = issue(tmp_path / "next")
    shutil.copy(other / "target.crt", pki / "target.crt")  # the certificate arrived, its key not yet
    assert _served_serial(tls_target.port, pki) == before
    shutil.copy(other / "target.key", pki / "target.key")
    wait_for(lambda: _served_serial(tls_target.port, pki) != before, 10, "the completed rotation")


def test_the_control_rpc_requires_a_client_certificate_from_the_ca(pki, tmp_path):
    window = WindowController(WindowConfig(gamma=3))
    server, port = start_control_server(window, "127.0.0.1:0", draft_tls(pki).files)
    try:
        with pytest.raises(grpc.RpcError) as e, grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
            dsd_pb2_grpc.DraftControlStub(plain).SetWindow(dsd_pb2.WindowConfig(gamma=7), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        operator = draft_tls(pki, "client")
        with grpc.secure_channel(f"127.0.0.1:{port}", operator.credentials(), operator.channel_options()) as ch:
            assert dsd_pb2_grpc.DraftControlStub(ch).SetWindow(dsd_pb2.WindowConfig(gamma=7), timeout=5).gamma == 7
        assert window.config.gamma == 7
    finally:
        server.stop(0)


def test_incomplete_or_mismatched_flags_are_refused_with_the_reason(pki):
    assert TlsFiles.from_flags(None, None, None, "--tls-ca") is None
    with pytest.raises(TlsConfigError, match=r"missing \['--tls-key'\]"):
        TlsFiles.from_flags(pki / "draft.crt", None, pki / "ca.crt", "--tls-ca")
    with pytest.raises(TlsConfigError, match="does not belong"):
        TlsFiles.from_flags(pki / "draft.crt", pki / "target.key", pki / "ca.crt", "--tls-ca")
    (pki / "garbage").write_text("not a certificate")
    with pytest.raises(TlsConfigError, match="not a PEM"):
        TlsFiles.from_flags(pki / "draft.crt", pki / "draft.key", pki / "garbage", "--tls-ca")
    with pytest.raises(TlsConfigError, match="No such file"):
        TlsFiles.from_flags(pki / "draft.crt", pki / "draft.key", pki / "absent", "--tls-ca")
