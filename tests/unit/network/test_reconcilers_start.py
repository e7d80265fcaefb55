"""The host's network reconcilers (links, DHCP, firewall) act only once the state copy has caught up with the
leader: a restarted member's copy is empty until then, and converging to it would
remove every bridge (with the taps of running VMs) and stop every dnsmasq."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import trio
import trio.testing

from zsd.cluster.control import ClusterControl
from zsd.cluster.store.cache import StateCache
from zsd.network.dhcp import DhcpManager
from zsd.network.dhcp.spec import DhcpScope
from zsd.network.dhcpsync import DhcpReconciler
from zsd.network.fabric import HostFabric
from zsd.network.firewall import FirewallReconciler
from zsd.network.links import Links
from zsd.network.reconciler import FabricReconciler
from zsd.network.secgroups.nftapply import NftRunner


class _Replica:
    def __init__(self) -> None:
        self.cache = StateCache()
        self.synced = trio.Event()

    async def wait_changed(self) -> None:
        await trio.sleep_forever()


class _Control:
    """What the reconcilers read of ClusterControl: the state copy and the members."""

    def __init__(self) -> None:
        self.replica = _Replica()

    def host_views(self) -> tuple[Any, ...]:
        return ()


class _Links:
    def __init__(self) -> None:
        self.applied: list[HostFabric] = []

    def apply(self, fabric: HostFabric) -> list[str]:
        self.applied.append(fabric)
        return []


class _Manager:
    def __init__(self) -> None:
        self.applied: list[Sequence[DhcpScope]] = []

    async def apply(self, scopes: Sequence[DhcpScope]) -> None:
        self.applied.append(scopes)


def test_the_fakes_record_what_they_are_given() -> None:
    links, control = _Links(), _Control()
    assert links.apply(HostFabric()) == [] and links.applied == [HostFabric()]
    assert control.host_views() == () and not control.replica.synced.is_set()


async def test_links_are_left_alone_until_the_state_copy_is_synced() -> None:
    control, links = _Control(), _Links()
    reconciler = FabricReconciler(
        control=cast(ClusterControl, control), host="h1", address="192.0.2.1", links=cast(Links, links)
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reconciler.run)
        with trio.move_on_after(0.5) as waited:
            await reconciler.wait_round()  # (the apply runs in a thread)
        assert waited.cancelled_caught and links.applied == []
        control.replica.synced.set()
        with trio.fail_after(5):
            await reconciler.wait_round()
        assert links.applied == [HostFabric()]
        nursery.cancel_scope.cancel()


async def test_dhcp_is_left_alone_until_the_state_copy_is_synced() -> None:
    control, manager = _Control(), _Manager()
    reconciler = DhcpReconciler(
        control=cast(ClusterControl, control), host="h1", manager=cast(DhcpManager, manager)
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reconciler.run)
        await trio.testing.wait_all_tasks_blocked()
        assert manager.applied == []
        control.replica.synced.set()
        await trio.testing.wait_all_tasks_blocked()
        assert manager.applied == [[]]
        nursery.cancel_scope.cancel()


async def test_the_firewall_is_left_alone_until_the_state_copy_is_synced() -> None:
    control, opened = _Control(), []

    def nft() -> NftRunner:
        opened.append("nft")
        raise AssertionError("the kernel's ruleset was touched before the state copy was synced")

    reconciler = FirewallReconciler(control=cast(ClusterControl, control), host="h1", nft=nft)
    rounds = []
    real_round = reconciler.round

    async def counted() -> None:
        await real_round()  # (its apply runs in a thread)
        rounds.append(1)

    reconciler.round = counted  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reconciler.run)
        await trio.sleep(0.3)
        assert rounds == []
        control.replica.synced.set()
        with trio.fail_after(5):
            while not rounds:
                await trio.sleep(0.01)
        # An empty state: nothing to guard, so the host's netfilter stays untouched.
        assert rounds == [1] and opened == [] and reconciler.problem == ""
        nursery.cancel_scope.cancel()
