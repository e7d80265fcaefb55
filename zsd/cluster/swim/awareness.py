"""Lifeguard local health awareness.

A node that cannot get its own acks and nacks through is more likely to be the
broken party than the members it probes. It keeps a score in
``[0, max_multiplier)`` that rises on evidence of its own trouble (missed nacks
from helpers, having to refute a suspicion of itself) and falls on every
successful probe. Its probe interval (and so the time it waits for indirect
acks) is multiplied by ``score + 1``: a sick node probes less and suspects
more slowly, instead of flooding the cluster with false suspicions.
"""

from __future__ import annotations


class Awareness:
    __slots__ = ("_max", "score")

    def __init__(self, max_multiplier: int) -> None:
        self._max = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        self.score = min(self._max - 1, max(0, self.score + delta))

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)
