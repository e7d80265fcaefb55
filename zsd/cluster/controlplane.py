"""The control-plane subsystem of a cluster member: join the lockspace with this
host's id, then campaign for leadership for as long as zsd runs.

Started by the daemon only on hosts with a membership (``zsd cluster init``);
the embedded one-host default needs no shared storage and does not run it.
The host-id lease is kept when zsd stops (a restarted zsd adopts it at once);
the leader lease is released by stepping down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from zsd.cluster.bootstrap import Membership, SharedLayout, load_cluster_info
from zsd.cluster.leadership import Leadership
from zsd.cluster.lease import Authority, LeaseConfig, LibSanlock, SanlockAuthority

log = logging.getLogger(__name__)

AuthorityFactory = Callable[[LeaseConfig], Authority]


@dataclass(frozen=True, kw_only=True)
class ControlPlane:
    leadership: Leadership
    authority: Authority
    """Joined with this host's id (host-lease states of all hosts come from it)."""
    leaving: trio.Event
    """Set when the cluster removed this host: its host-id lease is released on the
    way out (not kept for a restart), so the id can be given to another host."""


def sanlock_authority(config: LeaseConfig) -> Authority:
    return SanlockAuthority(config=config, api=LibSanlock())


async def run_control_plane(
    *,
    membership: Membership,
    status: Callable[[str], None],
    make_authority: AuthorityFactory = sanlock_authority,
    task_status: trio.TaskStatus[ControlPlane] = trio.TASK_STATUS_IGNORED,
) -> None:
    layout = SharedLayout(root=Path(membership.shared_dir))
    info = await trio.to_thread.run_sync(load_cluster_info, layout)
    config = LeaseConfig(shared_dir=layout.root, lockspace=info.lockspace, io_timeout=info.io_timeout)
    authority = make_authority(config)
    leaving = trio.Event()
    try:
        bounds = config.timing
        status(
            f"joining lockspace {info.lockspace} as host {membership.host_id} (up to {bounds.join_max:.0f} s)"
        )
        await authority.join(membership.host_id)
        leadership = Leadership(authority=authority, db_path=layout.db, owner=f"host-{membership.host_id}")
        async with trio.open_nursery() as nursery:
            state = await nursery.start(leadership.run)
            role = (
                f"leading, epoch {state.epoch}" if state.leading else f"following host {state.leader_host_id}"
            )
            log.info("control plane up: %s", role)
            task_status.started(ControlPlane(leadership=leadership, authority=authority, leaving=leaving))
    finally:
        with trio.CancelScope(shield=True):
            if leaving.is_set():
                with trio.move_on_after(5):
                    await authority.leave()
                    log.info("left lockspace %s: host id %d released", info.lockspace, membership.host_id)
            await authority.aclose()
