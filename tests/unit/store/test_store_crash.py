"""SIGKILL of a leader in the middle of commits: the store keeps whole revisions only.

A separate process commits large transactions (200 puts and a create each) in a
loop and is killed at a random moment, several times, each run as a new epoch.
After every kill the file must hold every acknowledged revision, each complete,
no trace of the interrupted one, and a gapless history.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from pathlib import Path

from tests.unit.store.procs import start_writer
from zsd.cluster.store import verify

BATCH = 200
SIZE = 512


def _run_and_kill(path: Path, epoch: int, rng: random.Random) -> tuple[list[int], bool]:
    """Returns the acknowledged revisions and whether the kill left a journal behind."""
    acknowledged: list[int] = []
    with start_writer("loop", path, epoch, f"h{epoch}", BATCH, SIZE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            wanted = rng.randint(3, 8)
            while len(acknowledged) < wanted:
                line = proc.stdout.readline()
                assert line, proc.stderr.read()
                acknowledged.append(int(line))
            time.sleep(rng.uniform(0, 0.004))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        # What it acknowledged before it died is still in the pipe.
        acknowledged += [int(line) for line in proc.stdout.read().split()]
    journal = path.with_name(path.name + "-journal")
    return acknowledged, journal.exists() and journal.stat().st_size > 0


def _check(path: Path, epoch: int, acknowledged: list[int]) -> int:
    assert verify(path) == ()  # also rolls back the interrupted transaction
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        revision = conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]
        assert acknowledged[-1] <= revision <= acknowledged[-1] + 1
        per_revision = conn.execute("SELECT revision, count(*) FROM changes GROUP BY revision").fetchall()
        assert per_revision == [(r, BATCH + 1) for r in range(1, revision + 1)]
        # The puts of one commit share a payload: all of them come from the last commit.
        payloads = conn.execute("SELECT DISTINCT data, revision FROM resources WHERE kind = 'k'").fetchall()
        assert len(payloads) == 1 and payloads[0][1] == revision
        created = {row[0] for row in conn.execute("SELECT name FROM resources WHERE kind = 'c'")}
        assert len(created) == revision
        assert {f"h{epoch}-{i}" for i in range(len(acknowledged))} <= created
        requests = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
        assert requests == revision
        return int(revision)
    finally:
        conn.close()


def test_sigkill_during_commits_keeps_whole_acknowledged_revisions(path: Path) -> None:
    rng = random.Random()
    kills = interrupted = 0
    revision = 0
    # Most kills land inside a commit; go on until one provably did (a journal
    # was left behind), so the rollback path is always exercised.
    while kills < 3 or (interrupted == 0 and kills < 15):
        kills += 1
        acknowledged, hot = _run_and_kill(path, kills, rng)
        interrupted += hot
        assert acknowledged == list(range(revision + 1, revision + 1 + len(acknowledged)))
        revision = _check(path, kills, acknowledged)
    assert interrupted > 0
