"""A private libvirtd (with its own virtlogd) for tests and dev-cluster hosts.

It runs in its own mount namespace (optionally inside a network namespace) with
private directories bound over /run/libvirt, /var/lib/libvirt, /var/log/libvirt,
/var/cache/libvirt and /etc/libvirt, so several of them coexist with each other and
with a system libvirtd, and stopping one removes everything it made. Recipe and
timings: ../shared/SANDBOX.md.

- /dev/kvm is masked when KVM cannot run guests here: libvirtd would otherwise
  re-probe QEMU's capabilities on every domain start (~40 s each).
- QEMU runs as root without a security driver: test disks live in 0700 pytest
  directories that the libvirt-qemu user could not reach.
- The QEMU capabilities cache is seeded from, and saved back to, one directory
  per machine: probing takes ~20 s on a fresh cache.
- The copied /etc/libvirt has no autostarted networks (the stock "default" network
  would put virbr0 and a dnsmasq on the machine).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from zsd.cluster import libvirtpki
from zsd.testing.procs import ProcRef, terminate, wait_gone

CAPS_CACHE = Path("/var/cache/zsd/libvirt-caps")
_START_TIMEOUT = 60.0
_BINDS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
    "etc": "/etc/libvirt",
}


@dataclass(frozen=True, kw_only=True)
class Libvirtd:
    root: Path
    libvirtd: ProcRef
    # TCP listener for migration between private libvirtds ("" when not listening).
    listen_address: str = ""
    # Our child, to reap (None when another process started it).
    process: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)

    @property
    def socket_path(self) -> Path:
        return self.root / "run/libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket_path}"


def _qemu_conf(stock: str, *, sanlock: bool, tls_dir: Path | None) -> str:
    text = stock + '\n# zsd private test libvirtd\nuser = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
    # No per-domain /dev namespaces: domains use libvirtd's private /dev copy (``_script``);
    # libvirt's own per-domain /dev fails to start domains on top of it (tried).
    text += "namespaces = []\n"
    if sanlock:
        text += 'lock_manager = "sanlock"\n'
    if tls_dir is not None:
        text += f'default_tls_x509_cert_dir = "{libvirtpki.qemu_dir(tls_dir)}"\n'
    return text


# Leases only where the domain XML names one (zsd's VM leases): no automatic
# per-disk leases, so no lockspace of libvirt's own and no host_id to configure.
_SANLOCK_CONF = "auto_disk_leases = 0\nrequire_lease_for_disks = 0\n"


def _libvirtd_conf(listen_address: str, tls_dir: Path | None) -> str:
    lines = ['unix_sock_group = "root"', 'unix_sock_rw_perms = "0700"', "log_level = 3"]
    if listen_address and tls_dir is not None:
        # As on a cluster host: TLS with the host's cluster certificate; peers must
        # present one signed by the cluster CA.
        pki = libvirtpki.libvirt_dir(tls_dir)
        lines += ["listen_tcp = 0", "listen_tls = 1", 'auth_tls = "none"']
        lines += [f'key_file = "{pki / "serverkey.pem"}"', f'cert_file = "{pki / "servercert.pem"}"']
        lines += [f'ca_file = "{pki / "cacert.pem"}"']
    elif listen_address:
        # Tests only: unauthenticated TCP inside a test network namespace.
        lines += ["listen_tcp = 1", "listen_tls = 0", 'auth_tcp = "none"']
    if listen_address:
        lines.append(f'listen_addr = "{listen_address}"')
    return "\n".join(lines) + "\n"


def _prepare(root: Path, listen_address: str, sanlock_run_dir: Path | None, tls_dir: Path | None) -> None:
    for name in _BINDS:
        (root / name).mkdir(parents=True, exist_ok=True)
    etc = root / "etc"
    shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True, symlinks=True)
    shutil.rmtree(etc / "qemu/networks/autostart", ignore_errors=True)
    (etc / "qemu.conf").write_text(
        _qemu_conf(
            Path("/etc/libvirt/qemu.conf").read_text(), sanlock=sanlock_run_dir is not None, tls_dir=tls_dir
        )
    )
    if sanlock_run_dir is not None:
        (etc / "qemu-sanlock.conf").write_text(_SANLOCK_CONF)
    (etc / "libvirtd.conf").write_text(_libvirtd_conf(listen_address, tls_dir))
    caps = root / "cache/qemu/capabilities"
    if CAPS_CACHE.is_dir() and not caps.exists():
        shutil.copytree(CAPS_CACHE, caps)


_OTHER_EMULATORS = ("/usr/bin/qemu-system-i386", "/usr/bin/qemu-system-x86_64-microvm")


def _script(root: Path, mask_kvm: bool) -> str:
    mounts = [f"mount --bind {root / name} {target}" for name, target in _BINDS.items()]
    if mask_kvm:
        # No /dev/kvm at all: while it exists and is writable, libvirt re-probes QEMU
        # on every domain start because its last probe found no KVM ("it should be
        # usable now"), and a burst of starts queued behind the probes for minutes.
        # A private copy of /dev without it (device nodes copied, pts and shm bound).
        dev = root / "run" / "dev"
        mounts += [
            f"mkdir -p {dev}",
            f"mount -t tmpfs -o mode=0755 zsd-test-dev {dev}",
            f"cp -a /dev/. {dev}/",
            f"rm -f {dev}/kvm",
            f"mount --rbind /dev/pts {dev}/pts",
            f"mount --rbind /dev/shm {dev}/shm",
            f"mount --move {dev} /dev",
        ]
    # Only x86_64 guests run here. libvirt probes every qemu-system-* it finds for
    # getCapabilities (zsd's inventory asks for them) and, without usable KVM, never
    # caches the other ones: each probe held its capabilities lock for ~20 s, and a
    # burst of VM starts waited behind it. Hidden, they are not probed at all.
    for other in _OTHER_EMULATORS:
        if Path(other).exists():
            mounts.append(f"mount --bind /dev/null {other}")
    return " && ".join(
        [
            *mounts,
            f"virtlogd -d -p {root / 'run/virtlogd.pid'}",
            f"exec libvirtd -f {root / 'etc/libvirtd.conf'} -p {root / 'run/libvirtd.pid'}"
            + (" -l" if "listen_addr" in (root / "etc/libvirtd.conf").read_text() else ""),
        ]
    )


def start(
    root: Path,
    *,
    mask_kvm: bool,
    netns: str = "",
    listen_address: str = "",
    sanlock_run_dir: Path | None = None,
    tls_dir: Path | None = None,
) -> Libvirtd:
    """Starts libvirtd + virtlogd under ``root`` and waits until the socket answers.
    ``sanlock_run_dir``: use sanlock as the lock manager, through the sanlock daemon
    whose run directory that is (a dev-cluster host's own). ``tls_dir``: a cluster
    member's tls directory: libvirtd listens with TLS (not plain TCP) and QEMU
    migrates over TLS, with the certificates zsd exported there."""
    for target in _BINDS.values():
        Path(target).mkdir(parents=True, exist_ok=True)
    _prepare(root, listen_address, sanlock_run_dir, tls_dir)
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", _script(root, mask_kvm)]
    if sanlock_run_dir is not None:
        argv = ["env", f"SANLOCK_RUN_DIR={sanlock_run_dir}", *argv]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    log = (root / "libvirtd.out").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    log.close()
    # A waiter reaps libvirtd whenever it exits, whoever stops it: no zombie, and no
    # "still running" warning if the Popen is dropped before stop() is called.
    threading.Thread(target=proc.wait, name=f"reap-libvirtd-{proc.pid}", daemon=True).start()
    ref = ProcRef.of(proc.pid)
    instance = Libvirtd(root=root, libvirtd=ref, listen_address=listen_address, process=proc)
    deadline = time.monotonic() + _START_TIMEOUT
    while not _answers(instance):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(instance)
            out = (root / "libvirtd.out").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"private libvirtd did not start: {out}")
        time.sleep(0.1)
    return instance


def _answers(instance: Libvirtd) -> bool:
    if not instance.socket_path.exists():
        return False
    result = subprocess.run(
        ["virsh", "-c", instance.uri, "version"], capture_output=True, timeout=30, check=False
    )
    return result.returncode == 0


def _pid_from(path: Path) -> ProcRef | None:
    try:
        return ProcRef.of(int(path.read_text().strip()))
    except (OSError, ValueError, psutil.Error):  # also: the pid file outlived its process
        return None


def stop(instance: Libvirtd) -> None:
    """Destroys every domain (by the QEMU pids libvirt recorded), then stops libvirtd
    and virtlogd; saves the capabilities cache for the next private libvirtd."""
    root = instance.root
    qemus = [ref for pidfile in sorted((root / "run/qemu").glob("*.pid")) if (ref := _pid_from(pidfile))]
    for ref in qemus:
        ref.signal(signal.SIGKILL)
    wait_gone(qemus, 10.0)
    process = instance.process

    def reap() -> None:
        if process is not None:
            process.poll()

    terminate([instance.libvirtd], grace=5.0, reap=reap)
    virtlogd = _pid_from(root / "run/virtlogd.pid")
    if virtlogd is not None:
        terminate([virtlogd], grace=5.0)
    caps = root / "cache/qemu/capabilities"
    if caps.is_dir() and any(caps.iterdir()) and not CAPS_CACHE.exists():
        with contextlib.suppress(OSError):
            CAPS_CACHE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(caps, CAPS_CACHE)
