"""The cluster identity in libvirt's and QEMU's certificate layouts."""

from __future__ import annotations

from pathlib import Path

from zsd.cluster import libvirtpki


def _identity(tls: Path) -> tuple[Path, Path, Path]:
    tls.mkdir()
    files = tls / "host.pem", tls / "host.key", tls / "ca.pem"
    for path, text in zip(files, (b"CERT", b"KEY", b"CA"), strict=True):
        path.write_bytes(text)
    return files


def test_both_layouts_hold_the_host_identity_and_keys_stay_private(tmp_path: Path) -> None:
    cert, key, ca = _identity(tmp_path / "tls")
    libvirtpki.export(cert=cert, key=key, ca=ca)
    libvirt = libvirtpki.libvirt_dir(tmp_path / "tls")
    qemu = libvirtpki.qemu_dir(tmp_path / "tls")
    assert {p.name: p.read_bytes() for p in libvirt.iterdir()} == {
        "cacert.pem": b"CA",
        "servercert.pem": b"CERT",
        "serverkey.pem": b"KEY",
        "clientcert.pem": b"CERT",
        "clientkey.pem": b"KEY",
    }
    assert {p.name: p.read_bytes() for p in qemu.iterdir()} == {
        "ca-cert.pem": b"CA",
        "server-cert.pem": b"CERT",
        "server-key.pem": b"KEY",
        "client-cert.pem": b"CERT",
        "client-key.pem": b"KEY",
    }
    for directory in (libvirt, qemu):
        assert directory.stat().st_mode & 0o777 == 0o700
        for path in directory.iterdir():
            assert path.stat().st_mode & 0o777 == (0o600 if "key" in path.name else 0o644), path


def test_a_renewed_certificate_replaces_the_old_and_unchanged_files_are_not_rewritten(tmp_path: Path) -> None:
    cert, key, ca = _identity(tmp_path / "tls")
    libvirtpki.export(cert=cert, key=key, ca=ca)
    cacert = libvirtpki.libvirt_dir(tmp_path / "tls") / "cacert.pem"
    inode = cacert.stat().st_ino
    cert.write_bytes(b"RENEWED")
    libvirtpki.export(cert=cert, key=key, ca=ca)
    assert (libvirtpki.libvirt_dir(tmp_path / "tls") / "servercert.pem").read_bytes() == b"RENEWED"
    assert (libvirtpki.qemu_dir(tmp_path / "tls") / "client-cert.pem").read_bytes() == b"RENEWED"
    assert cacert.stat().st_ino == inode


def test_only_tls_uris_without_a_pkipath_get_this_hosts() -> None:
    pki = Path("/var/lib/zsd/tls/libvirt")
    assert (
        libvirtpki.with_pkipath("qemu+tls://10.0.0.2/system", pki)
        == "qemu+tls://10.0.0.2/system?pkipath=/var/lib/zsd/tls/libvirt"
    )
    assert (
        libvirtpki.with_pkipath("qemu+tls://[fd00::2]/system?no_verify=0", pki)
        == "qemu+tls://[fd00::2]/system?no_verify=0&pkipath=/var/lib/zsd/tls/libvirt"
    )
    for unchanged in ("qemu+tcp://10.0.0.2/system", "qemu+tls://h2/system?pkipath=/etc/pki/zsd"):
        assert libvirtpki.with_pkipath(unchanged, pki) == unchanged
    assert libvirtpki.with_pkipath("qemu+tls://h2/system", None) == "qemu+tls://h2/system"
