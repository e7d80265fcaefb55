"""The setrlimit shim build (needs a C compiler)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zsd.cluster.lease.daemon import SanlockDaemon, build_shim
from zsd.errors import FailedPrecondition


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs gcc and libc6-dev")
def test_shim_is_built_once_per_source(tmp_path: Path) -> None:
    shim = build_shim(tmp_path)
    assert shim.exists() and shim.suffix == ".so"
    mtime = shim.stat().st_mtime_ns
    assert build_shim(tmp_path) == shim
    assert shim.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob(".*"))  # no half-built leftovers


def test_missing_sanlock_binary_is_a_clear_error(tmp_path: Path) -> None:
    daemon = SanlockDaemon(run_dir=tmp_path, executable="no-such-sanlock-binary")
    with pytest.raises(FailedPrecondition) as info:
        daemon.start()
    assert info.value.reason == "SANLOCK_MISSING"
    assert daemon.pid is None
