"""Run a :class:`~zsd.cluster.swim.node.SwimNode` on real sockets under trio.

Packets are UDP datagrams. Streams (push-pull, fallback pings) are one-shot TCP
connections to the same port number: connect, write one length-prefixed frame,
close. TCP rather than fragmenting over UDP because a push-pull of a 1000-member
table is ~60 KB: reassembly, retransmission and congestion control would just
rebuild TCP, badly. One connection per message keeps the core's view simple
(a reliable datagram with no reply channel) and costs little at one push-pull
per tens of seconds.

The core is only ever touched from trio tasks in this process, so no locking:
one loop task waits for input or the core's next deadline, whichever is first.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import random
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from zsd.cluster.swim.config import SwimConfig
from zsd.cluster.swim.member import Address, HostMeta, Member
from zsd.cluster.swim.node import SwimNode
from zsd.cluster.swim.transport import MemberEvent, Output, dispatch
from zsd.errors import FailedPrecondition, Unavailable

log = logging.getLogger(__name__)

_FRAME_LEN = struct.Struct("!I")
MAX_STREAM_FRAME = 16 * 1024 * 1024
_MAX_DATAGRAM = 65_535
_INBOX_SIZE = 4096  # datagrams beyond this are dropped, as a full kernel buffer would


@dataclass(frozen=True, slots=True)
class _Inbound:
    stream: bool
    source: Address
    data: bytes


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


class _SocketTransport:
    """The :class:`~zsd.cluster.swim.transport.Transport` over our two sockets."""

    def __init__(self, udp: socket.socket, nursery: trio.Nursery, stream_timeout: float) -> None:
        self._udp = udp
        self._nursery = nursery
        self._stream_timeout = stream_timeout

    def send_packet(self, to: Address, payload: bytes) -> None:
        try:
            self._udp.sendto(payload, (to.host, to.port))
        except OSError as e:  # full buffer, unreachable network: UDP may drop
            log.debug("dropping packet to %s: %s", to, e)

    def send_stream(self, to: Address, payload: bytes) -> None:
        self._nursery.start_soon(self._send_stream, to, payload)

    async def _send_stream(self, to: Address, payload: bytes) -> None:
        with trio.move_on_after(self._stream_timeout):
            try:
                stream = await trio.open_tcp_stream(to.host, to.port)
                async with stream:
                    await stream.send_all(_FRAME_LEN.pack(len(payload)) + payload)
            except (OSError, trio.BrokenResourceError) as e:
                # A peer that restarts resets the connection under us: push-pull is
                # best effort, the next round tries again. Never let it kill the node.
                log.debug("stream to %s failed: %s", to, e)


class UdpNode:
    """One gossip member on ``bind`` (port 0 picks a free port usable for both UDP and TCP).

    Start it with ``await nursery.start(node.run)``: it returns once the sockets are
    bound and the join is under way. Stop it by cancelling; call :meth:`leave`
    first for a graceful departure.
    """

    def __init__(
        self,
        *,
        config: SwimConfig,
        name: str,
        meta: HostMeta,
        bind: Address,
        seeds: Sequence[Address] = (),
        known: Sequence[Member] = (),
        rng: random.Random | None = None,
        on_event: Callable[[MemberEvent], None] | None = None,
    ) -> None:
        self._config = config
        self._name = name
        self._meta = meta
        self._bind = bind
        self._seeds = tuple(seeds)
        self._known = tuple(known)
        self._rng = rng or random.Random()
        self._on_event = on_event
        self._node: SwimNode | None = None
        self._transport: _SocketTransport | None = None
        self._wake: trio.MemorySendChannel[_Inbound | None] | None = None

    @property
    def node(self) -> SwimNode:
        """The protocol core (read its members, stats...); only once started."""
        if self._node is None:
            raise FailedPrecondition("gossip node not started", reason="SWIM_NOT_STARTED")
        return self._node

    @property
    def address(self) -> Address:
        return self.node.address

    def members(self) -> list[Member]:
        return self.node.members()

    def update_meta(self, meta: HostMeta) -> None:
        self._apply(self.node.update_meta(meta, trio.current_time()))
        self._poke()

    async def leave(self, timeout: float) -> None:
        """Announce our departure and wait (at most ``timeout``) until it was gossiped."""
        node = self.node
        self._apply(node.leave(trio.current_time()))
        self._poke()
        with trio.move_on_after(timeout):
            while not node.leave_propagated:
                await trio.sleep(self._config.gossip_interval)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        udp, tcp = self._bind_sockets()
        with udp, tcp:
            host, port = udp.getsockname()[:2]
            self._node = node = SwimNode(
                config=self._config,
                name=self._name,
                address=Address(host, port),
                meta=self._meta,
                rng=self._rng,
                now=trio.current_time(),
                known=self._known,
            )
            send, receive = trio.open_memory_channel[_Inbound | None](_INBOX_SIZE)
            self._wake = send
            async with trio.open_nursery() as nursery:
                self._transport = _SocketTransport(udp, nursery, self._config.stream_timeout)
                # trio wraps the same socket objects: the transport sends on ``udp``
                # synchronously while the receiver task awaits on it.
                nursery.start_soon(self._receive_packets, trio.socket.from_stdlib_socket(udp), send)
                listener = trio.SocketListener(trio.socket.from_stdlib_socket(tcp))
                nursery.start_soon(self._accept_streams, listener, send)
                if self._seeds:
                    self._apply(node.join(self._seeds, trio.current_time()))
                task_status.started()
                await self._loop(node, receive)

    def _bind_sockets(self) -> tuple[socket.socket, socket.socket]:
        family = _family(self._bind.host)
        for _ in range(20):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                udp.setblocking(False)
                udp.bind((self._bind.host, self._bind.port))
                port = udp.getsockname()[1]
                # A restarted member must get its address back despite TIME_WAIT.
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.setblocking(False)
                tcp.bind((self._bind.host, port))
                tcp.listen(128)
                return udp, tcp
            except OSError as e:
                udp.close()
                tcp.close()
                # With port 0 the UDP port may be taken for TCP: pick another.
                if e.errno != errno.EADDRINUSE or self._bind.port != 0:
                    raise Unavailable(f"cannot bind gossip port {self._bind}: {e}", reason="SWIM_BIND") from e
        raise Unavailable(f"no port free for both UDP and TCP on {self._bind.host}", reason="SWIM_BIND")

    async def _loop(self, node: SwimNode, inbox: trio.MemoryReceiveChannel[_Inbound | None]) -> None:
        while True:
            with trio.move_on_at(node.next_deadline()):
                item = await inbox.receive()
                now = trio.current_time()
                if item is not None:
                    handle = node.handle_stream if item.stream else node.handle_packet
                    self._apply(handle(item.source, item.data, now))
            now = trio.current_time()
            if now >= node.next_deadline():
                self._apply(node.tick(now))

    def _apply(self, outputs: list[Output]) -> None:
        assert self._transport is not None
        events = dispatch(outputs, self._transport)
        if self._on_event is not None:
            for event in events:
                self._on_event(event)

    def _poke(self) -> None:
        """Wake the loop after a call from another task: the next deadline may have moved."""
        if self._wake is not None:
            with contextlib.suppress(trio.WouldBlock):
                self._wake.send_nowait(None)

    async def _receive_packets(
        self, sock: trio.socket.SocketType, inbox: trio.MemorySendChannel[_Inbound | None]
    ) -> None:
        with sock:
            while True:
                data, peer = await sock.recvfrom(_MAX_DATAGRAM)
                try:
                    inbox.send_nowait(_Inbound(stream=False, source=Address(peer[0], peer[1]), data=data))
                except trio.WouldBlock:
                    log.debug("gossip inbox full, dropping a packet")

    async def _accept_streams(
        self, listener: trio.SocketListener, inbox: trio.MemorySendChannel[_Inbound | None]
    ) -> None:
        async with listener, trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._read_stream, stream, inbox)

    async def _read_stream(
        self, stream: trio.SocketStream, inbox: trio.MemorySendChannel[_Inbound | None]
    ) -> None:
        async with stream:
            try:
                peer = stream.socket.getpeername()
            except OSError:
                return  # already gone
            with trio.move_on_after(self._config.stream_timeout):
                try:
                    header = await _receive_exactly(stream, _FRAME_LEN.size)
                    (length,) = _FRAME_LEN.unpack(header)
                    if length > MAX_STREAM_FRAME:
                        log.warning("gossip stream frame of %d bytes from %s refused", length, peer)
                        return
                    data = await _receive_exactly(stream, length)
                except (OSError, trio.BrokenResourceError, EOFError) as e:
                    log.debug("gossip stream from %s failed: %s", peer, e)
                    return
                await inbox.send(_Inbound(stream=True, source=Address(peer[0], peer[1]), data=data))


async def _receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < size:
        chunk = await stream.receive_some(size - len(buffer))
        if not chunk:
            raise EOFError(f"stream closed after {len(buffer)} of {size} bytes")
        buffer += chunk
    return bytes(buffer)
