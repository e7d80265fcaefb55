"""The host's cluster identity in the file layouts libvirt and QEMU read, so live
migration runs over the cluster's TLS: libvirtd-to-libvirtd (qemu+tls, peer to
peer) and QEMU-to-QEMU (the memory stream, VIR_MIGRATE_TLS) authenticate each other
with the same host certificates the cluster's gRPC uses.

    {state}/tls/libvirt/  cacert.pem servercert.pem serverkey.pem clientcert.pem clientkey.pem
    {state}/tls/qemu/     ca-cert.pem server-cert.pem server-key.pem client-cert.pem client-key.pem

libvirtd points at the first (``key_file``/``cert_file``/``ca_file`` for its TLS
listener; zsd passes the directory as ``pkipath`` when it opens a migration), QEMU
at the second (qemu.conf ``default_tls_x509_cert_dir``). A host certificate carries
both server and client usage and the host's addresses, which libvirt and QEMU check
against the migration URI.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from zsd.util.fsutil import write_atomic

_LIBVIRT = {
    "cacert.pem": "ca",
    "servercert.pem": "cert",
    "serverkey.pem": "key",
    "clientcert.pem": "cert",
    "clientkey.pem": "key",
}
_QEMU = {
    "ca-cert.pem": "ca",
    "server-cert.pem": "cert",
    "server-key.pem": "key",
    "client-cert.pem": "cert",
    "client-key.pem": "key",
}


def libvirt_dir(tls_dir: Path) -> Path:
    return tls_dir / "libvirt"


def qemu_dir(tls_dir: Path) -> Path:
    return tls_dir / "qemu"


def export(*, cert: Path, key: Path, ca: Path) -> None:
    """Writes both layouts next to ``cert`` from the host's certificate, key and the
    cluster CA; files already holding the same bytes are left alone (libvirtd and
    QEMU read them at any time)."""
    sources = {"cert": cert.read_bytes(), "key": key.read_bytes(), "ca": ca.read_bytes()}
    tls_dir = cert.parent
    for directory, layout in ((libvirt_dir(tls_dir), _LIBVIRT), (qemu_dir(tls_dir), _QEMU)):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, source in layout.items():
            path = directory / name
            data = sources[source]
            if not path.exists() or path.read_bytes() != data:
                write_atomic(path, data, mode=0o600 if source == "key" else 0o644)


def with_pkipath(uri: str, pki_dir: Path | None) -> str:
    """A qemu+tls URI that names this host's client certificates (libvirtd, which
    opens the peer-to-peer connection, reads them from there); other URIs, and URIs
    that already name a pkipath, unchanged."""
    parts = urlsplit(uri)
    if pki_dir is None or parts.scheme != "qemu+tls" or "pkipath" in parse_qs(parts.query):
        return uri
    return f"{uri}{'&' if parts.query else '?'}pkipath={pki_dir}"
