"""A leader process for the store's process tests (run with ``python -m``).

``loop PATH EPOCH OWNER BATCH SIZE``: opens (creating if needed) and commits
forever; commit ``i`` puts BATCH resources ``k0..`` (payload: ``i`` repeated to
SIZE bytes) and creates ``c{i}``, under request id ``{OWNER}-{i}``. Prints each
acknowledged revision on its own line.

``hold PATH EPOCH OWNER``: opens, prints ``open``, waits for a line on stdin,
then tries one commit and prints ``ok REVISION`` or ``error REASON``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from zsd.cluster.store import ClusterDb, Create, Put
from zsd.errors import ZsdError


def _open(path: Path, epoch: int, owner: str) -> ClusterDb:
    if path.exists():
        return ClusterDb.open(path, epoch=epoch, owner=owner)
    return ClusterDb.create(path, epoch=epoch, owner=owner)


def loop(path: Path, epoch: int, owner: str, batch: int, size: int) -> None:
    db = _open(path, epoch, owner)
    i = 0
    while True:
        payload = (str(i).encode() * size)[:size]
        mutations: list[Create | Put] = [Put(kind="k", name=f"k{j}", data=payload) for j in range(batch)]
        mutations.append(Create(kind="c", name=f"{owner}-{i}", data=payload))
        result = db.commit(mutations, request_id=f"{owner}-{i}", fingerprint=payload[:8])
        print(result.revision, flush=True)
        i += 1


def hold(path: Path, epoch: int, owner: str) -> None:
    db = _open(path, epoch, owner)
    print("open", flush=True)
    sys.stdin.readline()
    try:
        result = db.commit([Create(kind="vm", name=owner, data=b"")])
    except ZsdError as e:
        print("error", e.reason, flush=True)
    else:
        print("ok", result.revision, flush=True)


def main(argv: list[str]) -> None:
    mode, path, epoch, owner, *rest = argv
    if mode == "loop":
        loop(Path(path), int(epoch), owner, int(rest[0]), int(rest[1]))
    else:
        hold(Path(path), int(epoch), owner)


if __name__ == "__main__":
    main(sys.argv[1:])
