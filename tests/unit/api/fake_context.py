"""A stand-in for ``grpc.aio.ServicerContext`` where only the caller's transport
matters: ``auth_context()`` shaped as grpc fills it (checked against a real
mutual-TLS server in test_peerauth)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class FakeServicerContext:
    def __init__(self, auth: Mapping[str, Iterable[bytes]]) -> None:
        self._auth = {key: list(values) for key, values in auth.items()}

    @classmethod
    def tls(cls, cert_pem: bytes) -> FakeServicerContext:
        """A call over the TCP listener from a client presenting ``cert_pem``."""
        return cls({"transport_security_type": [b"ssl"], "x509_pem_cert": [cert_pem]})

    @classmethod
    def unix(cls) -> FakeServicerContext:
        """A call over the local Unix socket (no TLS, no certificate)."""
        return cls({"transport_security_type": [b"insecure"]})

    def auth_context(self) -> dict[str, list[bytes]]:
        return {key: list(values) for key, values in self._auth.items()}
