"""Pickup windows: which NICs have one (a fake clock), what the compiler makes of
them, and that the applier keeps them in the kernel's set across full reloads
with what is left of each."""

from __future__ import annotations

from tests.unit.network.secgroups.fakenft import FakeNft
from tests.unit.network.secgroups.hosts import three_tier
from zsd.network.secgroups.compiler import FROM_TAG, TABLE, TO_TAG, Compiler
from zsd.network.secgroups.hostmodel import HostFirewall, HostNic, membership
from zsd.network.secgroups.nftapply import RulesetApplier
from zsd.network.secgroups.pickup import PICKUP_SECONDS, PICKUP_SET, PickupWindows, element_commands

WEB = HostNic(port="tap-web", mac="52:54:00:00:00:01", ipv4=("10.0.0.1",), groups=("web",))
APP = HostNic(port="tap-app", mac="52:54:00:00:00:02", ipv4=("10.0.0.2",), groups=("app",))
DB = HostNic(port="tap-db", mac="52:54:00:00:00:03", ipv4=("10.0.0.3",), groups=("db",))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def host(*nics: HostNic) -> HostFirewall:
    return HostFirewall(nics=nics, groups=three_tier(), members=membership(nics))


def test_every_port_has_a_window_after_a_start_and_arrivals_later() -> None:
    clock = FakeClock()
    windows = PickupWindows(clock=clock)
    assert windows.update(["a", "b"]) == {"a": 1120.0, "b": 1120.0}
    clock.now += 100
    assert windows.update(["a", "b", "c"]) == {"a": 1120.0, "b": 1120.0, "c": 1220.0}
    clock.now += 20  # a's and b's windows end now
    assert windows.update(["a", "b", "c"]) == {"c": 1220.0}
    assert windows.update(["b", "c"]) == {"c": 1220.0}  # a left
    clock.now += 1
    assert windows.update(["a", "b", "c"]) == {"a": 1241.0, "c": 1220.0}  # a came back: a new window
    clock.now += 100
    assert windows.update(["a", "b", "c"]) == {"a": 1241.0}


def test_nic_chains_skip_the_syn_check_for_marks_in_the_pickup_set() -> None:
    compiler = Compiler()
    compiled = compiler.compile(host(WEB, APP), pickup={"tap-web": 1120.0, "tap-gone": 1120.0})
    web, app = compiled.marks["tap-web"], compiled.marks["tap-app"]
    assert compiled.pickup == {FROM_TAG | web: 1120.0, TO_TAG | web: 1120.0}
    inet = compiled.ruleset.tables[1]
    (pickup,) = [s for s in inet.sets if s.name == PICKUP_SET]
    assert pickup.timeout and pickup.key == ("mark",) and pickup.elements == ()
    for name in ("nic_tap-app_in", "nic_tap-app_out"):
        rules = next(c for c in inet.chains if c.name == name).rules
        not_syn = next(r for r in rules if r[-1] == {"drop": None} and len(r) == 4)
        assert not_syn[2] == {
            "match": {"op": "!=", "left": {"meta": {"key": "mark"}}, "right": f"@{PICKUP_SET}"}
        }
    assert compiler.compile(host(WEB, APP)).pickup == {}
    assert app != web


def test_window_elements_carry_what_is_left_rounded_up() -> None:
    table = {"family": "inet", "table": TABLE}
    wanted = {7: 1120.0, 8: 1000.5, 9: 999.0}
    (cmd,) = element_commands(table, applied={}, wanted=wanted, now=1000.0, full=False)
    assert cmd["add"]["element"]["elem"] == [
        {"elem": {"val": 7, "timeout": 120}},
        {"elem": {"val": 8, "timeout": 1}},  # 9's window is over
    ]
    assert element_commands(table, applied=wanted, wanted=wanted, now=1000.0, full=False) == []
    (again,) = element_commands(table, applied=wanted, wanted=wanted, now=1050.0, full=True)
    assert again["add"]["element"]["elem"] == [{"elem": {"val": 7, "timeout": 70}}]


def test_windows_survive_full_reloads_with_the_time_left() -> None:
    clock = FakeClock()
    nft = FakeNft()
    applier = RulesetApplier(nft, clock=clock)
    windows = PickupWindows(clock=clock)
    compiler = Compiler()

    def apply(*nics: HostNic) -> str:
        compiled = compiler.compile(host(*nics), pickup=windows.update(n.port for n in nics))
        return applier.apply(compiled).mode

    def in_kernel() -> dict[int, int]:
        return nft.timeouts("inet", TABLE, PICKUP_SET)

    assert apply(WEB, APP) == "full"
    marks = applier.applied.marks if applier.applied else {}
    web, app = marks["tap-web"], marks["tap-app"]
    expected = {FROM_TAG | web: 120, TO_TAG | web: 120, FROM_TAG | app: 120, TO_TAG | app: 120}
    assert in_kernel() == expected
    clock.now += 30
    assert apply(WEB, APP) == "unchanged"  # nothing re-added: the kernel counts down
    assert apply(WEB, APP, DB) == "diff"
    db = applier.applied.marks["tap-db"] if applier.applied else 0
    assert nft.transactions[-1][-1]["add"]["element"]["elem"] == [
        {"elem": {"val": FROM_TAG | db, "timeout": 120}},
        {"elem": {"val": TO_TAG | db, "timeout": 120}},
    ]
    clock.now += 50
    assert applier.apply_full(applier.applied).mode == "full"  # type: ignore[arg-type]
    assert in_kernel() == {
        FROM_TAG | web: 40,
        TO_TAG | web: 40,
        FROM_TAG | app: 40,
        TO_TAG | app: 40,
        FROM_TAG | db: 70,
        TO_TAG | db: 70,
    }
    clock.now += PICKUP_SECONDS
    assert apply(WEB, APP, DB) == "unchanged"  # the kernel expired them; nothing to add
