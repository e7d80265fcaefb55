"""Crash-safe file writes."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Writes ``data`` so that ``path`` holds either the old or the new content after a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def unsearchable_by_others(path: Path) -> Path | None:
    """The first directory from the root down to ``path`` (included) that users other
    than its owner and group cannot enter (no o+x), or None when all can: a daemon
    that drops root to an unprivileged user reaches ``path`` only then."""
    for directory in (*reversed(path.parents), path):
        try:
            mode = directory.stat().st_mode
        except FileNotFoundError:
            return None  # made later, by us, with o+x
        if not mode & 0o001:
            return directory
    return None
