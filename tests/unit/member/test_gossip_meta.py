"""A host's gossip metadata carries its labels only as far as they fit a packet."""

from __future__ import annotations

from zsd.cluster.swim.codec import MAX_META_SIZE, encode_meta
from zsd.cluster.swim.member import HostMeta
from zsd.daemon import _fitting


def test_small_labels_ride_along_whole() -> None:
    meta = HostMeta(host_id=1, labels=(("rack", "r1"), ("zone", "a")), leader="h1")
    assert _fitting(meta) == meta


def test_labels_are_cut_to_fit_the_packet() -> None:
    labels = tuple((f"key{i:03d}", "v" * 40) for i in range(256))
    fitted = _fitting(HostMeta(host_id=1, labels=labels, leader="h1", version="1.0"))
    assert 0 < len(fitted.labels) < 256
    assert fitted.labels == labels[: len(fitted.labels)]
    assert len(encode_meta(fitted)) <= MAX_META_SIZE
    assert (fitted.leader, fitted.version) == ("h1", "1.0")
