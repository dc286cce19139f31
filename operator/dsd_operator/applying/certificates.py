"""The certificates of a DSDDeployment's mutual TLS, kept in Secrets it owns.

One CA per DSDDeployment (`<name>-ca`: ca.crt, ca.key) signs a leaf per role (`<name>-<role>-tls`, type
kubernetes.io/tls plus ca.crt) for the names the role is dialled at (its Service's DNS names). A leaf is
re-issued when it is missing, unreadable, past two thirds of its life, not valid for those names, not signed by
the current CA, or when the DSDDeployment's `dsd.dev/renew-certificates` annotation has a value the Secret was
not issued for (renewal on demand). The kubelet refreshes the mounted Secret in place and the runtime re-reads
its files before each new handshake, so a renewal restarts nothing and drops no request. Not pure (keys are
random), so it lives here rather than in planning/; called by the reconciler before the children that mount
the Secrets.
"""

from __future__ import annotations

import base64
import logging

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from dsd_operator import labels, pki
from dsd_operator.api import v1alpha1 as api
from dsd_operator.applying.cluster import Cluster, Manifest
from dsd_operator.labels import Reason
from dsd_operator.planning import children

log = logging.getLogger(__name__)


def dialled_names(owner: children.Owner, spec: api.DSDDeploymentSpec, role: str) -> list[str]:
    """The names a role is dialled at: its Service's DNS names, and for the target the host of
    spec.target.expose.address (what drafts in other clusters dial)."""
    svc = labels.role_object_name(owner.name, role)
    ns = owner.namespace
    names = [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"]
    if role == labels.TARGET and spec.target.expose is not None:
        names.append(spec.target.expose.address.rsplit(":", 1)[0])
    return names


def _data(secret: Manifest | None, key: str) -> bytes:
    value = ((secret or {}).get("data") or {}).get(key)
    return base64.b64decode(value) if value else b""


def _encoded(values: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in values.items()}


def _leaf_is_current(secret: Manifest | None, ca: pki.Identity, names: list[str]) -> bool:
    cert_pem, key_pem = _data(secret, "tls.crt"), _data(secret, "tls.key")
    if not cert_pem or not key_pem or _data(secret, "ca.crt") != ca.cert_pem or pki.renewal_due(cert_pem):
        return False
    if not set(names) <= set(pki.names_of(cert_pem)):
        return False
    try:
        x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class Certificates:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def ensure(self, cr: Manifest, owner: children.Owner, spec: api.DSDDeploymentSpec) -> None:
        """The CA and every role's leaf exist and are current; no writes when they already are."""
        if not children.uses_tls(spec):
            return  # Secrets of an earlier TLS setting stay (owned; gone with the DSDDeployment)
        ca = self._ensure_ca(cr, owner)
        for role in labels.ROLES:
            self._ensure_leaf(cr, owner, role, ca, dialled_names(owner, spec, role))

    def _ensure_ca(self, cr: Manifest, owner: children.Owner) -> pki.Identity:
        name = labels.ca_secret_name(owner.name)
        live = self.cluster.get("v1", "Secret", owner.namespace, name)
        cert, key = _data(live, "ca.crt"), _data(live, "ca.key")
        if cert and key:
            return pki.Identity(cert, key)
        ca = pki.new_ca(f"dsd {owner.namespace}/{owner.name}")
        self.cluster.apply(self._secret(owner, name, "Opaque", {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem}))
        self.cluster.event(cr, "Normal", Reason.CERTIFICATE_ISSUED, f"created the CA of {owner.name} in Secret {name}")
        return ca

    def _ensure_leaf(self, cr: Manifest, owner: children.Owner, role: str, ca: pki.Identity,
                     names: list[str]) -> None:
        name = labels.tls_secret_name(owner.name, role)
        renewal = (cr["metadata"].get("annotations") or {}).get(labels.RENEW_CERTIFICATES_ANNOTATION, "")
        live = self.cluster.get("v1", "Secret", owner.namespace, name)
        issued_for = ((live or {}).get("metadata", {}).get("annotations") or {}).get(
            labels.RENEW_CERTIFICATES_ANNOTATION, "")
        if _leaf_is_current(live, ca, names) and issued_for == renewal:
            return
        leaf = pki.issue(ca, f"{owner.name}-{role}", names)
        secret = self._secret(owner, name, "kubernetes.io/tls",
                              {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": ca.cert_pem})
        if renewal:
            secret["metadata"]["annotations"] = {labels.RENEW_CERTIFICATES_ANNOTATION: renewal}
        self.cluster.apply(secret)
        until = leaf.certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.cluster.event(cr, "Normal", Reason.CERTIFICATE_ISSUED,
                           f"issued the {role} certificate in Secret {name} (valid until {until})")
        log.info("%s/%s: issued the %s certificate (valid until %s)", owner.namespace, owner.name, role, until)

    @staticmethod
    def _secret(owner: children.Owner, name: str, type_: str, values: dict[str, bytes]) -> Manifest:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": owner.metadata(name, "tls"), "type": type_,
                "data": _encoded(values)}
