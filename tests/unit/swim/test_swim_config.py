from __future__ import annotations

from dataclasses import replace

import pytest

from zsd.cluster.swim.config import SwimConfig
from zsd.errors import ConfigError


def test_profiles_differ_where_the_networks_differ() -> None:
    lan, local = SwimConfig.lan(), SwimConfig.local()
    assert lan.indirect_checks > local.indirect_checks, "loss on a LAN needs more helpers"
    assert lan.suspicion_mult < local.suspicion_mult, "a shared machine stalls more"
    assert lan.push_pull_interval > local.push_pull_interval


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"probe_interval": 0}, "swim.probe_interval"),
        ({"probe_timeout": 0.5}, "swim.probe_timeout"),
        ({"suspicion_mult": 0}, "swim.suspicion_mult"),
        ({"packet_size": 100}, "swim.packet_size"),
        ({"gossip_nodes": 0}, "swim"),
    ],
)
def test_bad_values_are_refused_naming_the_field(change: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        replace(SwimConfig.lan(), **change)  # type: ignore[arg-type]
    assert info.value.field == field
