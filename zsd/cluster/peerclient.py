"""Calling other hosts: mutual-TLS channels with this host's certificate, and the
leader's change feed as a trio async iterator.

Host certificates name the host (DNS SAN = host name, IP SANs = its addresses);
channels verify the peer by its host name, so a host reached at an address that
moved still proves who it is.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

import grpc
import trio

from zsd.api.status import from_rpc_error
from zsd.cluster.feedcodec import event_from_pb
from zsd.cluster.store import ChangeSet, Snapshot
from zsd.errors import FailedPrecondition, Unavailable
from zsd.peer.v1 import peer_pb2, peer_pb2_grpc

# Keepalives make a dead leader's feed fail in seconds rather than at TCP's minutes.
_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


@dataclass(frozen=True, kw_only=True)
class PeerTls:
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    @classmethod
    def load(cls, cert: Path, key: Path, ca: Path) -> PeerTls:
        try:
            return cls(cert_pem=cert.read_bytes(), key_pem=key.read_bytes(), ca_pem=ca.read_bytes())
        except OSError as e:
            raise FailedPrecondition(
                f"cannot read this host's cluster certificate: {e}", reason="NO_HOST_CERT"
            ) from e

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )


@dataclass(frozen=True, kw_only=True)
class PeerTarget:
    endpoint: str
    """``IP:PORT``."""
    host_name: str
    """What the peer's certificate must name."""


def _options(target: PeerTarget) -> list[tuple[str, str | int]]:
    return [*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", target.host_name)]


def sync_channel(target: PeerTarget, tls: PeerTls) -> grpc.Channel:
    return grpc.secure_channel(target.endpoint, tls.credentials(), options=_options(target))


def aio_channel(target: PeerTarget, tls: PeerTls) -> grpc.aio.Channel:
    """For the API thread's event loop only."""
    return grpc.aio.secure_channel(target.endpoint, tls.credentials(), options=_options(target))


async def watch_feed(
    target: PeerTarget, tls: PeerTls, *, from_revision: int, snapshot: bool
) -> AsyncGenerator[Snapshot | ChangeSet, None]:
    """The leader's feed: a Snapshot first if asked for (or if the leader cannot
    serve changes that old), then ChangeSets. Ends with a ZsdError when the stream
    breaks. Uses the synchronous grpc client in worker threads: one hop per message,
    and no second event loop to bridge."""
    channel = sync_channel(target, tls)
    stub = peer_pb2_grpc.PeerServiceStub(channel)
    call = stub.Watch(peer_pb2.WatchRequest(from_revision=from_revision, snapshot=snapshot))
    try:
        while True:
            event = await trio.to_thread.run_sync(_next, call, abandon_on_cancel=True)
            if event is None:
                raise Unavailable(f"{target.host_name} ended the feed", reason="FEED_ENDED")
            yield event_from_pb(event)
    finally:
        call.cancel()  # type: ignore[no-untyped-call]
        channel.close()


def _next(call: grpc.Call) -> peer_pb2.WatchEvent | None:
    try:
        return next(call)  # type: ignore[call-overload,no-any-return]
    except StopIteration:
        return None
    except grpc.RpcError as e:
        raise from_rpc_error(e.code(), e.details() or "", e.trailing_metadata() or ()) from e


class ChannelPool:
    """One asyncio channel per peer (grpc multiplexes calls over it). API thread only."""

    def __init__(self, tls: PeerTls) -> None:
        self._tls = tls
        self._channels: dict[PeerTarget, grpc.aio.Channel] = {}

    def get(self, target: PeerTarget) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            channel = self._channels[target] = aio_channel(target, self._tls)
        return channel
