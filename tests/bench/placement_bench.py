"""Placement engine benchmark: the leader placing VMs one by one on a simulated cluster.

    .venv/bin/python -m tests.bench.placement_bench [--hosts 1000] [--vms 10000] [--seed 1]
        [--strategy spread|pack]

The cluster: hosts of four sizes; 10% labelled into 5 host groups; 1% in
maintenance, 1% dead, a few with a lapsed sanlock lease; pools and networks that not
every host reaches. The VMs: mostly ungrouped, the rest in groups under every policy
kind (vm-exclusive mandatory groups of at most 5, vm-aggregate preferred and a few
mandatory, host-affinity and host-exclusion in both modes), arriving in random order.

Prints decisions/s (target >= 2000 with 1000 hosts and 10 000 VMs), the decision
time p50/p99/max, the refusals summarised by cause, and then checks the result on
its own (not with the engine's code): no mandatory rule broken, no host over its
capacity, no VM on a host that could not run it.

A benchmark, not a test: it prints numbers and exits 0 unless a rule was broken.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass

from zsd.compute.placement.engine import Engine
from zsd.compute.placement.model import HostState, Overcommit, VmDemand
from zsd.compute.placement.policies import Policy, check_policy
from zsd.errors import ResourceExhausted

GiB = 1024  # in MiB
SIZES = [(16, 64 * GiB), (32, 128 * GiB), (48, 192 * GiB), (64, 384 * GiB)]
VM_SHAPES = [
    (1, 1 * GiB),
    (2, 4 * GiB),
    (2, 8 * GiB),
    (4, 8 * GiB),
    (4, 16 * GiB),
    (8, 32 * GiB),
    (16, 64 * GiB),
]
VM_WEIGHTS = [10, 25, 20, 20, 15, 8, 2]
TARGET = 2000.0


@dataclass(frozen=True, kw_only=True)
class Cluster:
    hosts: list[HostState]
    host_groups: list[frozenset[str]]
    policies: list[Policy]
    demands: list[VmDemand]


def make_hosts(rng: random.Random, n: int) -> tuple[list[HostState], list[frozenset[str]]]:
    hosts = []
    groups: list[set[str]] = [set() for _ in range(5)]
    for i in range(n):
        name = f"host-{i:04d}"
        cpus, memory = rng.choice(SIZES)
        labels = {}
        if rng.random() < 0.10:
            g = rng.randrange(5)
            labels["hostgroup"] = f"g{g}"
            groups[g].add(name)
        roll = rng.random()
        pools = {"ceph"} | ({"nfs"} if rng.random() < 0.6 else set())
        networks = {"mgmt"} | ({"vlan100"} if rng.random() < 0.8 else set())
        networks |= {"vlan200"} if rng.random() < 0.3 else set()
        hosts.append(
            HostState(
                name=name,
                alive=roll >= 0.01,
                lease_live=not 0.01 <= roll < 0.015,
                maintenance=0.015 <= roll < 0.025,
                cpus=cpus,
                memory_mib=memory,
                pools=frozenset(pools),
                networks=frozenset(networks),
                labels=labels,
            )
        )
    return hosts, [frozenset(g) for g in groups]


def make_cluster(rng: random.Random, n_hosts: int, n_vms: int) -> Cluster:
    hosts, host_groups = make_hosts(rng, n_hosts)
    policies: list[Policy] = []
    members: list[str] = []  # one entry per grouped VM to create, by group name

    def bind(kind: str, mode: str, size: int, host_group: frozenset[str] = frozenset()) -> None:
        group = f"grp-{len(policies)}"
        policy = Policy(
            name=f"pol-{len(policies)}", kind=kind, vm_group=group, host_group=host_group, mode=mode
        )
        policies.append(check_policy(policy, policies, {}, hosts))
        members.extend([group] * size)

    scale = n_vms / 10_000
    for _ in range(int(200 * scale)):
        bind("vm-exclusive", "mandatory", rng.randint(2, 5))
    for _ in range(int(100 * scale)):
        bind("vm-aggregate", "preferred", rng.randint(2, 6))
    for _ in range(int(20 * scale)):
        bind("vm-aggregate", "mandatory", rng.randint(2, 4))
    for hg, (kind, mode) in zip(
        host_groups,
        [
            ("host-affinity", "mandatory"),
            ("host-affinity", "preferred"),
            ("host-exclusion", "mandatory"),
            ("host-exclusion", "preferred"),
            ("host-affinity", "mandatory"),
        ],
        strict=True,
    ):
        if hg:
            bind(kind, mode, int(150 * scale), hg)
    groups = members[:n_vms] + [""] * max(0, n_vms - len(members))
    rng.shuffle(groups)
    demands = []
    for i, group in enumerate(groups):
        vcpus, memory = rng.choices(VM_SHAPES, VM_WEIGHTS)[0]
        pools = frozenset({"ceph"} | ({"nfs"} if rng.random() < 0.2 else set()))
        networks = frozenset({"mgmt"} | ({"vlan200"} if rng.random() < 0.05 else set()))
        demands.append(
            VmDemand(
                name=f"vm-{i:05d}",
                vcpus=vcpus,
                memory_mib=memory,
                pools=pools,
                networks=networks,
                group=group,
            )
        )
    return Cluster(hosts=hosts, host_groups=host_groups, policies=policies, demands=demands)


def cause(reason: str) -> str:
    if reason.startswith("policy"):
        return "policy"
    if "vCPUs free" in reason:
        return "cpu"
    if "MiB free" in reason:
        return "memory"
    if reason.startswith(("cannot reach", "lacks")):
        return "pool/network"
    return "host down"


def verify(cluster: Cluster, engine: Engine, overcommit: Overcommit) -> list[str]:
    """Everything wrong with the final placements, checked from scratch."""
    wrong = []
    by_name = {h.name: h for h in cluster.hosts}
    demand = {d.name: d for d in cluster.demands}
    used: Counter[str] = Counter()
    used_mem: Counter[str] = Counter()
    group_hosts: dict[str, list[str]] = {}
    for vm, p in engine.placements.items():
        h, d = by_name[p.host], demand[vm]
        used[p.host] += p.vcpus
        used_mem[p.host] += p.memory_mib
        group_hosts.setdefault(p.group, []).append(p.host)
        if not (h.alive and h.lease_live and not h.maintenance):
            wrong.append(f"{vm} on unusable {p.host}")
        if not (d.pools <= h.pools and d.networks <= h.networks):
            wrong.append(f"{vm} on {p.host}, which lacks its pools or networks")
    for name, h in by_name.items():
        if used[name] > h.cpus * overcommit.cpu or used_mem[name] > h.memory_mib * overcommit.memory:
            wrong.append(f"{name} over capacity")
    for pol in cluster.policies:
        if pol.mode != "mandatory":
            continue
        where = group_hosts.get(pol.vm_group, [])
        if pol.kind == "vm-exclusive" and len(set(where)) != len(where):
            wrong.append(f"{pol.name}: group {pol.vm_group} shares a host")
        if pol.kind == "vm-aggregate" and len(set(where)) > 1:
            wrong.append(f"{pol.name}: group {pol.vm_group} on {len(set(where))} hosts")
        if pol.kind == "host-affinity" and not set(where) <= pol.host_group:
            wrong.append(f"{pol.name}: group {pol.vm_group} outside its host group")
        if pol.kind == "host-exclusion" and set(where) & pol.host_group:
            wrong.append(f"{pol.name}: group {pol.vm_group} inside its host group")
    return wrong


def run(ns: argparse.Namespace) -> int:
    rng = random.Random(ns.seed)
    cluster = make_cluster(rng, ns.hosts, ns.vms)
    overcommit = Overcommit()
    kind_of = {p.vm_group: f"{p.kind} {p.mode}" for p in cluster.policies}
    t = time.perf_counter()
    engine = Engine(
        hosts=cluster.hosts, policies=cluster.policies, overcommit=overcommit, strategy=ns.strategy
    )
    build_ms = (time.perf_counter() - t) * 1000

    times: list[float] = []
    refused: Counter[str] = Counter()
    refused_causes: dict[str, Counter[str]] = {}
    clock = time.perf_counter
    start = clock()
    for d in cluster.demands:
        t = clock()
        try:
            engine.place(d)
        except ResourceExhausted as e:
            times.append(clock() - t)
            kind = kind_of.get(d.group, "ungrouped")
            refused[kind] += 1
            refused_causes.setdefault(kind, Counter()).update(cause(r) for r in e.metadata.values())
        else:
            times.append(clock() - t)
    total = clock() - start

    ms = sorted(x * 1000 for x in times)
    usable = sum(1 for h in cluster.hosts if h.alive and h.lease_live and not h.maintenance)
    labelled = sum(len(g) for g in cluster.host_groups)
    rate = len(times) / total
    verdict = "met" if rate >= TARGET else "MISSED"
    placed_mib = sum(p.memory_mib for p in engine.placements.values())
    usable_mib = sum(
        overcommit.memory_mib(h.memory_mib)
        for h in cluster.hosts
        if h.alive and h.lease_live and not h.maintenance
    )
    out = [
        f"Placement: {ns.hosts} hosts ({usable} usable, {labelled} in 5 host groups), {ns.vms} VMs, "
        f"{len(cluster.policies)} policies, strategy {ns.strategy}, seed {ns.seed}",
        f"{'metric':<28} {'value':>12}",
        f"{'engine build (ms)':<28} {build_ms:>12.1f}",
        f"{'decisions/s':<28} {rate:>12.0f}   target >= {TARGET:.0f}: {verdict}",
        f"{'decision p50 (ms)':<28} {statistics.median(ms):>12.3f}",
        f"{'decision p99 (ms)':<28} {ms[int(0.99 * (len(ms) - 1))]:>12.3f}",
        f"{'decision max (ms)':<28} {ms[-1]:>12.3f}",
        f"{'placed':<28} {len(engine.placements):>12}",
        f"{'refused':<28} {sum(refused.values()):>12}",
        f"{'memory placed (% of usable)':<28} {100 * placed_mib / usable_mib:>12.1f}",
    ]
    if refused:
        out += [
            "",
            "Refusals by the VM's policy; host rejections summed by cause",
            f"{'policy':<30} {'VMs':>5}  causes",
        ]
        for kind, n in refused.most_common():
            causes = ", ".join(f"{c} {k}" for c, k in refused_causes[kind].most_common())
            out.append(f"{kind:<30} {n:>5}  {causes}")
    print("\n".join(out))
    wrong = verify(cluster, engine, overcommit)
    for w in wrong[:20]:
        print(f"BROKEN: {w}", file=sys.stderr)
    assert not wrong, f"{len(wrong)} rule(s) broken"
    print("mandatory rules: all held (and no host over capacity, no VM on a host that cannot run it)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--strategy", choices=["spread", "pack"], default="spread")
    ns = parser.parse_args()
    return run(ns)


if __name__ == "__main__":
    sys.exit(main())
