"""`dsd tls issue`: a CA and the target's, draft's and a control client's certificates for mutual TLS.

Run it again to rotate: the CA in the directory is kept and fresh leaves replace the old ones, each written
atomically (a temporary file renamed over it), so servers that re-read their files never see half a rotation.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

app = typer.Typer(help="Certificates for mutual TLS between drafts and targets (no Kubernetes needed).",
                  no_args_is_help=True)
LOCAL_NAMES = ["localhost", "127.0.0.1", "::1"]


def _write(path: Path, data: bytes, private: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@app.command("issue")
def issue(
    out: Path = typer.Argument(..., help="Directory for ca.crt/.key, target.crt/.key, draft.crt/.key, "
                               "client.crt/.key (created; an existing CA there is reused)."),
    target_name: list[str] = typer.Option(LOCAL_NAMES, help="DNS name or IP the target is dialled at "
                                          "(repeatable)."),
    draft_name: list[str] = typer.Option(LOCAL_NAMES, help="DNS name or IP of the draft's control RPC "
                                         "(repeatable)."),
    days: int = typer.Option(90, min=1, help="Validity of the leaf certificates."),
) -> None:
    """Issue (or rotate) the certificates of one DSD set-up."""
    if issue_bundle(out, target_name, draft_name, days):
        typer.echo(f"reusing the CA in {out}")
    typer.echo(f"wrote {out}/{{ca,target,draft,client}}.{{crt,key}}\n"
               f"  dsd target --tls-cert {out}/target.crt --tls-key {out}/target.key --tls-client-ca {out}/ca.crt\n"
               f"  dsd draft  --tls-cert {out}/draft.crt --tls-key {out}/draft.key --tls-ca {out}/ca.crt")


def target_flags(out: Path) -> tuple[str, ...]:
    return ("--tls-cert", str(out / "target.crt"), "--tls-key", str(out / "target.key"),
            "--tls-client-ca", str(out / "ca.crt"))


def draft_flags(out: Path) -> tuple[str, ...]:
    return ("--tls-cert", str(out / "draft.crt"), "--tls-key", str(out / "draft.key"), "--tls-ca", str(out / "ca.crt"))


def issue_bundle(out: Path, target_names: list[str], draft_names: list[str], days: int = 90) -> bool:
    """Writes the CA (unless one is there: True) and fresh target, draft and client leaves into `out`."""
    from dsd_operator import pki

    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = out / "ca.crt", out / "ca.key"
    if ca_cert.exists() and ca_key.exists():
        ca = pki.Identity(ca_cert.read_bytes(), ca_key.read_bytes())
        reused = True
    else:
        reused = False
        ca = pki.new_ca("dsd-local-ca")
        _write(ca_cert, ca.cert_pem, private=False)
        _write(ca_key, ca.key_pem, private=True)
    for role, names in (("target", target_names), ("draft", draft_names), ("client", [])):
        leaf = pki.issue(ca, f"dsd-{role}", names, valid_days=days)
        _write(out / f"{role}.key", leaf.key_pem, private=True)  # key first: a reader checks the pair
        _write(out / f"{role}.crt", leaf.cert_pem, private=False)
    return reused
