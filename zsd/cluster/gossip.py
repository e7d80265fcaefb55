"""The daemon's gossip subsystem: SWIM membership of this host on its gossip port.

:class:`~zsd.cluster.swim.udp.UdpNode` runs the protocol; :class:`Gossip` adds what
a daemon needs around it:

- seeds that arrive late: they come from the cluster state, which fills in after
  the daemon started, so while this host knows no other live member it keeps
  asking for them;
- an immutable :class:`GossipView` replaced wholesale on every change, which the
  API thread reads without locks;
- a short graceful leave on shutdown, so peers record LEFT (zsd stopped) rather
  than DEAD (host failed).

Membership is not authority: see :mod:`zsd.cluster.liveness` for how gossip and
sanlock are combined before anyone is treated as dead.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import trio

from zsd.cluster.swim.config import SwimConfig
from zsd.cluster.swim.member import Address, HostMeta, Member, MemberState
from zsd.cluster.swim.transport import MemberEvent
from zsd.cluster.swim.udp import UdpNode
from zsd.errors import FailedPrecondition, InvalidArgument, ZsdError

log = logging.getLogger(__name__)

Seeds = Callable[[], Sequence[Address]]
"""Gossip addresses of other cluster members, as the cluster state knows them now."""

MAX_LEAVE_TIMEOUT = 1.0
"""Shutdown waits at most this long for our departure to be gossiped: the rest of
the daemon's stop (API grace, reconcilers) shares systemd's stop budget."""


@dataclass(frozen=True, kw_only=True)
class GossipMember:
    """One member as this host's gossip sees it."""

    address: Address
    state: MemberState
    incarnation: int
    meta: HostMeta


@dataclass(frozen=True, kw_only=True)
class GossipView:
    """Everything gossip knows at one moment, this host included. Never mutated:
    a change produces a new view, so a reference is a consistent snapshot."""

    local: str
    """This host's member name."""
    members: Mapping[str, GossipMember] = field(default_factory=lambda: MappingProxyType({}))

    def states(self) -> Mapping[str, str]:
        """Member name -> "alive" / "suspect" / "dead" / "left" (the shape
        :data:`zsd.cluster.control.GossipStates` wants)."""
        return {name: member.state.name.lower() for name, member in self.members.items()}


def _view(local: str, members: Iterable[Member]) -> GossipView:
    return GossipView(
        local=local,
        members=MappingProxyType(
            {
                m.name: GossipMember(address=m.address, state=m.state, incarnation=m.incarnation, meta=m.meta)
                for m in members
            }
        ),
    )


@dataclass(eq=False)
class _Running:
    """One UdpNode instance and how to stop it."""

    udp: UdpNode
    seeds: frozenset[Address]
    # Shielded: cancelling Gossip.run must leave the node running until it said goodbye.
    scope: trio.CancelScope = field(default_factory=lambda: trio.CancelScope(shield=True))
    done: trio.Event = field(default_factory=trio.Event)


class Gossip:
    """This host's gossip member. Start with ``await nursery.start(gossip.run)``;
    stop by cancelling (a graceful leave is attempted first).

    All methods except :meth:`view` must be called from the trio thread.
    """

    def __init__(
        self,
        *,
        name: str,
        bind_host: str,
        port: int,
        meta: HostMeta,
        seeds: Seeds,
        swim_config: SwimConfig | None = None,
        rejoin_interval: float = 5.0,
        leave_timeout: float = MAX_LEAVE_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        """``bind_host`` is also the address peers are told to use, so it must be a
        concrete IP of this host. ``port`` 0 picks a free one (tests). A
        ``leave_timeout`` of 0 skips the goodbye: peers then see a failure."""
        try:
            host_ip = ipaddress.ip_address(bind_host)
        except ValueError:
            raise InvalidArgument(f"{bind_host!r} is not an IP address", field="bind_host") from None
        if host_ip.is_unspecified:
            raise InvalidArgument(
                f"{bind_host} cannot be advertised to peers; give this host's own address",
                field="bind_host",
            )
        if not 0 <= port <= 65535:
            raise InvalidArgument(f"port {port} is not within 0..65535", field="port")
        if rejoin_interval <= 0:
            raise InvalidArgument("must be > 0", field="rejoin_interval")
        if not 0 <= leave_timeout <= MAX_LEAVE_TIMEOUT:
            raise InvalidArgument(f"must be within 0..{MAX_LEAVE_TIMEOUT} s", field="leave_timeout")
        self._name = name
        self._bind = Address(str(host_ip), port)
        self._meta = meta
        self._seeds = seeds
        self._config = swim_config or SwimConfig.lan()
        self._rejoin_interval = rejoin_interval
        self._leave_timeout = leave_timeout
        self._rng = rng or random.Random()
        self._running: _Running | None = None
        self._seeds_failing = False
        self._view = GossipView(local=name)
        self._changed = trio.Event()
        self._dirty = trio.Event()

    @property
    def name(self) -> str:
        return self._name

    @property
    def address(self) -> Address:
        """Where this member listens (the bound port if 0 was asked for)."""
        if self._bind.port == 0:
            raise FailedPrecondition("gossip not started", reason="SWIM_NOT_STARTED")
        return self._bind

    def view(self) -> GossipView:
        """The current snapshot; safe from any thread."""
        return self._view

    async def wait_changed(self, seen: GossipView) -> GossipView:
        """The first view that is not ``seen`` (at once if that is already the case)."""
        while self._view is seen:
            await self._changed.wait()
        return self._view

    def update_meta(self, meta: HostMeta) -> None:
        """Publish new metadata (e.g. a new believed leader) to every member."""
        self._meta = meta
        running = self._running
        if running is None or running.scope.cancel_called:
            return  # used when the (next) node starts
        try:
            running.udp.update_meta(meta)
        except FailedPrecondition:
            return  # node starting: _start_node re-applies the latest meta
        self._dirty.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Gossips until cancelled; ``started`` once the sockets are bound."""
        async with trio.open_nursery() as nursery:
            try:
                await self._start_node(nursery, self._ask_seeds(), known=())
                log.info("gossip member %s on %s", self._name, self._bind)
                nursery.start_soon(self._publish_changes)
                task_status.started()
                await self._rejoin_while_alone(nursery)
            finally:
                await self._stop_node()

    # -- node lifecycle -------------------------------------------------------------

    async def _start_node(
        self, nursery: trio.Nursery, seeds: Sequence[Address], known: Sequence[Member]
    ) -> None:
        meta = self._meta
        udp = UdpNode(
            config=self._config,
            name=self._name,
            meta=meta,
            bind=self._bind,
            seeds=seeds,
            known=known,
            rng=self._rng,
            on_event=self._on_event,
        )
        running = _Running(udp=udp, seeds=frozenset(seeds))
        # Recorded before starting, so a cancellation that lands during the start
        # still finds (and cancels) the shielded node.
        self._running = running
        await nursery.start(self._run_node, running)
        self._bind = udp.address  # a restart must come back on the same port
        if self._meta != meta:
            udp.update_meta(self._meta)  # changed while the node was starting
        self._publish()

    async def _run_node(self, running: _Running, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with running.scope:
                await running.udp.run(task_status=task_status)
        finally:
            running.done.set()

    async def _rejoin_while_alone(self, nursery: trio.Nursery) -> None:
        """Once alone, the core retries the seeds it joined with by itself. It has no
        way to take new ones, so when the cluster state names other seeds, the node is
        restarted on the same address with them. That loses nothing: alone, it knows
        no live member, and the table it had is handed over."""
        while True:
            await trio.sleep(self._rejoin_interval)
            # Also catches changes that raise no event (incarnation bumps, refutations).
            self._publish()
            running = self._running
            assert running is not None
            if running.udp.node.live_count > 1:
                continue
            seeds = self._ask_seeds()
            if seeds and frozenset(seeds) != running.seeds:
                log.info(
                    "gossip member %s knows no live member; joining %s",
                    self._name,
                    ", ".join(map(str, seeds)),
                )
                known = [m for m in running.udp.members() if m.name != self._name]
                running.scope.cancel()
                await running.done.wait()
                await self._start_node(nursery, seeds, known)

    def _ask_seeds(self) -> tuple[Address, ...]:
        try:
            seeds = self._seeds()
        except ZsdError as e:
            if not self._seeds_failing:  # once per streak, not every rejoin_interval
                log.warning("no gossip seeds from the cluster state: %s", e)
            self._seeds_failing = True
            return ()
        self._seeds_failing = False
        return tuple(dict.fromkeys(s for s in seeds if s != self._bind))

    async def _stop_node(self) -> None:
        running = self._running
        if running is None:
            return
        try:
            if self._leave_timeout > 0 and self._can_say_goodbye(running):
                with trio.move_on_after(self._leave_timeout, shield=True):
                    await running.udp.leave(self._leave_timeout)
        finally:
            running.scope.cancel()

    @staticmethod
    def _can_say_goodbye(running: _Running) -> bool:
        if running.done.is_set() or running.scope.cancel_called:
            return False  # its sockets are closed or closing
        try:
            # Alone, nobody would pass the news on: waiting for it to spread is futile.
            return running.udp.node.live_count > 1
        except FailedPrecondition:
            return False  # never started: nobody knows us

    # -- the view -------------------------------------------------------------------

    def _on_event(self, event: MemberEvent) -> None:
        # One push-pull can carry a thousand joins: rebuild once per batch, not per event.
        self._dirty.set()

    async def _publish_changes(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            self._publish()

    def _publish(self) -> None:
        running = self._running
        if running is None:
            return
        try:
            members = running.udp.members()
        except FailedPrecondition:
            return  # restarting: keep the last view until the new node is up
        view = _view(self._name, members)
        if view != self._view:
            self._view = view
            self._changed.set()
            self._changed = trio.Event()
