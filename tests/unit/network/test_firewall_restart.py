"""The host firewall across a zsd restart and while it sweeps: the zones the
kernel's ruleset holds are kept, every NIC gets a pickup window, and a sweep reads
the conntrack table without holding up applies, deleting only what the policy
enforced by then does not admit."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from dataclasses import replace
from pathlib import Path

import trio

from tests.unit.network.secgroups.fakeconntrack import FakeConntrack
from tests.unit.network.secgroups.fakenft import FakeNft
from tests.unit.network.secgroups.hosts import tcp_in, three_tier
from zsd.network.firewall import FirewallReconciler
from zsd.network.secgroups.admission import TCP, Flow
from zsd.network.secgroups.compiler import FROM_TAG, TABLE, Compiler
from zsd.network.secgroups.hostmodel import HostFirewall, HostNic, membership
from zsd.network.secgroups.nftapply import RulesetApplier, loaded_zones
from zsd.network.secgroups.pickup import PICKUP_SET
from zsd.network.secgroups.zones import preferred_zone

WEB = HostNic(port="tap-web", mac="52:54:00:00:00:01", ipv4=("10.0.0.1",), groups=("web",), bridge="zbp")
APP = HostNic(port="tap-app", mac="52:54:00:00:00:02", ipv4=("10.0.0.2",), groups=("app",), bridge="zbq")


def host(*nics: HostNic) -> HostFirewall:
    return HostFirewall(nics=nics, groups=three_tier(), members=membership(nics))


def procfs(tmp_path: Path) -> Path:
    (tmp_path / "sys/net/bridge").mkdir(parents=True)
    return tmp_path


def reconciler(tmp_path: Path, nft: FakeNft, table: FakeConntrack) -> FirewallReconciler:
    return FirewallReconciler(
        control=None,  # type: ignore[arg-type]
        host="h1",
        procfs=procfs(tmp_path),
        nft=lambda: nft,
        conntrack=lambda: table,
        clock=lambda: 1000.0,
    )


def test_a_restart_keeps_the_zones_the_kernel_holds(tmp_path: Path) -> None:
    nft = FakeNft()
    # zbp got another zone than its hash before the restart (a collision since gone)
    moved = preferred_zone("zbp") + 1
    RulesetApplier(nft).apply(Compiler(zones={"zbp": moved}).compile(host(WEB, APP)))
    assert loaded_zones(nft) == {"zbp": moved, "zbq": preferred_zone("zbq")}
    assert loaded_zones(FakeNft()) == {}

    restarted = reconciler(tmp_path, nft, FakeConntrack())
    restarted._apply(host(WEB, APP))
    applier = restarted._applier
    assert applier is not None and applier.applied is not None
    assert applier.applied.zones == {"zbp": moved, "zbq": preferred_zone("zbq")}
    # every NIC is new to a restarted zsd: all have a pickup window
    in_window = nft.timeouts("inet", TABLE, PICKUP_SET)
    assert FROM_TAG | applier.applied.marks["tap-web"] in in_window and len(in_window) == 4


class GatedConntrack(FakeConntrack):
    """Reads wait for ``gate`` once ``reading`` says they started."""

    def __init__(self, flows: Collection[Flow]) -> None:
        super().__init__(flows)
        self.reading = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def flows(self, zones: Collection[int]) -> Iterator[Flow]:
        self.reading.set()
        assert self.gate.wait(10)
        yield from super().flows(zones)

    def flows_of(self, zone: int, address: str) -> Iterator[Flow]:
        self.reading.set()
        assert self.gate.wait(10)
        yield from super().flows_of(zone, address)


async def test_a_sweep_reads_while_applies_go_on_and_spares_what_they_admit(tmp_path: Path) -> None:
    nft = FakeNft()
    zone = preferred_zone("zbp")
    http = Flow(zone=zone, src="198.51.100.1", dst="10.0.0.1", proto=TCP, sport=4000, dport=80)
    https = replace(http, dport=443)
    table = GatedConntrack([http, https])
    fw = reconciler(tmp_path, nft, table)
    open_ = host(WEB)
    await fw.enforce(open_)
    first = await fw.sweep()
    assert first is not None and first.deleted == 0

    groups = dict(open_.groups)
    groups["web"] = groups["web"].delete_rule(0).delete_rule(0)  # neither 80 nor 443
    closed = replace(open_, groups=groups)
    reopened_groups = dict(groups)
    reopened_groups["web"] = groups["web"].add_rule(tcp_in(443), known_groups=set(groups))
    reopened = replace(open_, groups=reopened_groups)

    await fw.enforce(closed)
    table.reading.clear()
    table.gate.clear()
    async with trio.open_nursery() as nursery:
        reports = []

        async def sweep() -> None:
            reports.append(await fw.sweep())

        nursery.start_soon(sweep)
        await trio.to_thread.run_sync(table.reading.wait)
        with trio.fail_after(5):
            await fw.enforce(reopened)  # not held up by the sweep reading
        table.gate.set()
    (report,) = reports
    assert report is not None and (report.deleted, report.spared) == (1, 1)
    assert table.entries == [https]
