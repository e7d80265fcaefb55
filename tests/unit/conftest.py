"""Fixtures shared by unit tests of several areas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.unit.compute.test_leader_placement import Cluster, SlowStore
from zsd.cluster.store import ClusterDb


@pytest.fixture
async def cluster(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Cluster]:
    """A leader with a real cluster.db and its own state copy (see ``Cluster``)."""
    store = SlowStore(ClusterDb.create(tmp_path / "cluster.db", epoch=1, owner="h0"))
    c = Cluster(store)
    await nursery.start(c.replica.run)
    yield c
    nursery.cancel_scope.cancel()
    await store.aclose()
