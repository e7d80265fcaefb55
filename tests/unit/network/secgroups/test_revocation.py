"""Revoking access: which NICs a change concerns, and a sweep deletes exactly the
connections the new policy no longer admits, in zsd's zones only."""

from __future__ import annotations

from dataclasses import replace

from tests.unit.network.secgroups.fakeconntrack import FakeConntrack
from tests.unit.network.secgroups.hosts import tcp_in, three_tier
from zsd.network.secgroups.admission import TCP, Flow
from zsd.network.secgroups.hostmodel import GroupMembers, HostFirewall, HostNic, membership
from zsd.network.secgroups.revocation import Reads, Revoker, changed_ports, plan_reads, sweep
from zsd.network.secgroups.rules import Action

ZONES = {"zb1": 16500, "zb2": 16501}
WEB = HostNic(port="tap-web", mac="52:54:00:00:00:01", ipv4=("10.0.0.1",), groups=("web",), bridge="zb1")
APP = HostNic(port="tap-app", mac="52:54:00:00:00:02", ipv4=("10.0.0.2",), groups=("app",), bridge="zb1")
DB = HostNic(port="tap-db", mac="52:54:00:00:00:03", ipv4=("10.0.0.3",), groups=("db",), bridge="zb1")
# another port group with web's address
TWIN = HostNic(port="tap-twin", mac="52:54:00:00:00:04", ipv4=("10.0.0.1",), groups=("web",), bridge="zb2")


def host(*nics: HostNic, others: tuple[HostNic, ...] = ()) -> HostFirewall:
    """``others``: NICs on other hosts (members only)."""
    return HostFirewall(nics=nics, groups=three_tier(), members=membership((*nics, *others)))


def tcp(src: str, dst: str, dport: int, *, zone: int = 16500, sport: int = 40000) -> Flow:
    return Flow(zone=zone, src=src, dst=dst, proto=TCP, sport=sport, dport=dport)


def test_the_first_sweep_concerns_every_nic() -> None:
    assert changed_ports(None, host(WEB, APP)) == {"tap-web", "tap-app"}


def test_nothing_changed_concerns_no_nic() -> None:
    before = host(WEB, APP, DB)
    same = host(WEB, APP, DB)  # equal values, new objects (as decoded from records)
    assert changed_ports(before, same) == frozenset()


def test_a_rule_change_concerns_the_nics_using_the_group() -> None:
    before = host(WEB, APP, DB)
    groups = dict(before.groups)
    groups["web"] = groups["web"].delete_rule(0)
    assert changed_ports(before, replace(before, groups=groups)) == {"tap-web"}


def test_a_nic_change_concerns_that_nic() -> None:
    before = host(WEB, APP, DB)
    detached = host(replace(WEB, groups=()), APP, DB)
    assert changed_ports(before, detached) >= {"tap-web"}
    assert "tap-db" not in changed_ports(before, detached)
    stricter = host(WEB, APP, replace(DB, ingress_default=Action.DENY, egress_default=Action.DENY))
    assert changed_ports(before, stricter) == {"tap-db"}


def test_a_member_leaving_a_remote_group_concerns_the_nics_whose_rules_point_at_it() -> None:
    remote_web = HostNic(port="tap-far", mac="52:54:00:00:00:09", ipv4=("10.0.9.9",), groups=("web",))
    before = host(APP, DB, others=(remote_web,))
    after = host(APP, DB, others=(replace(remote_web, groups=()),))
    assert changed_ports(before, after) == {"tap-app"}  # app's rule takes 8080 from web


def test_a_sweep_deletes_what_is_no_longer_admitted_and_nothing_else() -> None:
    before = host(WEB, APP, DB, TWIN)
    groups = dict(before.groups)
    groups["web"] = groups["web"].delete_rule(0)  # tcp 80 from anywhere
    after = replace(before, groups=groups)
    revoked = tcp("198.51.100.1", "10.0.0.1", 80)
    kept = [
        tcp("198.51.100.1", "10.0.0.1", 443),  # still allowed
        tcp("10.0.0.1", "10.0.0.2", 8080),  # web -> app: egress, app's ingress unchanged
        tcp("198.51.100.1", "10.0.0.3", 80),  # db's, unchanged (and never allowed)
        tcp("198.51.100.1", "10.0.0.1", 80, zone=0),  # not a zsd zone
        tcp("198.51.100.1", "10.0.0.1", 80, zone=16999),  # a zone of no NIC here
        tcp("198.51.100.1", "10.0.0.77", 80),  # an address of no NIC
    ]
    twin = tcp("198.51.100.1", "10.0.0.1", 80, zone=16501)  # the same tuple in twin's zone: twin uses web too
    table = FakeConntrack([revoked, *kept, twin])
    report = sweep(table, firewall=after, zones=ZONES, ports=changed_ports(before, after))
    assert table.entries == kept
    assert (report.nics, report.deleted) == (2, 2)
    assert table.dumped_zones == [16500, 16501]  # the zones of the NICs concerned only


def test_a_sweep_with_no_nic_concerned_reads_nothing() -> None:
    table = FakeConntrack([tcp("198.51.100.1", "10.0.0.1", 80)])
    report = sweep(table, firewall=host(WEB), zones=ZONES, ports=())
    assert (report.nics, report.seen, report.deleted) == (0, 0, 0)
    assert table.dumped_zones == []


def test_the_revoker_judges_changes_since_its_last_sweep() -> None:
    revoker = Revoker()
    before = host(WEB, APP)
    table = FakeConntrack([tcp("198.51.100.1", "10.0.0.1", 80), tcp("198.51.100.1", "10.0.0.2", 8080)])
    first = revoker.after_apply(table, firewall=before, zones=ZONES)
    assert (first.nics, first.deleted) == (2, 1)  # app never took 8080 from outside: ended at start
    assert revoker.after_apply(table, firewall=before, zones=ZONES).nics == 0
    closed = host(replace(WEB, groups=()), APP)
    assert revoker.after_apply(table, firewall=closed, zones=ZONES).deleted == 1
    assert table.entries == []


def test_members_given_without_membership_helper_count_too() -> None:
    """Members of a remote group on another host: leaving it ends their connections."""
    before = replace(host(APP), members={"web": GroupMembers(ipv4=frozenset({"10.0.9.9"}))})
    after = replace(before, members={})
    table = FakeConntrack([tcp("10.0.9.9", "10.0.0.2", 8080), tcp("10.0.9.9", "10.0.0.2", 8080, sport=1)])
    report = sweep(table, firewall=after, zones=ZONES, ports=changed_ports(before, after))
    assert report.deleted == 2 and table.entries == []
    assert tcp_in(8080, remote_group="web") in after.groups["app"].specs


def test_few_changed_nics_in_a_big_table_are_read_by_address_many_by_zone() -> None:
    both = replace(WEB, ipv6=("fd00::1",))
    few = plan_reads([both, DB], ZONES, table_size=10_000)
    assert few == Reads(addresses=((16500, "10.0.0.1"), (16500, "10.0.0.3"), (16500, "fd00::1")))
    assert plan_reads([both, DB], ZONES, table_size=50) == Reads(zones=(16500,))
    many = [replace(WEB, port=f"p{i}", ipv4=(f"10.1.{i >> 8}.{i & 255}",)) for i in range(300)]
    assert plan_reads([*many, TWIN], ZONES, table_size=10_000) == Reads(zones=(16500, 16501))


def test_a_sweep_by_address_deletes_what_a_sweep_by_zone_deletes() -> None:
    before = host(WEB, APP, DB, TWIN)
    groups = dict(before.groups)
    groups["web"] = groups["web"].delete_rule(0)  # tcp 80 from anywhere
    after = replace(before, groups=groups)
    revoked = [tcp("198.51.100.1", "10.0.0.1", 80), tcp("198.51.100.1", "10.0.0.1", 80, zone=16501)]
    kept = [tcp("198.51.100.1", "10.0.0.1", 443), tcp("10.0.0.1", "10.0.0.2", 8080)]
    filler = [tcp("198.51.100.9", "10.0.0.3", 22, sport=s) for s in range(2000)]  # db's: not read
    table = FakeConntrack([*revoked, *kept, *filler])
    report = sweep(table, firewall=after, zones=ZONES, ports=changed_ports(before, after))
    assert report.filtered and report.deleted == 2 and report.seen == 4  # web -> app once, not twice
    assert table.entries == [*kept, *filler]
    assert table.dumped_zones == [] and table.dumped_addresses == [(16500, "10.0.0.1"), (16501, "10.0.0.1")]


def test_a_sweep_spares_what_a_policy_applied_while_it_read_admits_again() -> None:
    revoker = Revoker()
    open_ = host(WEB)
    table = FakeConntrack([tcp("198.51.100.1", "10.0.0.1", 80), tcp("198.51.100.1", "10.0.0.1", 443)])
    revoker.after_apply(table, firewall=open_, zones=ZONES)
    groups = dict(open_.groups)
    groups["web"] = groups["web"].delete_rule(0).delete_rule(0)  # neither 80 nor 443
    closed = replace(open_, groups=groups)
    found = revoker.judge(table, firewall=closed, zones=ZONES)
    assert len(found.doomed) == 2
    # meanwhile 443 came back (80 did not): only 80's connection ends
    reopened_groups = dict(groups)
    reopened_groups["web"] = groups["web"].add_rule(tcp_in(443), known_groups=set(groups))
    reopened = replace(open_, groups=reopened_groups)
    report = revoker.finish(table, found, latest=reopened, zones=ZONES)
    assert (report.deleted, report.spared) == (1, 1)
    assert table.entries == [tcp("198.51.100.1", "10.0.0.1", 443)]
    # the next sweep judges what changed after the judged policy: web again
    assert revoker.judge(table, firewall=reopened, zones=ZONES).nics == 1
