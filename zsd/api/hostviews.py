"""Cluster members as zsd.v1 Host messages: each host's own report of itself (or,
for the serving host, its live record) with what the cluster knows on top: labels,
the etag, and how gossip and sanlock see it. Pure functions; API thread."""

from __future__ import annotations

from collections.abc import Callable

from zsd.cluster.control import HostView
from zsd.cluster.lease.authority import HostStatus
from zsd.v1 import host_pb2

_GOSSIP = {
    "alive": host_pb2.MEMBER_ALIVE,
    "suspect": host_pb2.MEMBER_SUSPECT,
    "dead": host_pb2.MEMBER_DEAD,
    "left": host_pb2.MEMBER_LEFT,
}
_LEASE = {
    HostStatus.UNKNOWN: host_pb2.LEASE_UNKNOWN,
    HostStatus.FREE: host_pb2.LEASE_FREE,
    HostStatus.LIVE: host_pb2.LEASE_LIVE,
    HostStatus.FAIL: host_pb2.LEASE_FAIL,
    HostStatus.DEAD: host_pb2.LEASE_DEAD,
}


def member_host(view: HostView, *, own: Callable[[], host_pb2.Host] | None) -> host_pb2.Host:
    """``own`` builds the serving host's live message; None for any other host."""
    if own is not None:
        msg = own()
    elif view.status is not None:
        msg = host_pb2.Host.FromString(view.status)
    else:
        msg = host_pb2.Host(
            state=host_pb2.Host.UNREACHABLE, state_reasons=["has not reported its inventory yet"]
        )
    entry = view.entry
    msg.name = f"hosts/{entry.name}"
    msg.host_id = entry.host_id
    if entry.address:
        msg.address = entry.address
    msg.labels.clear()
    msg.labels.update(dict(entry.labels))
    msg.etag = str(view.etag)
    msg.gossip_state = (
        host_pb2.MEMBER_ALIVE
        if own is not None
        else _GOSSIP.get(view.gossip or "", host_pb2.MEMBER_STATE_UNSPECIFIED)
    )
    msg.lease_state = _LEASE[view.lease] if view.lease is not None else host_pb2.LEASE_STATE_UNSPECIFIED
    if own is None:
        reason = _unreachable_reason(msg.gossip_state, msg.lease_state)
        if reason:
            msg.state = host_pb2.Host.UNREACHABLE
            msg.state_reasons.insert(0, reason)
            msg.ClearField("uptime")
    return msg


def _unreachable_reason(gossip: host_pb2.MemberState.ValueType, lease: host_pb2.LeaseState.ValueType) -> str:
    if lease == host_pb2.LEASE_DEAD:
        return "its sanlock host lease expired: the host is dead"
    if gossip == host_pb2.MEMBER_LEFT:
        return "it left the cluster gossip (zsd stopped)"
    if gossip in (host_pb2.MEMBER_SUSPECT, host_pb2.MEMBER_DEAD):
        lease_word = (
            "still renews" if lease in (host_pb2.LEASE_LIVE, host_pb2.LEASE_FAIL) else "state unknown"
        )
        return f"gossip cannot reach it (its sanlock lease {lease_word})"
    return ""
