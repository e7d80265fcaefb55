"""The image store's downloader: ``http_get`` behind the ``Downloader`` interface."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from zsd.storage.httpget import GetSpec, http_get
from zsd.storage.images import Downloaded


def http_download(
    url: str,
    dest: Path,
    sha256: str | None,
    progress: Callable[[int, int | None], None],
    cancelled: Callable[[], bool],
) -> Downloaded:
    result = http_get(GetSpec(url=url, dest=dest, sha256=sha256), progress=progress, cancelled=cancelled)
    return Downloaded(size=result.size, sha256=result.sha256)
