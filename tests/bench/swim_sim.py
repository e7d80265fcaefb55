"""SWIM failure detection and dissemination on the simulated network.

Run from the repository root::

    python -m tests.bench.swim_sim            # 100 and 1000 members (a few minutes)
    python -m tests.bench.swim_sim --quick    # fewer trials, shorter runs

Every scenario: a warm cluster (everyone knows everyone) on a network with 5 %
packet loss and 1 ms +- 1 ms one-way delay, the LAN profile. Members crash one
at a time at random moments; others update their metadata. Measured:

- detection first/all: from the crash until the first member (resp. every live
  member) declares the crashed member dead;
- false positives: FAILED events about members that never crashed;
- dissemination: from a metadata update until 99.99 % of the other live members
  hold the new incarnation.

Not a pytest test: it takes minutes. The two sizes run in parallel processes.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `zsd` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from zsd.cluster.swim.config import SwimConfig
from zsd.cluster.swim.member import Address, HostMeta
from zsd.cluster.swim.sim import LinkConditions, SimNetwork, start_cluster
from zsd.cluster.swim.transport import EventKind, MemberEvent


@dataclass(frozen=True, kw_only=True)
class Scenario:
    size: int
    crashes: int
    updates: int
    spacing: float  # virtual seconds between two faults/updates
    settle: float  # virtual seconds after the last one
    loss: float = 0.05
    seed: int = 1
    config: SwimConfig = field(default_factory=SwimConfig.lan)


@dataclass(kw_only=True)
class Result:
    size: int
    crashes: int
    updates: int
    detect_first: list[float] = field(default_factory=list)
    detect_all: list[float] = field(default_factory=list)
    undetected: int = 0
    false_positives: int = 0
    dissemination: list[float] = field(default_factory=list)
    undisseminated: int = 0
    virtual_seconds: float = 0.0
    wall_seconds: float = 0.0
    packets: int = 0


class _Observer:
    """Records when each member first saw each crash and each update."""

    def __init__(self) -> None:
        self.crashed_at: dict[str, float] = {}
        self.failed_at: dict[str, dict[Address, float]] = {}
        self.false_positives = 0
        self.update_at: dict[str, tuple[float, int]] = {}  # name -> (time, new incarnation)
        self.updated_at: dict[str, dict[Address, float]] = {}

    def __call__(self, now: float, observer: Address, event: MemberEvent) -> None:
        name = event.member.name
        if event.kind == EventKind.FAILED:
            if name not in self.crashed_at:
                self.false_positives += 1
            else:
                self.failed_at.setdefault(name, {}).setdefault(observer, now)
        elif (
            event.kind == EventKind.UPDATED
            and name in self.update_at
            and event.member.incarnation >= self.update_at[name][1]
        ):
            self.updated_at.setdefault(name, {}).setdefault(observer, now)


def run(scenario: Scenario) -> Result:
    config = scenario.config
    rng = random.Random(scenario.seed)
    observer = _Observer()
    net = SimNetwork(
        rng=random.Random(scenario.seed + 1),
        conditions=LinkConditions(loss=scenario.loss, delay=0.001, jitter=0.001),
        on_event=observer,
    )
    started = time.perf_counter()
    nodes = start_cluster(net, size=scenario.size, config=config, seed=scenario.seed, warm=True)
    net.run_for(5.0)  # let the start-up gossip (everyone's own alive) die down
    alive = list(range(scenario.size))
    rng.shuffle(alive)
    actions = ["crash"] * scenario.crashes + ["update"] * scenario.updates
    rng.shuffle(actions)
    for action in actions:
        net.run_for(rng.uniform(0.5, 1.5) * scenario.spacing)
        index = alive.pop()
        node = nodes[index]
        if action == "crash":
            observer.crashed_at[node.name] = net.now
            net.crash(node.address)
        else:
            alive.insert(0, index)  # may be picked again much later
            meta = replace(HostMeta(host_id=index + 1), version=f"v{net.now:.3f}")
            outputs = node.update_meta(meta, net.now)
            observer.update_at[node.name] = (net.now, node.incarnation)
            net.apply(node.address, outputs)
    net.run_for(scenario.settle)

    # "Everyone" means the members still running at the end.
    survivors = {nodes[i].address for i in alive}
    result = Result(
        size=scenario.size,
        crashes=scenario.crashes,
        updates=scenario.updates,
        false_positives=observer.false_positives,
    )
    for name, crashed in observer.crashed_at.items():
        seen = observer.failed_at.get(name, {})
        if seen:
            result.detect_first.append(min(seen.values()) - crashed)
        if survivors <= seen.keys():
            result.detect_all.append(max(seen[a] for a in survivors) - crashed)
        else:
            result.undetected += 1
    for name, (at, _) in observer.update_at.items():
        others = survivors - {nodes[int(name.removeprefix("node"))].address}
        times = sorted(t for a, t in observer.updated_at.get(name, {}).items() if a in others)
        need = math.ceil(0.9999 * len(others))
        if len(times) >= need:
            result.dissemination.append(times[need - 1] - at)
        else:
            result.undisseminated += 1
    result.virtual_seconds = net.now
    result.wall_seconds = time.perf_counter() - started
    result.packets = net.stats.sent
    return result


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def table(results: list[Result]) -> str:
    head = (
        f"{'members':>7} {'crashes':>7} {'first p50':>9} {'first p99':>9} {'all p50':>8} {'all p99':>8} "
        f"{'missed':>6} {'false+':>6} {'updates':>7} {'dissem p50':>10} {'dissem p99':>10} "
        f"{'virt s':>7} {'wall s':>7}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(
            f"{r.size:>7} {r.crashes:>7} "
            f"{percentile(r.detect_first, 50):>9.2f} {percentile(r.detect_first, 99):>9.2f} "
            f"{percentile(r.detect_all, 50):>8.2f} {percentile(r.detect_all, 99):>8.2f} "
            f"{r.undetected:>6} {r.false_positives:>6} {r.updates:>7} "
            f"{percentile(r.dissemination, 50):>10.2f} {percentile(r.dissemination, 99):>10.2f} "
            f"{r.virtual_seconds:>7.0f} {r.wall_seconds:>7.1f}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="6 trials per size, not 40/20")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a LAN profile field"
    )
    args = parser.parse_args(argv)
    config = SwimConfig.lan()
    for assignment in args.set:
        key, _, value = assignment.partition("=")
        current = getattr(config, key)
        config = replace(
            config, **{key: type(current)(value == "true" if isinstance(current, bool) else value)}
        )
    scenarios = []
    for size in args.sizes:
        if args.quick:
            trials, spacing = 6, 3.0
        elif size <= 200:
            trials, spacing = 40, 2.0
        else:
            trials, spacing = 20, 2.0
        scenario = Scenario(size=size, crashes=trials, updates=trials, spacing=spacing, settle=15.0)
        scenarios.append(replace(scenario, seed=args.seed, config=config))
    print(
        f"profile: probe {config.probe_interval}s/{config.probe_timeout}s, "
        f"{config.indirect_checks} helpers, "
        f"suspicion x{config.suspicion_mult}..x{config.suspicion_max_timeout_mult * config.suspicion_mult}, "
        f"gossip {config.gossip_interval}s to {config.gossip_nodes}, retransmit x{config.retransmit_mult}; "
        f"network: 5% loss, 1 ms + [0, 1 ms) delay. Times in seconds."
    )
    with ProcessPoolExecutor(max_workers=min(2, len(scenarios))) as pool:
        results = list(pool.map(run, scenarios))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
