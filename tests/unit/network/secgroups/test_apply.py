"""Applying rulesets through a strict fake of libnftables: a diff leads to the same
state as a full reload, a failed apply changes nothing (and the applier still
knows the old ruleset), counters survive reloads and renumbering."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from tests.unit.network.secgroups.fakenft import FakeNft
from tests.unit.network.secgroups.hosts import synthetic, tcp_in, three_tier
from zsd.errors import FailedPrecondition, Internal, Unsupported
from zsd.network.secgroups.compiler import TABLE, Compiler
from zsd.network.secgroups.hostmodel import (
    CompiledRuleset,
    DefaultRef,
    HostFirewall,
    HostNic,
    RuleRef,
    membership,
)
from zsd.network.secgroups.nftapply import RulesetApplier, translate_nft_error
from zsd.network.secgroups.nftobjects import full_transaction
from zsd.network.secgroups.rules import Action, Direction

NICS = (
    HostNic(port="tap-web", mac="52:54:00:00:00:01", ipv4=("10.0.0.1",), groups=("web", "ops")),
    HostNic(port="tap-app", mac="52:54:00:00:00:02", ipv4=("10.0.0.2",), groups=("app", "ops")),
    HostNic(port="tap-db", mac="52:54:00:00:00:03", ipv4=("10.0.0.3",), groups=("db", "ops")),
)


def desired(nics: tuple[HostNic, ...] = NICS) -> HostFirewall:
    return HostFirewall(nics=nics, groups=three_tier(), members=membership(nics))


def loaded(fw: HostFirewall, marks_from: CompiledRuleset | None) -> FakeNft:
    """A fake with ``fw`` loaded whole (NICs keep the marks they have in ``marks_from``)."""
    nft = FakeNft()
    compiled = Compiler(previous=marks_from).compile(fw)
    assert nft.json_cmd({"nftables": full_transaction(compiled.ruleset)})[0] == 0
    return nft


def mutate(rng: random.Random, fw: HostFirewall) -> HostFirewall:
    groups = dict(fw.groups)
    nics = list(fw.nics)
    known = set(groups)
    name = rng.choice(sorted(groups))
    g = groups[name]
    choice = rng.randrange(7)
    if choice == 0:
        groups[name] = g.add_rule(tcp_in(rng.randint(1, 9000)), known_groups=known)
    elif choice == 1 and g.rules:
        groups[name] = g.delete_rule(rng.randrange(len(g.rules)))
    elif choice == 2:
        remote = rng.choice(sorted(known))
        groups[name] = g.insert_rule(0, tcp_in(rng.randint(1, 9000), remote_group=remote), known_groups=known)
    elif choice == 3:
        groups[name] = g.with_allow_members(not g.allow_members)
    elif choice == 4 and len(nics) > 1:
        nics.pop(rng.randrange(len(nics)))
    elif choice == 5:
        n = rng.randint(10, 250)
        nics.append(
            HostNic(
                port=f"tap{n}",
                mac=f"52:54:00:00:01:{n:02x}",
                ipv4=(f"10.0.1.{n}",),
                groups=tuple(rng.sample(sorted(known), rng.randint(0, 3))),
                ingress_default=rng.choice(list(Action)),
            )
        )
        nics = list({x.port: x for x in nics}.values())
    else:
        i = rng.randrange(len(nics))
        nics[i] = replace(nics[i], groups=tuple(reversed(nics[i].groups)), ipv4=(f"10.0.2.{i}",))
    return HostFirewall(nics=tuple(nics), groups=groups, members=membership(nics))


@pytest.mark.parametrize("seed", range(10))
def test_diffs_reach_the_state_a_full_reload_would(seed: int) -> None:
    rng = random.Random(seed)
    nft = FakeNft()
    applier = RulesetApplier(nft)
    compiler = Compiler()
    fw = desired()
    assert applier.apply(compiler.compile(fw)).mode == "full"
    for _ in range(25):
        fw = mutate(rng, fw)
        result = applier.apply(compiler.compile(fw))
        assert result.mode in ("diff", "unchanged")
        assert nft.snapshot() == loaded(fw, applier.applied).snapshot()


def test_first_apply_is_full_then_diffs_then_nothing() -> None:
    nft = FakeNft()
    applier = RulesetApplier(nft)
    compiler = Compiler()
    full = applier.apply(compiler.compile(desired()))
    assert full.mode == "full" and full.commands == len(nft.transactions[-1])
    assert applier.apply(compiler.compile(desired())).mode == "unchanged"
    assert applier.apply(compiler.compile(desired(NICS[:2]))).mode == "diff"
    assert len(nft.transactions) == 2


def test_a_failed_apply_leaves_the_previous_ruleset_in_place() -> None:
    nft = FakeNft()
    applier = RulesetApplier(nft)
    compiler = Compiler()
    good = compiler.compile(desired())
    applier.apply(good)
    state = nft.snapshot()
    # the diff fails, and so does the full reload the applier falls back to
    nft.failures = ["Error: Could not process rule: No such file or directory\n"] * 2
    with pytest.raises(Internal) as e:
        applier.apply(compiler.compile(desired(NICS[:1])))
    assert e.value.reason == "NFT_TRANSACTION_FAILED"
    assert "No such file or directory" in e.value.message
    assert applier.applied is good
    assert nft.snapshot() == state


def test_a_diff_that_no_longer_fits_the_kernel_falls_back_to_a_full_reload() -> None:
    nft = FakeNft()
    applier = RulesetApplier(nft)
    compiler = Compiler()
    applier.apply(compiler.compile(desired()))
    del nft.tables[("inet", TABLE)]  # somebody deleted zsd's table behind its back
    result = applier.apply(compiler.compile(desired(NICS[:2])))
    assert result.mode == "full"
    assert nft.snapshot() == loaded(desired(NICS[:2]), applier.applied).snapshot()


def test_counters_follow_their_rule_when_renumbered_and_survive_a_full_reload() -> None:
    nft = FakeNft()
    applier = RulesetApplier(nft)
    compiler = Compiler()
    fw = desired()
    compiled = compiler.compile(fw)
    applier.apply(compiled)
    ssh_ref = RuleRef(group="ops", priority=0, direction=Direction.INGRESS)
    ((set_name, key),) = [k for k, i in compiled.counter_elements.items() if compiled.counters[i] == ssh_ref]
    nft.hit("inet", TABLE, set_name, _key(key), packets=7, nbytes=420)
    groups = dict(fw.groups)
    groups["ops"] = groups["ops"].insert_rule(0, tcp_in(2222, remote_group="web"), known_groups=set(groups))
    assert applier.apply(compiler.compile(replace(fw, groups=groups))).mode == "diff"
    moved = RuleRef(group="ops", priority=1, direction=Direction.INGRESS)
    assert {h.ref: (h.packets, h.bytes) for h in applier.hits()}[moved] == (7, 420)
    applier.apply_full(applier.applied)  # type: ignore[arg-type]
    nft.hit("inet", TABLE, set_name, _key(key), packets=1, nbytes=60)
    hits = {h.ref: (h.packets, h.bytes) for h in applier.hits()}
    assert hits[moved] == (8, 480)
    assert hits[RuleRef(group="ops", priority=0, direction=Direction.INGRESS)] == (0, 0)
    assert hits[DefaultRef(port="tap-web", direction=Direction.INGRESS)] == (0, 0)


def _key(canon: tuple[tuple[int, int], ...]) -> dict[str, list[dict[str, list[int]]]]:
    """An element key in range notation (as a listing might give it)."""
    return {"concat": [{"range": [lo, hi]} for lo, hi in canon]}


def test_remove_deletes_only_zsds_tables() -> None:
    nft = FakeNft()
    nft.json_cmd({"nftables": [{"add": {"table": {"family": "inet", "name": "someone-else"}}}]})
    applier = RulesetApplier(nft)
    applier.apply(Compiler().compile(desired()))
    applier.remove()
    assert set(nft.tables) == {("inet", "someone-else")}
    assert applier.applied is None and applier.hits() == ()


def test_big_hosts_compile_and_diff() -> None:
    fw = synthetic(nics=300, groups=30, rules_per_group=50)
    nft = FakeNft()
    applier = RulesetApplier(nft)
    compiler = Compiler()
    applier.apply(compiler.compile(fw))
    groups = dict(fw.groups)
    groups["g0003"] = groups["g0003"].delete_rule(4)
    assert applier.apply(compiler.compile(replace(fw, groups=groups))).commands < 10


@pytest.mark.parametrize(
    ("text", "kind", "reason"),
    [
        ("Error: Could not process rule: Operation not permitted\n", FailedPrecondition, "NFT_NOT_PERMITTED"),
        ("Error: Could not process rule: Operation not supported\n", Unsupported, "NFT_UNSUPPORTED"),
        ("Error: syntax error\nfoo\n", Internal, "NFT_TRANSACTION_FAILED"),
        ("", Internal, "NFT_TRANSACTION_FAILED"),
    ],
)
def test_nft_errors_become_zsd_errors(text: str, kind: type[Exception], reason: str) -> None:
    error = translate_nft_error(text)
    assert isinstance(error, kind) and error.reason == reason
    assert error.metadata["nft_error"] == text.strip()
