"""``zsd cluster init``: make a directory on shared storage into a new cluster.

Creates, in this order, the lease lockspace and leader lease, the cluster CA,
and cluster.db (written under the first leader epoch, with the cluster, the first
host with its host id record, and a join token's hash), then ``cluster.json``, the
marker that the directory holds a complete cluster. A crash before the marker
leaves a directory that init refuses to touch: nothing there is user data yet,
but zsd never deletes what it did not just create in the same call; the message
says what to remove.

The founding host gets host id 1, a certificate signed by the cluster CA, and a
membership file in its state directory that ``zsd run`` reads.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from zsd.cluster import admission, libvirtpki, pki
from zsd.cluster.identity import host_identity
from zsd.cluster.lease import Authority, LeaseConfig
from zsd.cluster.records import KIND_CLUSTER, KIND_JOIN_TOKEN, HostEntry
from zsd.cluster.store import ClusterDb, Create
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, Unavailable
from zsd.paths import Paths
from zsd.util.fsutil import write_atomic

log = logging.getLogger(__name__)

FOUNDER_HOST_ID = 1


@dataclass(frozen=True, kw_only=True)
class SharedLayout:
    """Where a cluster keeps its files on shared storage."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / "cluster.json"

    @property
    def db(self) -> Path:
        return self.root / "cluster.db"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"


@dataclass(frozen=True, kw_only=True)
class ClusterInfo:
    """The content of ``cluster.json``."""

    uid: str
    name: str
    created: float
    lockspace: str
    io_timeout: int


@dataclass(frozen=True, kw_only=True)
class Membership:
    """This host's membership, kept in its state directory (``membership.json``)."""

    cluster_uid: str
    host_id: int
    shared_dir: str


@dataclass(frozen=True, kw_only=True)
class InitResult:
    info: ClusterInfo
    epoch: int
    token: str


def membership_path(paths: Paths) -> Path:
    return paths.state_dir / "membership.json"


def tls_paths(paths: Paths) -> tuple[Path, Path, Path]:
    """(host certificate, host key, cluster CA) in this host's state directory."""
    tls = paths.state_dir / "tls"
    return tls / "host.pem", tls / "host.key", tls / "ca.pem"


def load_membership(paths: Paths) -> Membership | None:
    path = membership_path(paths)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        return Membership(
            cluster_uid=str(doc["cluster_uid"]),
            host_id=int(doc["host_id"]),
            shared_dir=str(doc["shared_dir"]),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise FailedPrecondition(
            f"{path} is damaged ({e}); restore it or move it away",
            reason="MEMBERSHIP_DAMAGED",
            field=str(path),
        ) from e


def write_member_files(paths: Paths, *, host: pki.KeyPair, ca_pem: bytes, membership: Membership) -> None:
    """This host's certificate, key and cluster CA, then its membership file: written
    last, it is what makes the host a member for ``zsd run``."""
    cert, key, ca_copy = tls_paths(paths)
    write_atomic(cert, host.cert_pem, mode=0o644)
    write_atomic(key, host.key_pem, mode=0o600)
    write_atomic(ca_copy, ca_pem, mode=0o644)
    libvirtpki.export(cert=cert, key=key, ca=ca_copy)
    write_atomic(membership_path(paths), json.dumps(asdict(membership), indent=2).encode())


def load_ca(layout: SharedLayout) -> pki.KeyPair:
    """The cluster CA, key included, from shared storage (the key is root's only)."""
    try:
        return pki.KeyPair(cert_pem=layout.ca_cert.read_bytes(), key_pem=layout.ca_key.read_bytes())
    except OSError as e:
        raise FailedPrecondition(
            f"cannot read the cluster CA {e.filename}: {e.strerror} (zsd needs root and the shared "
            "storage mounted)",
            field="shared_dir",
        ) from e


def load_cluster_info(layout: SharedLayout) -> ClusterInfo:
    try:
        doc = json.loads(layout.marker.read_text())
        return ClusterInfo(**doc)
    except FileNotFoundError:
        raise FailedPrecondition(
            f"{layout.root} holds no initialised cluster (no cluster.json)", field="shared_dir"
        ) from None
    except (ValueError, TypeError) as e:
        raise FailedPrecondition(f"{layout.marker} is damaged: {e}", field="shared_dir") from e


def _check_empty(layout: SharedLayout) -> None:
    if not layout.root.is_dir():
        raise InvalidArgument(
            f"{layout.root} is not a directory; mount the shared storage and create the directory first",
            field="shared_dir",
        )
    if layout.marker.exists():
        raise AlreadyExists(
            f"{layout.root} already holds a cluster (cluster.json exists)", field="shared_dir"
        )
    leftovers = sorted(p.name for p in layout.root.iterdir())
    if leftovers:
        raise FailedPrecondition(
            f"{layout.root} is not empty ({', '.join(leftovers)}) but holds no complete cluster: an earlier "
            "`zsd cluster init` stopped half-way, or this is the wrong directory. zsd will not delete it; "
            "remove those files yourself if they are leftovers of a failed init",
            field="shared_dir",
        )


async def init_cluster(
    *,
    authority: Authority,
    paths: Paths,
    name: str,
    host_name: str,
    address: str,
    progress: Callable[[str], None],
) -> InitResult:
    """Creates a new cluster in ``authority.config.shared_dir`` with this host as its founder."""
    config: LeaseConfig = authority.config
    layout = SharedLayout(root=config.shared_dir)
    _check_empty(layout)
    if load_membership(paths) is not None:
        raise AlreadyExists(
            f"this host is already a cluster member ({membership_path(paths)}); "
            "remove it from that cluster first",
            field="host",
        )
    uid = str(uuid.uuid4())
    info = ClusterInfo(
        uid=uid, name=name, created=time.time(), lockspace=config.lockspace, io_timeout=config.io_timeout
    )
    progress(f"writing the lease lockspace on {config.shared_dir}")
    await authority.init_storage()
    bounds = config.timing
    progress(
        f"joining as host {FOUNDER_HOST_ID} (sanlock takes {bounds.join_min:.0f}-{bounds.join_max:.0f} s)"
    )
    await authority.join(FOUNDER_HOST_ID)
    try:
        epoch = await authority.acquire_leader()
        if epoch is None:
            raise Unavailable("another host holds the new cluster's leader lease", field="shared_dir")
        progress(f"holding the leader lease, epoch {epoch}; creating the CA and cluster.db")
        ca = pki.create_ca(name, uid)
        token = pki.new_join_token(cluster_uid=uid, ca=ca)
        write_atomic(layout.ca_cert, ca.cert_pem, mode=0o644)
        write_atomic(layout.ca_key, ca.key_pem, mode=0o600)
        db = ClusterDb.create(layout.db, epoch=epoch, owner=f"host-{FOUNDER_HOST_ID}")
        try:
            founder = HostEntry(
                name=host_name,
                host_id=FOUNDER_HOST_ID,
                uid=host_identity(paths.identity_file).uid,
                address=address,
                joined_at=info.created,
            )
            db.commit(
                [
                    Create(kind=KIND_CLUSTER, name="cluster", data=json.dumps(asdict(info)).encode()),
                    *admission.claim(founder),
                    Create(kind=KIND_JOIN_TOKEN, name=token.secret_hash, data=b"{}"),
                ]
            )
        finally:
            db.close()
        host_pair = pki.issue_host_cert(
            ca, host_name=host_name, host_id=FOUNDER_HOST_ID, addresses=[address] if address else []
        )
        write_atomic(layout.marker, json.dumps(asdict(info), indent=2).encode(), mode=0o644)
        write_member_files(
            paths,
            host=host_pair,
            ca_pem=ca.cert_pem,
            membership=Membership(
                cluster_uid=uid, host_id=FOUNDER_HOST_ID, shared_dir=str(config.shared_dir)
            ),
        )
    finally:
        # The daemon campaigns for itself; init holds nothing after it returns.
        await authority.leave()
    return InitResult(info=info, epoch=epoch, token=token.encode())
