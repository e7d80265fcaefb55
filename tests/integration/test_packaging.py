"""packaging/build-deb.sh: the Debian package is built once, inspected with dpkg-deb, and its venv is
run from the extracted tree bind-mounted at /usr/lib/zsd in a private mount namespace. The package
is never installed on this machine."""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from zsd import config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)"),
]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for unshare -m and mount")

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
VENV = "/usr/lib/zsd/venv"
EXAMPLE_HOST = "node1"  # what the shipped zsd.toml shows for host.name


@dataclasses.dataclass(frozen=True)
class Deb:
    path: Path
    root: Path  # the extracted payload
    control: Path  # the extracted DEBIAN/ (dpkg-deb -e)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Deb:
    out = tmp_path_factory.mktemp("deb")
    # xz level 1: the same package, 7x faster to compress than the default level 6.
    env = {**os.environ, "ZSD_DEB_XZ_LEVEL": "1"}
    build = subprocess.run(
        [str(REPO / "packaging" / "build-deb.sh"), str(out / "dist")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-5000:]
    path = Path(build.stdout.strip().splitlines()[-1])
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True)
    assert path == out / "dist" / f"zsd_{VERSION}_{arch.stdout.strip()}.deb"
    subprocess.run(["dpkg-deb", "-x", str(path), str(out / "root")], check=True)
    subprocess.run(["dpkg-deb", "-e", str(path), str(out / "DEBIAN")], check=True)
    return Deb(path=path, root=out / "root", control=out / "DEBIAN")


def _fields(deb: Deb) -> dict[str, str]:
    text = subprocess.run(["dpkg-deb", "--field", str(deb.path)], capture_output=True, text=True, check=True)
    fields: dict[str, str] = {}
    name = ""
    for line in text.stdout.splitlines():
        if line.startswith((" ", "\t")):
            fields[name] += "\n" + line
        else:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


@dataclasses.dataclass(frozen=True)
class Entry:
    mode: str  # as ls -l shows it: "-rw-r--r--"
    owner: str
    target: str | None  # symlink target


def _contents(deb: Deb) -> dict[str, Entry]:
    text = subprocess.run(
        ["dpkg-deb", "--contents", str(deb.path)], capture_output=True, text=True, check=True
    ).stdout
    entries: dict[str, Entry] = {}
    for line in text.splitlines():
        mode, owner, _size, _date, _time, name = line.split(maxsplit=5)
        target = None
        if mode.startswith("l"):
            name, _, target = name.partition(" -> ")
        entries["/" + name.removeprefix("./").rstrip("/")] = Entry(mode, owner, target)
    return entries


# --- control data -------------------------------------------------------------------------------


def test_control_fields(deb: Deb) -> None:
    f = _fields(deb)
    assert f["Package"] == "zsd"
    assert f["Version"] == VERSION
    assert f["Architecture"] == "amd64"
    assert re.fullmatch(r".+ <[^@\s]+@[^@\s]+>", f["Maintainer"]), f["Maintainer"]
    assert f["Description"].splitlines()[0].strip() and len(f["Description"].splitlines()) > 2
    assert int(f["Installed-Size"]) > 10_000  # KiB: the venv is tens of MB
    depends = [d.strip() for d in f["Depends"].split(",")]
    assert "python3 (>= 3.11)" in depends
    names = {d.split()[0] for d in depends}
    for required in (
        "python3-libvirt",
        "python3-sanlock",
        "python3-nftables",
        "libvirt-daemon-system",
        "qemu-system-x86",
        "qemu-utils",
        "sanlock",
        "nftables",
        "iproute2",
    ):
        assert required in names, f"Depends lacks {required}: {f['Depends']}"


def test_conffiles_and_maintainer_scripts(deb: Deb) -> None:
    assert (deb.control / "conffiles").read_text().split() == ["/etc/zsd/zsd.toml"]
    md5sums = (deb.control / "md5sums").read_text()
    assert re.search(r"^[0-9a-f]{32}  usr/share/doc/zsd/copyright$", md5sums, re.M)
    for name in ("postinst", "prerm", "postrm"):
        script = deb.control / name
        assert script.stat().st_mode & 0o777 == 0o755, name
        subprocess.run(["sh", "-n", str(script)], check=True)
    postinst = (deb.control / "postinst").read_text()
    assert "[ -d /run/systemd/system ]" in postinst
    assert "systemctl daemon-reload" in postinst and "systemctl enable zsd.service" in postinst
    assert "systemctl stop zsd.service" in (deb.control / "prerm").read_text()
    postrm = (deb.control / "postrm").read_text()
    assert "rm -rf /etc/zsd" in postrm and "daemon-reload" in postrm
    assert not re.search(r"^\s*rm\b.*/var/lib", postrm, re.M), "postrm must never remove /var/lib/zsd"


@needs_root
def test_maintainer_scripts_run(deb: Deb, tmp_path: Path) -> None:
    """postinst creates /var/lib/zsd 0700; postrm purge removes /etc/zsd and keeps /var/lib/zsd.
    Run for real, in a mount namespace where /etc, /var/lib and /run are empty tmpfs (no systemd)."""
    for name in ("postinst", "postrm"):
        shutil.copy(deb.control / name, tmp_path / name)
    script = f"""
        set -e
        mount -t tmpfs tmpfs /var/lib && mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /etc
        sh {tmp_path}/postinst configure ""
        stat -c %a /var/lib/zsd
        touch /var/lib/zsd/state && mkdir /etc/zsd && touch /etc/zsd/zsd.toml
        sh {tmp_path}/postrm remove
        test -e /etc/zsd/zsd.toml
        sh {tmp_path}/postrm purge
        test ! -e /etc/zsd && test -e /var/lib/zsd/state && echo purge-kept-state
    """
    run = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["700", "purge-kept-state"]


# --- payload ------------------------------------------------------------------------------------


def test_files_and_modes(deb: Deb) -> None:
    entries = _contents(deb)
    assert {e.owner for e in entries.values()} == {"root/root"}
    assert not [n for n, e in entries.items() if e.mode[8] == "w" and not e.mode.startswith("l")]
    for path in (
        "/lib/systemd/system/zsd.service",
        "/etc/zsd/zsd.toml",
        "/usr/share/bash-completion/completions/zsctl",
        "/usr/share/doc/zsd/copyright",
    ):
        assert entries[path].mode == "-rw-r--r--", path
    for tool in ("zsd", "zsctl"):
        assert entries[f"{VENV}/bin/{tool}"].mode == "-rwxr-xr-x"
        link = entries[f"/usr/bin/{tool}"]
        if link.target is None:  # a wrapper script would do as well as a symlink
            assert link.mode == "-rwxr-xr-x"
        else:
            resolved = (deb.root / "usr/bin" / link.target).resolve()
            assert resolved == (deb.root / f"{VENV.lstrip('/')}/bin/{tool}").resolve()
    assert "/var/lib/zsd" not in entries  # postinst creates it; dpkg must not own user data
    pyvenv = (deb.root / VENV.lstrip("/") / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in pyvenv and "home = /usr/bin" in pyvenv
    assert (deb.root / VENV.lstrip("/") / "bin/zsd").read_text().startswith(f"#!{VENV}/bin/python")


def test_no_trace_of_the_build_directory(deb: Deb) -> None:
    leaks = [
        str(p.relative_to(deb.root))
        for p in deb.root.rglob("*")
        if p.is_file() and not p.is_symlink() and b"/zsd-deb." in p.read_bytes()
    ]
    assert not leaks


def test_pip_records_match_the_files(deb: Deb) -> None:
    """The build rewrites the venv's scripts to their final path; pip's manifests must follow."""
    site = next((deb.root / VENV.lstrip("/")).glob("lib/python3*/site-packages"))
    checked = 0
    for record in site.glob("*.dist-info/RECORD"):
        for name, digest, size in csv.reader(io.StringIO(record.read_text())):
            if digest:
                data = (site / name).read_bytes()
                want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert (digest, size) == (f"sha256={want}", str(len(data))), name
                checked += 1
    assert checked > 100


def test_unit_file(deb: Deb) -> None:
    unit = (deb.root / "lib/systemd/system/zsd.service").read_text()
    assert unit == (REPO / "systemd" / "zsd.service").read_text()
    assert "ExecStart=/usr/bin/zsd run" in unit.splitlines()


def test_bash_completion(deb: Deb) -> None:
    shipped = (deb.root / "usr/share/bash-completion/completions/zsctl").read_text()
    ours = subprocess.run(
        [sys.executable, "-m", "zsd.cli.zsctl", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shipped == ours
    assert re.search(r"^complete .* zsctl$", shipped, re.M)
    subprocess.run(["bash", "-n", "-c", shipped], check=True)


def test_conffile_shows_every_key_with_its_default(deb: Deb, tmp_path: Path) -> None:
    shipped = deb.root / "etc/zsd/zsd.toml"
    text = shipped.read_text()
    # As shipped (every key commented out) it is valid and means the embedded defaults.
    as_shipped = config.load(config_file=shipped, env={}, hostname=EXAMPLE_HOST)
    commented = re.compile(r"^#([a-z_]+ = .*)$", re.M)
    keys_shown = commented.findall(text)
    uncommented = tmp_path / "zsd.toml"
    uncommented.write_text(commented.sub(r"\1", text))
    doc = tomllib.loads(uncommented.read_text())
    shown = {f"{section}.{key}" for section, body in doc.items() for key in body}
    assert len(keys_shown) == len(shown)  # no key twice
    assert shown == set(config._schema(EXAMPLE_HOST))  # every known key, and only those
    # Uncommented, it loads (so every key is known and valid) to exactly the defaults.
    every_key = config.load(config_file=uncommented, env={}, hostname=EXAMPLE_HOST)
    assert dataclasses.replace(every_key, source=()) == dataclasses.replace(as_shipped, source=())
    assert as_shipped == config.load(config_file=shipped, env={}, hostname=EXAMPLE_HOST)


# --- the venv, run from its final path -----------------------------------------------------------


@pytest.fixture(scope="module")
def mountpoint() -> Iterator[Path]:
    """/usr/lib/zsd must exist to mount over it; created only if absent, and removed again."""
    path = Path("/usr/lib/zsd")
    created = not path.exists()
    if created:
        path.mkdir()
    try:
        yield path
    finally:
        if created:
            path.rmdir()


def _in_place(deb: Deb, mountpoint: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Runs command (sh) where the package's /usr/lib/zsd is bind-mounted at /usr/lib/zsd."""
    script = f'mount --bind "{deb.root}/usr/lib/zsd" {mountpoint} && {command}'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",  # not the repository: python -c would import zsd from the working tree
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"},
    )


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@needs_root
def test_zsd_and_zsctl_run_from_the_package(deb: Deb, mountpoint: Path) -> None:
    before = _files(deb.root)
    version = _in_place(deb, mountpoint, f"{VENV}/bin/zsd version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == VERSION
    # Through the /usr/bin symlinks of the package.
    version = _in_place(deb, mountpoint, f"{deb.root}/usr/bin/zsd version")
    assert version.returncode == 0 and version.stdout.strip() == VERSION, version.stderr
    helped = _in_place(deb, mountpoint, f"{deb.root}/usr/bin/zsctl --help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: zsctl")
    checked = _in_place(deb, mountpoint, f"{VENV}/bin/zsd config check --config {deb.root}/etc/zsd/zsd.toml")
    assert checked.returncode == 0, checked.stderr
    # The shipped bytecode was valid: running wrote no new .pyc (dpkg would not know about it).
    assert _files(deb.root) == before


@needs_root
def test_venv_imports(deb: Deb, mountpoint: Path) -> None:
    """PyPI dependencies come from the venv, the distribution's bindings from Debian, and the
    bytecode names the installed path."""
    probe = (
        "import grpc, trio, yaml, google.protobuf, psutil, cryptography, pyroute2, zsd.config; "
        "import libvirt, sanlock, nftables; "
        "print(zsd.config.load.__code__.co_filename); "
        "[print(m.__name__, m.__file__) for m in (grpc, trio, yaml, google.protobuf, psutil, "
        "cryptography, pyroute2, libvirt, sanlock, nftables)]"
    )
    run = _in_place(deb, mountpoint, f'{VENV}/bin/python -c "{probe}"')
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"{VENV}/lib/python3.11/site-packages/zsd/config.py"
    where = dict(line.split(" ", 1) for line in lines[1:])
    for name in ("grpc", "trio", "yaml", "google.protobuf", "psutil", "cryptography", "pyroute2"):
        assert where[name].startswith(f"{VENV}/lib/"), (name, where[name])
    for name in ("libvirt", "sanlock", "nftables"):
        assert where[name].startswith("/usr/lib/python3/dist-packages/"), (name, where[name])
