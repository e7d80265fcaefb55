"""``made_in``: a netlink socket in another network namespace, made by the calling
thread without forking; the thread is back in its own namespace afterwards, also when
the namespace does not exist."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute  # type: ignore[import-untyped]

from zsd.util.netns import made_in

pytestmark = pytest.mark.integration

NS = f"zsdt-nsu{os.getpid() % 10000}"


@pytest.fixture
def namespace() -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(
            ["ip", "-n", NS, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"], check=True
        )
        yield NS
    finally:
        subprocess.run(["ip", "netns", "delete", NS], check=False)


def own_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_the_socket_lives_in_the_namespace_and_the_thread_comes_back(namespace: str) -> None:
    before = own_netns()
    ipr = made_in(namespace, IPRoute)
    try:
        assert own_netns() == before
        assert sorted(str(m.get_attr("IFLA_IFNAME")) for m in ipr.get_links()) == ["lo", "probe0", "probe1"]
    finally:
        ipr.close()
    with IPRoute() as here:
        assert "probe0" not in {str(m.get_attr("IFLA_IFNAME")) for m in here.get_links()}


def test_a_missing_namespace_or_a_failing_make_leaves_the_thread_where_it_was(namespace: str) -> None:
    before = own_netns()
    with pytest.raises(FileNotFoundError):
        made_in(f"{namespace}-none", IPRoute)
    assert own_netns() == before

    def boom() -> None:
        assert own_netns() != before  # made inside
        raise RuntimeError("make failed")

    with pytest.raises(RuntimeError, match="make failed"):
        made_in(namespace, boom)
    assert own_netns() == before
