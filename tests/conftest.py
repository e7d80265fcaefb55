"""Suite-wide fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# sanlock 3.8.5 always opens this log (the path is compiled in), even with -l 0.
_SANLOCK_LOG = Path("/var/log/sanlock.log")


@pytest.fixture(autouse=True, scope="session")
def _leave_no_sanlock_log() -> Iterator[None]:
    """Tests leave nothing behind: remove the log the test sanlock daemons create,
    unless it was there before (a real sanlock.service's)."""
    existed = _SANLOCK_LOG.exists()
    yield
    if not existed:
        _SANLOCK_LOG.unlink(missing_ok=True)
