"""Fixtures: one fake zsd server per session, reset for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .zsctl_fakes import FakeZsd, ServerThread


@pytest.fixture(scope="session")
def zsd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    # Unix socket paths are limited to ~107 bytes; the session temp dir keeps it short.
    address = f"unix:{tmp_path_factory.mktemp('zsctl')}/zsd.sock"
    server = ServerThread(FakeZsd(), address)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake(zsd_server: ServerThread) -> FakeZsd:
    """The server's fake, reset to its canned state for this test."""
    zsd_server.fake.reset()
    return zsd_server.fake
