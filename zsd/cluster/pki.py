"""The cluster's certificate authority: the certificates of mutual TLS, and join
tokens that admit a new host.

Every certificate the CA signs says what its holder is (:class:`CertKind`, in the
subject's OU), because one listener serves hosts, joining hosts and operators:

- host: CN and DNS SAN = host name, UID = host id, IP SANs = its addresses; good
  for server and client authentication because every host is both;
- join: ``CN=join:<host name>``, client-only, valid for minutes. A joining host
  mints it itself with the CA key on shared storage (the gRPC server requires a
  client certificate of every caller), and may only call Join with it;
- client: an operator's or a tool's, client-only.

A join token names the cluster and pins its CA (sha256 of the CA certificate),
and carries a secret whose hash the cluster keeps; it is shown once by
``zsd cluster init``. The token is the operator's consent; the join certificate
only gets the joiner through the TLS handshake. Keys are EC P-256.
"""

from __future__ import annotations

import base64
import datetime
import enum
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
from collections.abc import Sequence
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
CLIENT_CERT_DAYS = 365
JOIN_CERT_LIFETIME = datetime.timedelta(minutes=10)
CLOCK_SKEW = datetime.timedelta(minutes=5)
"""How far certificates are back-dated, for hosts whose clocks run a little behind."""
_JOIN_CN_PREFIX = "join:"
_CLIENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class CertKind(enum.StrEnum):
    """What a certificate of the cluster CA lets its holder be (its subject's OU)."""

    HOST = "host"
    """A member: serves the API and peer calls, and calls peers."""
    JOIN = "join"
    """A host that is joining: may call PeerService.Join and nothing else."""
    CLIENT = "client"
    """An operator or a tool using the public API."""


_OU = {CertKind.HOST: "zsd-host", CertKind.JOIN: "zsd-join", CertKind.CLIENT: "zsd-client"}


@dataclass(frozen=True, kw_only=True)
class CertIdentity:
    kind: CertKind
    name: str
    """The host name (host and join certificates) or the client's name."""
    host_id: int | None = None
    """Host certificates only."""


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


def _load_ca(ca: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument("the cluster CA key is not an EC key", field="ca")
    return x509.load_pem_x509_certificate(ca.cert_pem), ca_key


def _ip_sans(addresses: Sequence[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for addr in addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(addr)))
        except ValueError:
            raise InvalidArgument(f"{addr!r} is not an IP address", field="addresses") from None
    return sans


def _sign_leaf(
    ca: KeyPair,
    public_key: ec.EllipticCurvePublicKey,
    *,
    subject: list[x509.NameAttribute[str]],
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    lifetime: datetime.timedelta,
) -> bytes:
    ca_cert, ca_key = _load_ca(ca)
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zsd"), *subject]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Back-dated: the host checking it may run a little behind the signer's clock.
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _host_cert(
    ca: KeyPair,
    public_key: ec.EllipticCurvePublicKey,
    *,
    host_name: str,
    host_id: int,
    addresses: Sequence[str],
) -> bytes:
    return _sign_leaf(
        ca,
        public_key,
        subject=[
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _OU[CertKind.HOST]),
            x509.NameAttribute(NameOID.COMMON_NAME, host_name),
            x509.NameAttribute(NameOID.USER_ID, str(host_id)),
        ],
        sans=[x509.DNSName(host_name), *_ip_sans(addresses)],
        # Every host is both: it serves the API and peers, and calls peers.
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        lifetime=datetime.timedelta(days=HOST_CERT_DAYS),
    )


def issue_host_cert(ca: KeyPair, *, host_name: str, host_id: int, addresses: list[str]) -> KeyPair:
    """A certificate for one host: CN and DNS name = host name, IP SANs = its addresses."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem = _host_cert(ca, key.public_key(), host_name=host_name, host_id=host_id, addresses=addresses)
    return KeyPair(cert_pem=cert_pem, key_pem=_key_pem(key))


def make_key_and_csr(host_name: str, addresses: Sequence[str]) -> tuple[bytes, bytes]:
    """(key PEM, CSR PEM): a joining host keeps its key and sends only the request."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(host_name), *_ip_sans(addresses)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def check_csr(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
    """The key of a certificate signing request, after checking that its sender holds
    the key (the request's signature). InvalidArgument (field ``csr_pem``) otherwise."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise InvalidArgument(
            "not a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST-----)", field="csr_pem"
        ) from None
    if not csr.is_signature_valid:
        raise InvalidArgument("the certificate signing request's signature is not valid", field="csr_pem")
    public_key = csr.public_key()
    if not (isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1"):
        raise InvalidArgument("the request's key must be an EC P-256 key", field="csr_pem")
    return public_key


def sign_host_csr(
    ca: KeyPair, csr_pem: bytes, *, host_name: str, host_id: int, addresses: Sequence[str]
) -> bytes:
    """A host certificate for the key in ``csr_pem``. Only the key is taken from the
    request; the names are the cluster's, whatever the request asked for."""
    return _host_cert(ca, check_csr(csr_pem), host_name=host_name, host_id=host_id, addresses=addresses)


def issue_join_cert(ca: KeyPair, host_name: str) -> KeyPair:
    """A short-lived client certificate a joining host presents to the leader: it
    proves access to the CA key on shared storage, and callers holding one may only
    join (see :func:`cert_identity`). It names no host in a SAN, so it can never
    pass for a server."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem = _sign_leaf(
        ca,
        key.public_key(),
        subject=[
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _OU[CertKind.JOIN]),
            x509.NameAttribute(NameOID.COMMON_NAME, _JOIN_CN_PREFIX + host_name),
        ],
        sans=[],
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        lifetime=JOIN_CERT_LIFETIME,
    )
    return KeyPair(cert_pem=cert_pem, key_pem=_key_pem(key))


def issue_client_cert(ca: KeyPair, name: str) -> KeyPair:
    """An operator's (or a tool's) certificate for the TCP API: client-auth only,
    marked as a client so it can never pass for a host or a joiner."""
    if not _CLIENT_NAME_RE.match(name):
        raise InvalidArgument(
            f"{name!r} is not a client name; use 1-64 of a-z A-Z 0-9 . _ @ - starting with a letter or digit",
            field="name",
        )
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem = _sign_leaf(
        ca,
        key.public_key(),
        subject=[
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _OU[CertKind.CLIENT]),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ],
        sans=[],
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        lifetime=datetime.timedelta(days=CLIENT_CERT_DAYS),
    )
    return KeyPair(cert_pem=cert_pem, key_pem=_key_pem(key))


def cert_identity(cert_pem: bytes) -> CertIdentity:
    """Who a certificate of this cluster names. Only parses: the TLS handshake has
    already checked that the CA signed it and that it is within its validity period.
    InvalidArgument (field ``certificate``) for anything zsd did not issue."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise InvalidArgument("not a PEM certificate", field="certificate") from None
    subject = cert.subject
    ou = _attribute(subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    cn = _attribute(subject, NameOID.COMMON_NAME)
    kind = next((k for k, v in _OU.items() if v == ou), None)
    if kind is None or not cn:
        raise InvalidArgument(
            f"the certificate ({subject.rfc4514_string()}) is not a zsd host, join or client certificate "
            f"(OU must be one of {', '.join(_OU.values())})",
            field="certificate",
        )
    if kind is CertKind.HOST:
        uid = _attribute(subject, NameOID.USER_ID)
        if uid is None or not uid.isdigit():
            raise InvalidArgument(
                f"the host certificate for {cn!r} carries no host id (UID)", field="certificate"
            )
        return CertIdentity(kind=kind, name=cn, host_id=int(uid))
    if kind is CertKind.JOIN:
        if not cn.startswith(_JOIN_CN_PREFIX) or len(cn) == len(_JOIN_CN_PREFIX):
            raise InvalidArgument(
                f"a join certificate's CN is {_JOIN_CN_PREFIX!r} + the host name, not {cn!r}",
                field="certificate",
            )
        return CertIdentity(kind=kind, name=cn[len(_JOIN_CN_PREFIX) :])
    return CertIdentity(kind=kind, name=cn)


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        return None  # absent, or ambiguous: never guess which one counts
    value = values[0].value
    return value if isinstance(value, str) else None


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
            f"not a zsd join token (it starts with {_TOKEN_PREFIX!r}); copy the whole token "
            "`zsd cluster init` printed",
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
