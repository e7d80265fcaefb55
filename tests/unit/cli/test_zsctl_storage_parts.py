"""zsctl's storage argument types, short names and the snapshot tree."""

from __future__ import annotations

import argparse
import datetime

import pytest
from google.protobuf import timestamp_pb2

from zsd.cli._zsctl_commands import CommandError
from zsd.cli._zsctl_storage_commands import (
    QOS_KEYS,
    child_name,
    qos_setting,
    size,
    snapshot_name,
    snapshot_rows,
    volume_rows,
)
from zsd.cli.zsctl import build_parser
from zsd.v1 import storage_pb2


@pytest.mark.parametrize(
    ("text", "value"),
    [("512", 512), ("10G", 10 << 30), ("10GiB", 10 << 30), ("1m", 1 << 20), ("2 T", 2 << 40)],
)
def test_sizes(text: str, value: int) -> None:
    assert size(text) == value


@pytest.mark.parametrize("text", ["", "1.5G", "-1", "10X", "G"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        size(text)


def test_qos_settings() -> None:
    assert qos_setting("read_bytes_per_sec=10M") == ("read_bytes_per_sec", 10 << 20)
    assert qos_setting("total_iops=500") == ("total_iops", 500)
    with pytest.raises(argparse.ArgumentTypeError) as e:
        qos_setting("iops=5")
    assert all(k in str(e.value) for k in QOS_KEYS)
    with pytest.raises(argparse.ArgumentTypeError):
        qos_setting("total_iops=5k")  # a count, not a size


def test_short_names() -> None:
    assert child_name("default/web", "volumes") == "pools/default/volumes/web"
    assert child_name("pools/a/volumes/b", "volumes") == "pools/a/volumes/b"
    assert snapshot_name("default/web@before") == "pools/default/volumes/web/snapshots/before"
    for bad in ("web", "a/b/c", "/x"):
        with pytest.raises(CommandError):
            child_name(bad, "volumes")
    with pytest.raises(CommandError):
        snapshot_name("default/web")


def test_the_parser_takes_storage_commands() -> None:
    args = build_parser().parse_args(
        [
            "volume",
            "create",
            "default/web",
            "--image",
            "default/cirros",
            "--qos",
            "total_iops=10",
            "--no-wait",
        ]
    )
    assert (args.noun, args.verb, args.image, args.qos, args.no_wait) == (
        "volume",
        "create",
        "default/cirros",
        [("total_iops", 10)],
        True,
    )


def snap(name: str, parent: str, second: int, current: bool = False) -> storage_pb2.Snapshot:
    base = "pools/p/volumes/v/snapshots/"
    return storage_pb2.Snapshot(
        name=base + name,
        parent=base + parent if parent else "",
        create_time=timestamp_pb2.Timestamp(seconds=1_700_000_000 + second),
        size_bytes=1 << 20,
        current=current,
    )


def test_snapshot_tree_rows() -> None:
    rows = snapshot_rows([snap("s3", "s1", 3, current=True), snap("s1", "", 1), snap("s2", "s1", 2)])
    assert [r[0] for r in rows] == ["s1", "  s2", "  * s3"]
    assert rows[0][1] == datetime.datetime.fromtimestamp(1_700_000_001, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    assert rows[2][3] == "yes" and rows[0][2] == "1.0MiB"


def test_volume_rows() -> None:
    vol = storage_pb2.Volume(
        name="pools/p/volumes/v",
        size_bytes=1 << 30,
        allocated_bytes=0,
        linked=True,
        image="pools/p/images/i",
        snapshot_count=2,
        attached_to=["vms/a"],
    )
    assert volume_rows([vol]) == [["p/v", "1.0GiB", "0B", "yes", "p/i", "2", "vms/a"]]
