"""Mutual TLS for the draft-target link and the draft's control RPC, read from PEM files and re-read on rotation.

Servers use gRPC's dynamic SSL credentials: before each new handshake gRPC asks `_Reloader.fetch`, which hands
over a new configuration when the files changed and still form a valid key pair; connections already made go
on with the old one, so a rotated certificate (a Secret update, `dsd tls issue` overwriting the files) drops
no request. A half-written rotation (a key that does not match its certificate) keeps the old configuration.
Clients present a certificate too and trust only the given CA; `ClientTls.fingerprint()` tells a client when
to build fresh channels (gRPC channel credentials are fixed per channel).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)


class TlsConfigError(ValueError):
    """The TLS files cannot be used (missing, unreadable, not PEM, key not matching the certificate)."""


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TlsConfigError(f"{what} {path}: {e.strerror or e}") from None
    if b"-----BEGIN" not in data:
        raise TlsConfigError(f"{what} {path} is not a PEM file")
    return data


def _check_pair(cert_pem: bytes, key_pem: bytes, cert_path: Path, key_path: Path) -> None:
    """The key is the private half of the certificate's public key (else every handshake would fail)."""
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as e:
        raise TlsConfigError(f"cannot parse {cert_path} / {key_path}: {e}") from None
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*der) != key.public_key().public_bytes(*der):
        raise TlsConfigError(f"key {key_path} does not belong to certificate {cert_path}")


def _check_ca(ca_pem: bytes, path: Path) -> None:
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError as e:
        raise TlsConfigError(f"CA bundle {path}: {e}") from None


@dataclass(frozen=True)
class TlsFiles:
    """`cert` + `key`: this side's identity; `ca`: the CA bundle the peer's certificate must chain to."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_flags(cls, cert: Path | None, key: Path | None, ca: Path | None, ca_flag: str) -> TlsFiles | None:
        """None when no flag is given; all three or a clear error naming what is missing."""
        given = {"--tls-cert": cert, "--tls-key": key, ca_flag: ca}
        if not any(given.values()):
            return None
        missing = [flag for flag, value in given.items() if value is None]
        if missing:
            raise TlsConfigError(f"mutual TLS needs --tls-cert, --tls-key and {ca_flag}; missing {missing}")
        files = cls(Path(cert), Path(key), Path(ca))  # type: ignore[arg-type]
        files.load()  # fail at start-up, not at the first handshake
        return files

    def load(self) -> tuple[bytes, bytes, bytes]:
        cert, key, ca = _read(self.cert, "certificate"), _read(self.key, "key"), _read(self.ca, "CA bundle")
        _check_pair(cert, key, self.cert, self.key)
        _check_ca(ca, self.ca)
        return cert, key, ca

    def fingerprint(self) -> str:
        """Changes whenever any of the three files' content does (unreadable files count as a change too)."""
        digest = hashlib.sha256()
        for path in (self.cert, self.key, self.ca):
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"\0missing")
        return digest.hexdigest()


class _Reloader:
    """gRPC's certificate-configuration fetcher: None (keep the current one) unless the files changed."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._fingerprint = files.fingerprint()
        self.initial = self._configuration(*files.load())

    @staticmethod
    def _configuration(cert: bytes, key: bytes, ca: bytes) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            fingerprint = self.files.fingerprint()
            if fingerprint == self._fingerprint:
                return None
            try:
                loaded = self.files.load()
            except TlsConfigError as e:
                log.warning("TLS files changed but cannot be used yet, keeping the previous ones: %s", e)
                return None
            self._fingerprint = fingerprint
            log.info("TLS certificate reloaded from %s", self.files.cert)
            return self._configuration(*loaded)


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Requires every client to present a certificate that chains to `files.ca`; plaintext is refused."""
    reloader = _Reloader(files)
    return grpc.dynamic_ssl_server_credentials(reloader.initial, reloader.fetch, require_client_authentication=True)


@dataclass(frozen=True)
class ClientTls:
    """A client's mutual-TLS identity. `server_name`: the name the server's certificate must carry when it
    differs from the host dialled (an IP, a NodePort, a tunnel); empty: the host in the address."""

    files: TlsFiles
    server_name: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        cert, key, ca = self.files.load()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def fingerprint(self) -> str:
        return self.files.fingerprint()


def bind(server: grpc.Server, address: str, tls: TlsFiles | None) -> int:
    """Binds `address` with mutual TLS when `tls` is given, else plaintext; the bound port (0 = failed)."""
    if tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(tls))


def channel(address: str, tls: ClientTls | None, options: list[tuple[str, object]] | None = None) -> grpc.Channel:
    """A channel to `address`: mutual TLS with `tls`, else plaintext."""
    opts = list(options or [])
    if tls is None:
        return grpc.insecure_channel(address, options=opts)
    return grpc.secure_channel(address, tls.credentials(), options=opts + tls.channel_options())
