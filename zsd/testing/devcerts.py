"""Certificates for a dev cluster: one cluster CA, a host certificate per host, and a
client certificate for the person (or test) driving the cluster.

Host certificates come from the real cluster PKI (zsd.cluster.pki), so the dev
cluster exercises the same certificates production hosts get. The client
certificate is client-auth only and names no host, so it can never pass for one.
"""

from __future__ import annotations

import datetime
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zsd.cluster import pki

CLIENT_CERT_DAYS = 365


@dataclass(frozen=True, kw_only=True)
class CertFiles:
    cert: Path
    key: Path


def write_pem(path: Path, data: bytes, *, private: bool = False) -> None:
    """Writes ``data``; private keys are created 0600 from the start, never widened later."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_pair(pair: pki.KeyPair, cert: Path, key: Path) -> CertFiles:
    write_pem(cert, pair.cert_pem)
    write_pem(key, pair.key_pem, private=True)
    return CertFiles(cert=cert, key=key)


def create_ca(cluster_name: str) -> pki.KeyPair:
    return pki.create_ca(cluster_name, str(uuid.uuid4()))


def issue_client_cert(ca: pki.KeyPair, *, name: str) -> pki.KeyPair:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the cluster CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zsd"),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CLIENT_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pki.KeyPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=key_pem)
