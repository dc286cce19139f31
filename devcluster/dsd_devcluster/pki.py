"""Certificates for one dev cluster: a CA, the apiserver serving cert, an admin client cert, SA keys.

Client certs with O=system:masters are the simplest real authentication (RBAC still applies to
everything else, e.g. the operator's ServiceAccount in tests).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def apiserver_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_crt(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def issue_client_cert(pki: Pki, cn: str, org: str | None, stem: str) -> tuple[Path, Path]:
    """A client certificate signed by the cluster CA: (crt, key) at pki.dir/<stem>.{crt,key} (reused if there)."""
    crt, key_path = pki.dir / f"{stem}.crt", pki.dir / f"{stem}.key"
    if crt.exists() and key_path.exists():
        return crt, key_path
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(pki.ca_crt.read_bytes())
    key = _key()
    cert = _builder(_name(cn, org), ca.subject, key.public_key()).add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
    ).sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    _write_key(key, key_path)
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt, key_path


def create_pki(directory: Path, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Writes a fresh PKI into `directory` (idempotent: reuses an existing complete set).

    `extra_ips`: more addresses the apiserver's serving certificate names (the real-node gateway).
    """
    pki = Pki(directory)
    if all(p.exists() for p in (pki.ca_crt, pki.apiserver_crt, pki.admin_crt, pki.sa_key, pki.sa_pub)):
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("dsd-dev-ca")
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(ca_key, pki.ca_key)
    pki.ca_crt.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(cn: str, org: str | None, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None,
             crt: Path, key_path: Path) -> None:
        key = _key()
        builder = _builder(_name(cn, org), ca_name, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(key, key_path)
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
    ]
    leaf("kube-apiserver", None, ExtendedKeyUsageOID.SERVER_AUTH, sans, pki.apiserver_crt, pki.apiserver_key)
    leaf("dsd-admin", "system:masters", ExtendedKeyUsageOID.CLIENT_AUTH, None, pki.admin_crt, pki.admin_key)
    sa = _key()
    _write_key(sa, pki.sa_key)
    pki.sa_pub.write_bytes(
        sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki


def write_kubeconfig(path: Path, cluster_name: str, api_port: int, pki: Pki, host: str = "127.0.0.1",
                     cert: tuple[Path, Path] | None = None) -> None:
    """A kubeconfig for the cluster (context name = `dsd-<cluster>`): admin unless `cert` names another user."""
    ctx = f"dsd-{cluster_name}"
    crt, key = cert or (pki.admin_crt, pki.admin_key)
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: {ctx}
  cluster:
    server: https://{host}:{api_port}
    certificate-authority: {pki.ca_crt}
users:
- name: {ctx}-admin
  user:
    client-certificate: {crt}
    client-key: {key}
contexts:
- name: {ctx}
  context: {{cluster: {ctx}, user: {ctx}-admin}}
current-context: {ctx}
"""
    )
    path.chmod(0o600)
