"""`zsd cluster client-cert` and `zsd cluster join` from the command line (the join
itself is tested in tests/unit/cluster/test_join.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsd.cli.zsd_main import main
from zsd.cluster import bootstrap, pki
from zsd.cluster.pki import CertIdentity, CertKind


def test_client_cert_writes_a_client_pair_and_the_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = pki.create_ca("prod", "uid-1")
    layout = bootstrap.SharedLayout(root=tmp_path / "shared")
    layout.root.mkdir()
    layout.ca_cert.write_bytes(ca.cert_pem)
    layout.ca_key.write_bytes(ca.key_pem)
    out = tmp_path / "me"
    argv = ["cluster", "client-cert", "--shared-dir", str(layout.root), "--name", "alice", "--out", str(out)]
    assert main(argv) == 0
    assert "alice" in capsys.readouterr().out
    assert pki.cert_identity((out / "client.pem").read_bytes()) == CertIdentity(
        kind=CertKind.CLIENT, name="alice"
    )
    assert (out / "ca.pem").read_bytes() == ca.cert_pem
    assert (out / "client.key").stat().st_mode & 0o777 == 0o600
    # Never over an existing pair.
    assert main(argv) == 1
    assert "already holds client.pem, client.key, ca.pem" in capsys.readouterr().err
    bad_name = [
        "cluster",
        "client-cert",
        "--shared-dir",
        str(layout.root),
        "--name=-x",
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(bad_name) == 1
    assert "name: '-x' is not a client name" in capsys.readouterr().err


def test_client_cert_without_a_cluster_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "cluster",
        "client-cert",
        "--shared-dir",
        str(tmp_path),
        "--name",
        "a",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 1
    assert "cannot read the cluster CA" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_join_without_a_cluster_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["cluster", "join", "--root", str(tmp_path / "h2"), "--shared-dir", str(tmp_path), "--token", "x"]
    argv += ["--set", "host.name=h2", "--set", "host.address=192.0.2.2"]
    assert main(argv) == 1
    assert "holds no initialised cluster" in capsys.readouterr().err
