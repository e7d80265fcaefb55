"""Who is calling: the identity in the caller's client certificate, and the check
that it is of a kind allowed to make a call.

The TCP listener requires a client certificate of the cluster CA from every caller
(grpc cannot ask for one without requiring it), so the handshake has already
proven that the CA signed the certificate and that it is in its validity period;
what is left is its kind (host, join, client; see zsd.cluster.pki). Calls on the
local Unix socket carry no certificate: they are never a peer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from zsd.cluster.pki import CertIdentity, CertKind, cert_identity
from zsd.errors import InvalidArgument, PermissionDenied

_PEM_CERT = "x509_pem_cert"
NOT_ALLOWED = "PEER_NOT_ALLOWED"
"""The reason of every refusal here (PermissionDenied, field ``certificate``)."""


class AuthContextSource(Protocol):
    """What is needed of a call's context: ``grpc.aio.ServicerContext`` is one."""

    def auth_context(self) -> Mapping[str, Iterable[bytes]]: ...


def caller(context: AuthContextSource) -> CertIdentity:
    """The identity in the caller's certificate; refused (PEER_NOT_ALLOWED) when the
    call carries none or one zsd did not issue."""
    certs = list(context.auth_context().get(_PEM_CERT, ()))
    if len(certs) != 1:
        raise PermissionDenied(
            "this call needs a client certificate of the cluster CA, over the TCP (mutual TLS) "
            "listener; the caller presented none",
            reason=NOT_ALLOWED,
            field="certificate",
        )
    try:
        return cert_identity(certs[0])
    except InvalidArgument as e:
        raise PermissionDenied(e.message, reason=NOT_ALLOWED, field="certificate") from e


def require(context: AuthContextSource, *kinds: CertKind) -> CertIdentity:
    """The caller's identity, if its certificate is one of ``kinds``."""
    identity = caller(context)
    if identity.kind not in kinds:
        allowed = " or ".join(str(k) for k in kinds) or "no"
        raise PermissionDenied(
            f"this call needs a {allowed} certificate; the caller presented a {identity.kind} "
            f"certificate for {identity.name!r}",
            reason=NOT_ALLOWED,
            field="certificate",
        )
    return identity
