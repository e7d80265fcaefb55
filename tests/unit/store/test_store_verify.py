"""verify(): the history checks the fault tests rely on do catch broken histories."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from zsd.cluster.store import ClusterDb, Create, Delete, Put, verify


@pytest.fixture
def history(path: Path) -> Path:
    with ClusterDb.create(path, epoch=1, owner="h1") as db:
        db.commit([Create(kind="vm", name="a", data=b"1"), Create(kind="vm", name="b", data=b"1")])
        db.commit([Delete(kind="vm", name="b")], request_id="r")
    with ClusterDb.open(path, epoch=2, owner="h2") as db:
        db.commit([Put(kind="vm", name="a", data=b"2")])
        db.commit([Put(kind="vm", name="c", data=b"2")])
    return path


def _tamper(path: Path, *statements: str) -> tuple[str, ...]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()
    return verify(path)


def test_a_sound_history_has_no_problems(history: Path) -> None:
    assert verify(history) == ()


@pytest.mark.parametrize(
    ("statements", "problem"),
    [
        (["DELETE FROM changes WHERE revision = 2"], "change log revisions"),
        (["UPDATE meta SET value = 5 WHERE key = 'revision'"], "change log revisions"),
        (["UPDATE changes SET epoch = 1 WHERE revision = 4"], "epoch 1 after epoch 2"),
        (["UPDATE epochs SET first_revision = 4 WHERE epoch = 2"], "first revision"),
        (["UPDATE changes SET epoch = 3 WHERE revision = 3"], "epoch 2 after epoch 3"),
        (["DELETE FROM epochs WHERE epoch = 2"], "never opened"),
        (["UPDATE resources SET data = x'00' WHERE name = 'a'"], "differs from its last change"),
        (["DELETE FROM resources WHERE name = 'c'"], "missing"),
        (["UPDATE requests SET revision = 9"], "request ids"),
    ],
)
def test_broken_histories_are_reported(history: Path, statements: list[str], problem: str) -> None:
    problems = _tamper(history, *statements)
    assert any(problem in p for p in problems), problems


def test_compacted_histories_are_checked_from_the_compaction_on(history: Path) -> None:
    with ClusterDb.open(history, epoch=3, owner="h1") as db:
        db.compact(keep=1)
    assert verify(history) == ()
    assert _tamper(history, "UPDATE resources SET data = x'00' WHERE name = 'c'")
