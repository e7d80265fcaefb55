"""The cluster's certificate authority: host certificates for mutual TLS between
peers and for the API, and join tokens that admit a new host.

A join token names the cluster and pins its CA (sha256 of the CA certificate),
and carries a secret whose hash the cluster keeps; it is shown once by
``zsd cluster init``. Keys are EC P-256; host certificates are good for both
server and client authentication because every host is both.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zsd.errors import InvalidArgument, Unavailable

_TOKEN_PREFIX = "zsdjoin1."
CA_YEARS = 10
HOST_CERT_DAYS = 825


@dataclass(frozen=True, kw_only=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert_pem)


@dataclass(frozen=True, kw_only=True)
class JoinToken:
    cluster_uid: str
    ca_fingerprint: str
    secret: str

    def encode(self) -> str:
        body = json.dumps({"c": self.cluster_uid, "f": self.ca_fingerprint, "s": self.secret}).encode()
        return _TOKEN_PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")

    @property
    def secret_hash(self) -> str:
        """What the cluster stores: enough to check a token, useless to forge one."""
        return hashlib.sha256(self.secret.encode()).hexdigest()


def fingerprint(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_ca(cluster_name: str, cluster_uid: str) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zsd"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"zsd cluster {cluster_name} CA"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, cluster_uid),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


def issue_host_cert(ca: KeyPair, *, host_name: str, host_id: int, addresses: list[str]) -> KeyPair:
    """A certificate for one host: CN and DNS name = host name, IP SANs = its addresses."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument("the cluster CA key is not an EC key", field="ca")
    sans: list[x509.GeneralName] = [x509.DNSName(host_name)]
    for addr in addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(addr)))
        except ValueError:
            raise InvalidArgument(f"{addr!r} is not an IP address", field="addresses") from None
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zsd"),
                    x509.NameAttribute(NameOID.COMMON_NAME, host_name),
                    x509.NameAttribute(NameOID.USER_ID, str(host_id)),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=HOST_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


def verify_host_cert(ca_cert_pem: bytes, cert_pem: bytes) -> tuple[str, int]:
    """Checks ``cert_pem`` was signed by the CA and is in its validity window;
    returns (host name, host id). Raises InvalidArgument otherwise."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise InvalidArgument(
            f"certificate not issued by this cluster's CA ({type(e).__name__})", field="certificate"
        ) from e
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise InvalidArgument("certificate is outside its validity period", field="certificate")
    name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    uid = cert.subject.get_attributes_for_oid(NameOID.USER_ID)[0].value
    return str(name), int(str(uid))


def new_join_token(*, cluster_uid: str, ca: KeyPair) -> JoinToken:
    return JoinToken(cluster_uid=cluster_uid, ca_fingerprint=ca.fingerprint, secret=secrets.token_urlsafe(24))


def parse_join_token(text: str) -> JoinToken:
    if not text.startswith(_TOKEN_PREFIX):
        raise InvalidArgument(
            f"not a zsd join token (it starts with {_TOKEN_PREFIX!r}); copy the token "
            "`zsd cluster init` printed, or make a new one with `zsd cluster token`",
            field="token",
        )
    body = text[len(_TOKEN_PREFIX) :]
    try:
        doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return JoinToken(cluster_uid=str(doc["c"]), ca_fingerprint=str(doc["f"]), secret=str(doc["s"]))
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("the join token is damaged (truncated or edited)", field="token") from None


def check_join_token(
    token: JoinToken, *, cluster_uid: str, ca_cert_pem: bytes, secret_hashes: list[str]
) -> None:
    """Admits ``token`` for this cluster or says precisely why not."""
    if token.cluster_uid != cluster_uid:
        raise InvalidArgument("the join token belongs to another cluster", field="token")
    if not hmac.compare_digest(token.ca_fingerprint, fingerprint(ca_cert_pem)):
        # The shared storage holds a CA other than the one the token pins: wrong
        # directory, or someone replaced the CA. Never join then.
        raise Unavailable("the cluster CA on shared storage does not match the token's CA", field="token")
    if not any(hmac.compare_digest(token.secret_hash, h) for h in secret_hashes):
        raise InvalidArgument("the join token is not (or no longer) valid for this cluster", field="token")
