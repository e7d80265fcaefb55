"""zsctl's storage nouns against a real zsd: the flow an operator types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.storagekit import MiB, make_image
from tests.integration.zsdproc import ZsdProcess, start_zsd, zsctl

pytestmark = pytest.mark.integration


@pytest.fixture
def zsd(tmp_path: Path) -> Iterator[ZsdProcess]:
    proc = start_zsd(tmp_path / "root", "--set", "hypervisor.kind=qemu", "--set", "host.name=cli-host")
    try:
        proc.wait_for("READY=1")
        yield proc
    finally:
        proc.stop()


def ok(zsd: ZsdProcess, *args: str) -> str:
    done = zsctl(zsd.endpoint, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pool_image_volume_snapshot_flow(zsd: ZsdProcess, tmp_path: Path) -> None:
    table = ok(zsd, "pool", "list")
    assert table.splitlines()[0].split() == [
        "NAME",
        "KIND",
        "STATE",
        "SIZE",
        "USED",
        "FREE",
        "PROVISIONED",
        "OVERCOMMIT",
        "PATH",
    ]
    assert table.splitlines()[1].split()[:3] == ["default", "local_dir", "active"]
    extra = tmp_path / "fast"
    pool = json.loads(
        ok(zsd, "-o", "json", "pool", "create", "fast", "--kind", "local-dir", "--path", str(extra))
    )
    assert (pool["name"], pool["state"], pool["max_overcommit"]) == ("pools/fast", "ACTIVE", 20.0)
    host = json.loads(ok(zsd, "-o", "json", "host", "show"))
    assert [(p["pool"], p["state"]) for p in host["pools"]] == [
        ("pools/default", "ACTIVE"),
        ("pools/fast", "ACTIVE"),
    ]

    src = make_image(tmp_path / "cirros.qcow2", 16 * MiB)
    image = json.loads(
        ok(zsd, "-o", "json", "image", "import", "fast/cirros", "--path", str(src), "--format", "qcow2")
    )
    assert (image["name"], image["format"]) == ("pools/fast/images/cirros", "QCOW2")

    vol = json.loads(
        ok(
            zsd,
            "-o",
            "json",
            "volume",
            "create",
            "fast/web",
            "--image",
            "fast/cirros",
            "--size",
            "32M",
            "--qos",
            "read_iops=100",
            "read_iops_max=400",
            "burst_seconds=10",
        )
    )
    assert (vol["size_bytes"], vol["linked"], vol["qos"]["read_iops_max"]) == (str(32 * MiB), True, "400")
    ok(zsd, "snapshot", "create", "fast/web@s1")
    ok(zsd, "snapshot", "create", "fast/web@s2")
    ok(zsd, "snapshot", "revert", "fast/web@s1")
    ok(zsd, "snapshot", "create", "fast/web@s3")
    tree = ok(zsd, "snapshot", "list", "fast/web").splitlines()
    assert [line.split()[0] for line in tree[1:]] == ["s1", "s2", "*"]  # s2 and s3 both under s1
    assert tree[3].lstrip().startswith("* s3") and tree[2].startswith("  s2")

    clone = json.loads(ok(zsd, "-o", "json", "volume", "create", "fast/copy", "--from", "fast/web@s1"))
    assert clone["linked"] is True and clone["snapshot_count"] == 0
    ok(zsd, "snapshot", "delete", "fast/web@s1")
    ok(zsd, "volume", "flatten", "fast/web")
    ok(zsd, "volume", "resize", "fast/web", "64M")
    listing = ok(zsd, "volume", "list", "--pool", "fast").splitlines()
    assert listing[0].split() == ["NAME", "SIZE", "ALLOCATED", "LINKED", "IMAGE", "SNAPSHOTS", "ATTACHED"]
    assert [line.split()[0] for line in listing[1:]] == ["fast/copy", "fast/web"]
    web = json.loads(ok(zsd, "-o", "json", "volume", "show", "fast/web"))
    assert (web["size_bytes"], web["linked"], web["snapshot_count"]) == (str(64 * MiB), False, 2)

    busy = zsctl(zsd.endpoint, "pool", "delete", "fast")
    assert busy.returncode == 1 and "POOL_NOT_EMPTY" in busy.stderr
    for name in ("fast/copy", "fast/web"):
        ok(zsd, "volume", "delete", name)
    ok(zsd, "image", "delete", "fast/cirros")
    ok(zsd, "pool", "delete", "fast")
    assert "fast" not in ok(zsd, "pool", "list")


def test_errors_name_the_field(zsd: ZsdProcess) -> None:
    bad = zsctl(zsd.endpoint, "volume", "create", "default/x", "--size", "1000")
    assert bad.returncode == 1 and "field: volume.size_bytes" in bad.stderr and "Traceback" not in bad.stderr
    bad = zsctl(zsd.endpoint, "image", "import", "default/x", "--url", "ftp://example.org/x.img")
    assert bad.returncode == 1 and "field: source.url" in bad.stderr
    usage = zsctl(zsd.endpoint, "volume", "create", "default/x", "--size", "lots")
    assert usage.returncode == 2 and "not a size" in usage.stderr
    assert ok(zsd, "volume", "list", "--pool", "default").splitlines()[1:] == []
