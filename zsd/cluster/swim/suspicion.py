"""Lifeguard's dynamic suspicion timeout (one timer per suspected member).

A fresh suspicion starts with a long timeout (``max_timeout``). Every *independent*
confirmation - another member that also failed to reach the suspect - shortens it
on a log scale, down to ``min_timeout`` once ``k`` confirmations arrived. A lone
suspicion caused by the suspecter's own bad network therefore lasts long enough
for the suspect to hear about it and refute, while a really dead member is
declared quickly because many members confirm.

Pure arithmetic on the ``now`` the caller passes; the owner schedules the deadline.
"""

from __future__ import annotations

import math


def suspicion_timeout(suspicion_mult: int, n: int, interval: float) -> float:
    """The minimum suspicion timeout for a cluster of ``n`` members.

    Scaled by log10(n) because gossip needs ~log(n) rounds to reach everyone,
    and the suspect must hear the suspicion to refute it.
    """
    node_scale = max(1.0, math.log10(max(1, n)))
    return suspicion_mult * node_scale * interval


def remaining_timeout(*, confirmations: int, k: int, min_timeout: float, max_timeout: float) -> float:
    """Total timeout (from the start of the suspicion) after ``confirmations`` of ``k``."""
    if k < 1:
        return min_timeout
    fraction = math.log(confirmations + 1) / math.log(k + 1)
    return max(min_timeout, max_timeout - fraction * (max_timeout - min_timeout))


class Suspicion:
    """The timer state for one suspected member."""

    __slots__ = ("_confirmed_by", "deadline", "incarnation", "k", "max_timeout", "min_timeout", "start")

    def __init__(
        self,
        *,
        suspecter: str,
        incarnation: int,
        k: int,
        min_timeout: float,
        max_timeout: float,
        now: float,
    ) -> None:
        self.incarnation = incarnation
        self.k = k
        self.min_timeout = min_timeout
        self.max_timeout = max(max_timeout, min_timeout)
        self.start = now
        # The first suspecter is not a confirmation, but repeats from it must not count.
        self._confirmed_by = {suspecter}
        self.deadline = now + (min_timeout if k < 1 else self.max_timeout)

    @property
    def confirmations(self) -> int:
        return len(self._confirmed_by) - 1

    def confirm(self, source: str) -> bool:
        """Count an independent suspicion from ``source``; True if it was new.

        A new confirmation moves :attr:`deadline` earlier (possibly into the past:
        the owner then declares the member dead at its next tick).
        """
        if self.confirmations >= self.k or source in self._confirmed_by:
            return False
        self._confirmed_by.add(source)
        self.deadline = self.start + remaining_timeout(
            confirmations=self.confirmations,
            k=self.k,
            min_timeout=self.min_timeout,
            max_timeout=self.max_timeout,
        )
        return True
