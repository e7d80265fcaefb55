from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from zsd.cluster.store import ClusterDb


class WallClock:
    """A settable wall clock for the store's timestamps and request-id expiry."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cluster.db"


@pytest.fixture
def db(path: Path, wall: WallClock) -> Iterator[ClusterDb]:
    """A new store opened by host h1 as the leader of epoch 1."""
    with ClusterDb.create(path, epoch=1, owner="h1", clock=wall) as db:
        yield db
