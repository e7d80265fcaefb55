"""The host-side network reconcilers' loop: nothing before the state copy is synced,
then a round on every change, every ``resync`` seconds, and after ``RETRY`` seconds
while a problem is left or a round failed."""

from __future__ import annotations

import trio
import trio.testing

from zsd.network.follow import RETRY, follow_state


class Copy:
    """What follow_state reads of the replica: ``synced`` and its changes."""

    def __init__(self) -> None:
        self.synced = trio.Event()
        self._changed = trio.Event()

    def change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()


async def test_rounds_wait_for_sync_then_follow_changes_resync_and_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    copy = Copy()
    results = [True, False, "boom", True, True]
    rounds: list[float] = []
    failures: list[str] = []

    async def round() -> bool:
        rounds.append(trio.current_time())
        result = results.pop(0)
        if result == "boom":
            raise RuntimeError("boom")
        return bool(result)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: follow_state(copy, round, resync=30.0, failed=lambda e: failures.append(str(e)))
        )
        await trio.sleep(100)
        assert rounds == []  # not synced: nothing at all
        copy.synced.set()
        await trio.sleep(1)
        assert rounds == [100.0]
        copy.change()  # a change: at once
        await trio.sleep(0)
        await trio.testing.wait_all_tasks_blocked()
        assert rounds == [100.0, 101.0]
        await trio.sleep(RETRY + 1)  # that round left a problem: again after RETRY, and it fails
        await trio.sleep(RETRY)  # a failed round is retried after RETRY too
        assert rounds == [100.0, 101.0, 101.0 + RETRY, 101.0 + 2 * RETRY] and failures == ["boom"]
        await trio.sleep(30)  # converged: the next one at the resync
        assert rounds[-1] == 101.0 + 2 * RETRY + 30.0
        nursery.cancel_scope.cancel()


def test_the_copy_stand_in() -> None:
    copy = Copy()
    first = copy._changed
    copy.change()
    assert first.is_set() and not copy._changed.is_set() and not copy.synced.is_set()
