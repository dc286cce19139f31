"""DSD's CA: leaves chain to it, name what they are dialled at, and are due for renewal at two thirds of life."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from dsd_operator import pki


def test_a_leaf_chains_to_its_ca_names_dns_and_ips_and_serves_both_ways():
    ca = pki.new_ca("dsd test")
    leaf = pki.issue(ca, "llm-target", ["llm-target.ns.svc", "10.0.0.7", "llm-target.ns.svc"])
    cert = leaf.certificate
    cert.verify_directly_issued_by(ca.certificate)
    assert pki.names_of(leaf.cert_pem) == ["llm-target", "llm-target.ns.svc", "10.0.0.7"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {u.dotted_string for u in usages} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}  # server + client
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(pki.new_ca("dsd test").certificate)  # same name, other key


def test_renewal_is_due_after_two_thirds_of_the_lifetime_or_for_garbage():
    leaf = pki.issue(pki.new_ca("dsd test"), "x", valid_days=90)
    start = leaf.certificate.not_valid_before_utc
    life = leaf.certificate.not_valid_after_utc - start
    assert not pki.renewal_due(leaf.cert_pem)
    assert not pki.renewal_due(leaf.cert_pem, now=start + life * 0.6)
    assert pki.renewal_due(leaf.cert_pem, now=start + life * 0.7)
    assert pki.renewal_due(b"not a certificate")
    assert pki.names_of(b"not a certificate") == []
    assert leaf.certificate.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=89)
