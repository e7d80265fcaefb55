"""Protocol tuning as one frozen value, with profiles in the spirit of memberlist's
``DefaultLANConfig`` / ``DefaultLocalConfig``.

Start from a profile and adjust with :func:`dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass

from zsd.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class SwimConfig:
    # Failure detection. One probe per probe_interval (scaled up by local health);
    # the direct ack is awaited for probe_timeout, then indirect_checks helpers are
    # asked, and the probe fails if no ack came back by the end of the interval.
    probe_interval: float
    probe_timeout: float
    indirect_checks: int
    # Also ping over the reliable stream channel when the direct ack is missing; masks
    # packet loss the way TCP retransmission does (memberlist's TCP fallback ping).
    stream_fallback_ping: bool

    # Lifeguard suspicion: min timeout = suspicion_mult * max(1, log10(n)) * probe_interval,
    # max = suspicion_max_timeout_mult * min; independent confirmations (up to
    # suspicion_mult - 2 of them) bring the timeout down from max to min.
    suspicion_mult: int
    suspicion_max_timeout_mult: int
    # Lifeguard local health: probe interval is multiplied by (score + 1), score < this.
    awareness_max_multiplier: int

    # Dissemination: every gossip_interval, pending updates go to gossip_nodes random
    # members; each update is sent retransmit_mult * ceil(log10(n + 1)) times.
    gossip_interval: float
    gossip_nodes: int
    retransmit_mult: int
    # Dead members still receive gossip for this long, so a falsely-declared member
    # learns about it and refutes.
    gossip_to_the_dead_time: float

    # Anti-entropy: full state exchange with one random member, scaled up past 32 members.
    push_pull_interval: float
    # How often a node that knows no live peer (or has dead members) tries to reach a
    # seed or one dead member again; this is what heals a long partition.
    reconnect_interval: float
    # Dead members are forgotten after this long; left members after gossip_to_the_dead_time.
    dead_retention: float

    # Largest UDP payload we build; stays under a 1500-byte MTU with IP/UDP headers.
    packet_size: int = 1400
    # Adapters give up on one stream message (connect + write) after this long.
    stream_timeout: float = 2.0

    def __post_init__(self) -> None:
        positive = {
            "probe_interval": self.probe_interval,
            "probe_timeout": self.probe_timeout,
            "gossip_interval": self.gossip_interval,
            "push_pull_interval": self.push_pull_interval,
            "reconnect_interval": self.reconnect_interval,
            "stream_timeout": self.stream_timeout,
        }
        for field, value in positive.items():
            if value <= 0:
                raise ConfigError(f"must be > 0, got {value}", field=f"swim.{field}")
        if self.probe_timeout >= self.probe_interval:
            raise ConfigError("must be shorter than probe_interval", field="swim.probe_timeout")
        if self.suspicion_mult < 1:
            raise ConfigError("must be >= 1", field="swim.suspicion_mult")
        if self.suspicion_max_timeout_mult < 1:
            raise ConfigError("must be >= 1", field="swim.suspicion_max_timeout_mult")
        if self.awareness_max_multiplier < 1:
            raise ConfigError("must be >= 1", field="swim.awareness_max_multiplier")
        if self.indirect_checks < 0 or self.gossip_nodes < 1 or self.retransmit_mult < 1:
            raise ConfigError("indirect_checks >= 0, gossip_nodes and retransmit_mult >= 1", field="swim")
        if not 576 <= self.packet_size <= 65_000:
            raise ConfigError("must be within 576..65000", field="swim.packet_size")

    @classmethod
    def lan(cls) -> SwimConfig:
        """Hosts on one data-centre LAN (sub-millisecond RTT, occasional loss).

        memberlist's LAN profile probes every second with suspicion x4; zsd wants
        faster HA decisions (sanlock stays the authority), so probes run every
        200 ms and suspicion uses memberlist's *local* multiplier, 3: the minimum
        suspicion time is then 0.6 s at 10 members, 1.2 s at 100 and 1.8 s at
        1000, still twice the ~0.4 s (p99) a refutation needs to spread at 1000
        members and 5 % loss. On the simulator (tests/bench/swim_sim.py) this
        detects a crash in ~2.1 s (p50) with no false positives and spreads an
        update to every member in < 0.5 s at 1000 members.
        """
        return cls(
            probe_interval=0.2,
            probe_timeout=0.1,
            indirect_checks=3,
            stream_fallback_ping=True,
            suspicion_mult=3,
            suspicion_max_timeout_mult=6,
            awareness_max_multiplier=8,
            gossip_interval=0.1,
            gossip_nodes=3,
            retransmit_mult=4,
            gossip_to_the_dead_time=15.0,
            push_pull_interval=30.0,
            reconnect_interval=5.0,
            dead_retention=3600.0,
        )

    @classmethod
    def local(cls) -> SwimConfig:
        """Many hosts on one machine (loopback or network namespaces): no loss, so
        one helper and fewer retransmissions do; but N daemons share a few cores,
        so a member can stall for a moment and suspicion is *more* patient than on
        a LAN. Anti-entropy and reconnects are cheap here and run more often.
        """
        return cls(
            probe_interval=0.2,
            probe_timeout=0.1,
            indirect_checks=1,
            stream_fallback_ping=True,
            suspicion_mult=4,
            suspicion_max_timeout_mult=6,
            awareness_max_multiplier=8,
            gossip_interval=0.1,
            gossip_nodes=3,
            retransmit_mult=3,
            gossip_to_the_dead_time=15.0,
            push_pull_interval=10.0,
            reconnect_interval=2.0,
            dead_retention=3600.0,
        )
