"""The loop every host-side network reconciler runs: converge once the state copy is
synced, then on each of its changes and every ``resync`` seconds; sooner (``RETRY``)
while something is left to do.

Waiting for ``synced`` is the point of having one loop: a restarted member's state
copy is empty until the leader's snapshot arrives (a leader's own copy replays its
store), and converging to that would remove every bridge with the VMs' taps, stop
every dnsmasq, and enforce NICs without their groups.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

RETRY = 5.0
"""Seconds before a round that left a problem (or failed) runs again."""


class StateCopy(Protocol):
    """What the loop reads of ``zsd.cluster.replica.Replica``."""

    @property
    def synced(self) -> trio.Event: ...

    async def wait_changed(self) -> None: ...


async def follow_state(
    replica: StateCopy,
    round: Callable[[], Awaitable[bool]],
    *,
    resync: float,
    failed: Callable[[Exception], None],
) -> None:
    """Runs ``round`` (True: converged; False: a problem is left) until cancelled. An
    exception of a round goes to ``failed`` and counts as a problem: the network must
    not take the host's other duties down with it."""
    await replica.synced.wait()
    while True:
        try:
            done = await round()
        except Exception as e:
            failed(e)
            done = False
        with trio.move_on_after(resync if done else RETRY):
            await replica.wait_changed()
