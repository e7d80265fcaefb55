"""Placement settings (configuration keys compute.*): plain values, importable by
the configuration loader without the rest of compute."""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("spread", "pack")


@dataclass(frozen=True, kw_only=True)
class Placement:
    """How the leader places VMs (the leader's configuration applies)."""

    cpu_overcommit: float = 4.0
    memory_overcommit: float = 1.0
    """1.0: memory is reserved (the balloon is off), never promised twice."""
    strategy: str = "spread"
    """spread: the host with the most free memory (share); pack: the least that fits
    (keep hosts empty for big VMs or power saving)."""
