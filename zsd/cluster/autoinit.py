"""The cluster of one, set up automatically: a host that is no cluster member and
has a sanlock daemon founds its own cluster on first start, with this host's state
directory standing in for shared storage (``{state}/cluster``). Everything a
bigger cluster does then works the same on one host (labels, operations kept in
cluster.db, watches). Its directory is local, so no other host can join it: a
host meant to grow into a cluster is founded with `zsd cluster init` on shared
storage instead.

Without a reachable sanlock daemon zsd keeps the embedded cluster of one (no
cluster state) and says why in its log.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

from zsd.cluster.bootstrap import Membership, init_cluster, load_membership
from zsd.cluster.controlplane import AuthorityFactory
from zsd.cluster.lease import LeaseConfig
from zsd.errors import FailedPrecondition
from zsd.paths import Paths

log = logging.getLogger(__name__)

LOCAL_DIR = "cluster"
# Local disk answers in microseconds; a short io timeout makes the first start
# (joining the lockspace) take seconds instead of the ~20 s of the default 10.
LOCAL_IO_TIMEOUT = 1


def sanlock_socket(environ: dict[str, str]) -> Path:
    return Path(environ.get("SANLOCK_RUN_DIR") or "/run/sanlock") / "sanlock.sock"


def sanlock_reachable(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


async def found_cluster_of_one(
    *,
    paths: Paths,
    cluster_name: str,
    host_name: str,
    address: str,
    environ: dict[str, str],
    make_authority: AuthorityFactory,
    progress: Callable[[str], None],
) -> Membership | None:
    """Founds the local cluster and returns this host's membership; None (and a log
    line) when no sanlock daemon answers."""
    sock = sanlock_socket(environ)
    if not sanlock_reachable(sock):
        log.warning(
            "no sanlock daemon at %s: running as the embedded cluster of one, without cluster state "
            "(start sanlock, or found a cluster with `zsd cluster init`)",
            sock,
        )
        return None
    shared = paths.state_dir / LOCAL_DIR
    if shared.exists() and any(shared.iterdir()):
        raise FailedPrecondition(
            f"{shared} holds a cluster this host is not a member of (its membership file is gone); "
            "restore membership.json, or move the directory away to found a new cluster",
            reason="ORPHANED_LOCAL_CLUSTER",
            field="cluster.auto_init",
        )
    shared.mkdir(parents=True, exist_ok=True, mode=0o700)
    authority = make_authority(LeaseConfig(shared_dir=shared, io_timeout=LOCAL_IO_TIMEOUT))
    try:
        result = await init_cluster(
            authority=authority,
            paths=paths,
            name=cluster_name,
            host_name=host_name,
            address=address,
            progress=progress,
        )
    finally:
        await authority.aclose()
    log.info("founded the cluster of one %r (%s) in %s", cluster_name, result.info.uid, shared)
    return load_membership(paths)
