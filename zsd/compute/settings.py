"""Placement settings (configuration keys compute.*): plain values, importable by
the configuration loader without the rest of compute."""

from __future__ import annotations

from dataclasses import dataclass

from zsd.compute.placement.model import STRATEGIES, Overcommit, Strategy

__all__ = ["STRATEGIES", "PlacementSettings"]


@dataclass(frozen=True, kw_only=True)
class PlacementSettings:
    """How the leader places VMs (the leader's configuration applies)."""

    cpu_overcommit: float = 4.0
    memory_overcommit: float = 1.0
    """1.0: memory is reserved (the balloon is off), never promised twice."""
    strategy: Strategy = "spread"
    """spread: the host with the most free memory (share); pack: the least that fits
    (keep hosts empty for big VMs or power saving)."""

    @property
    def overcommit(self) -> Overcommit:
        return Overcommit(cpu=self.cpu_overcommit, memory=self.memory_overcommit)
