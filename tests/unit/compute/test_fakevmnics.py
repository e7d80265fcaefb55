"""The fake VM host's NICs refuses as ``LocalVms`` does, and a refusal it is given
changes nothing and is given once."""

from __future__ import annotations

import pytest

from tests.unit.compute.fakevmnics import FakeVmNics
from zsd.errors import AlreadyExists, InvalidArgument, NotFound

MAC = "02:00:00:00:00:01"


async def test_plug_and_unplug_by_mac() -> None:
    host = FakeVmNics({"v1": ("02:00:00:00:00:09",)})
    assert await host.plug("v1", MAC) == ("02:00:00:00:00:09", MAC)
    with pytest.raises(AlreadyExists) as twice:
        await host.plug("v1", MAC)
    assert (twice.value.reason, twice.value.field) == ("NIC_EXISTS", "nic.mac")
    assert await host.unplug("v1", MAC) == ("02:00:00:00:00:09",)
    with pytest.raises(NotFound) as gone:
        await host.unplug("v1", MAC)
    assert (gone.value.reason, gone.value.field) == ("NIC_NOT_FOUND", "mac")
    assert await host.current("v2") == ()
    assert [c[0] for c in host.calls] == ["plug", "plug", "unplug", "unplug"]


async def test_a_refusal_changes_nothing_and_is_given_once() -> None:
    host = FakeVmNics()
    refusal = InvalidArgument("no such bridge", reason="DOMAIN_CONFIG")
    host.refuse = refusal
    with pytest.raises(InvalidArgument) as refused:
        await host.plug("v1", MAC)
    assert refused.value is refusal and await host.current("v1") == ()
    assert await host.plug("v1", MAC) == (MAC,)
    host.refuse = refusal
    with pytest.raises(InvalidArgument):
        await host.unplug("v1", MAC)
    assert await host.current("v1") == (MAC,) and host.refuse is None
