"""VMs on a two-host dev cluster: each host in its own network namespace with its
own sanlock, zsd and private libvirtd. The leader places VMs (spread), the chosen
host creates them, and any host answers for any VM (calls forwarded to the VM's
host, its operations found there); a VM that fits nowhere is refused with every
host's reason."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.compute.clusterkit import MARK, Console, PrivateLibvirtds, data, eventually, ok
from tests.integration.zsdproc import zsctl
from zsd.testing.devcluster import DevCluster

pytestmark = pytest.mark.integration


def test_placement_routing_and_refusal(
    cluster: tuple[DevCluster, PrivateLibvirtds], guest_image: Path, tmp_path: Path
) -> None:
    dc, _ = cluster
    share = tmp_path / "share"
    share.mkdir()  # the "mounted" shared filesystem: one directory every host sees
    ok(dc, "h1", "pool", "create", "shared", "--kind", "shared-fs", "--path", str(share))

    def active_everywhere() -> bool:
        pool = data(dc, "h2", "pool", "show", "shared")
        return sorted((h["host"], h["state"]) for h in pool.get("hosts", [])) == [
            ("hosts/h1", "ACTIVE"),
            ("hosts/h2", "ACTIVE"),
        ]

    eventually(active_everywhere)
    ok(dc, "h1", "image", "import", "shared/guest", "--path", str(guest_image), "--format", "qcow2")

    # Spread: the second VM goes to the host the first one did not take.
    first = data(
        dc, "h1", "vm", "create", "a1", "--image", "shared/guest", "--memory", "128M", "--graphics", "none"
    )
    second = data(
        dc, "h1", "vm", "create", "a2", "--image", "shared/guest", "--memory", "128M", "--graphics", "none"
    )
    assert first["state"] == second["state"] == "RUNNING"
    assert {first["host"], second["host"]} == {"hosts/h1", "hosts/h2"}
    on_h2 = first if first["host"] == "hosts/h2" else second
    name = on_h2["name"].removeprefix("vms/")

    # Any host answers for any VM: show and console of h2's VM through h1.
    shown = data(dc, "h1", "vm", "show", name)
    assert (shown["host"], shown["state"], shown["uid"]) == ("hosts/h2", "RUNNING", on_h2["uid"])
    eventually(lambda: MARK + "booted" in ok(dc, "h1", "vm", "console", name), timeout=120)
    listed = data(dc, "h2", "vm", "list")
    assert sorted((v["name"], v["host"]) for v in listed) == sorted(
        [(first["name"], first["host"]), (second["name"], second["host"])]
    )
    # Both hosts report their VMs in their Host (the cluster's view of capacity).
    hosts = {h["name"]: h for h in data(dc, "h1", "host", "list")}
    assert [v["vm"] for v in hosts["hosts/h2"].get("vms", [])] == [on_h2["name"]]

    # A name is the cluster's: the same VM name is refused whichever host is asked.
    done = zsctl(dc.host("h2").endpoint_unix, "vm", "create", "a1", "--no-start", timeout=60)
    assert done.returncode != 0 and "VM_EXISTS" in done.stderr

    # Fits nowhere: refused with each host's reason, nothing created.
    done = zsctl(dc.host("h2").endpoint_unix, "vm", "create", "huge", "--memory", "4000G", timeout=60)
    assert done.returncode != 0
    assert "NO_VALID_HOST" in done.stderr and "h1:" in done.stderr and "h2:" in done.stderr
    assert "huge" not in ok(dc, "h1", "vm", "list")

    # Live migration h2 -> h1, asked through h2: the same guest (no new boot) keeps
    # running and is managed on h1 afterwards (a hot-plug there reaches it). The
    # libvirtds listen only with TLS (the cluster's certificates): the move can only
    # have gone over it.
    for host in dc.hosts:
        listening = subprocess.run(
            ["ip", "netns", "exec", host.netns, "ss", "-Hltn"], capture_output=True, text=True, check=True
        ).stdout
        assert f"{host.address}:16514" in listening and ":16509" not in listening, listening
    console = Console(dc, "h1", name)
    console.expect("ready")
    moved = data(dc, "h2", "vm", "migrate", name)  # no --to: the only other host
    assert moved["host"] == "hosts/h1"
    after = data(dc, "h2", "vm", "show", name)
    assert (after["host"], after["state"], after["uid"]) == ("hosts/h1", "RUNNING", on_h2["uid"])
    ok(dc, "h1", "volume", "create", "shared/extra", "--size", "16M")
    ok(dc, "h2", "vm", "attach-disk", name, "shared/extra")
    # The console log on h1 starts at the move (the history before it stays on h2).
    Console(dc, "h2", name).expect("disk+ vdb")
    assert MARK + "booted" not in ok(dc, "h1", "vm", "console", name), "the guest must not have rebooted"
    refused = zsctl(dc.host("h1").endpoint_unix, "vm", "migrate", name, "--to", "h1", timeout=60)
    assert refused.returncode != 0 and "SAME_HOST" in refused.stderr
    ok(dc, "h1", "vm", "detach-disk", name, "shared/extra")

    # Maintenance: h1 takes nothing new, and evacuation moves its VMs to h2.
    ok(dc, "h2", "host", "label", "h1", "maintenance=true")
    placed = data(
        dc, "h1", "vm", "create", "a3", "--image", "shared/guest", "--memory", "64M", "--graphics", "none"
    )
    assert placed["host"] == "hosts/h2"
    result = data(dc, "h2", "vm", "evacuate", "h1")
    assert result.get("left", {}) == {} and set(result["moved"].values()) == {"hosts/h2"}
    assert {v["host"] for v in data(dc, "h1", "vm", "list")} == {"hosts/h2"}
    ok(dc, "h2", "host", "label", "h1", "maintenance-")
    stopped = data(dc, "h1", "vm", "stop", "a3", "--force")
    assert stopped["state"] == "STOPPED"
    ok(dc, "h1", "vm", "delete", "a3", "--volumes")

    # Stop and delete through the other host; the name is free again at once.
    stopped = data(dc, "h1", "vm", "stop", name, "--force")
    assert stopped["state"] == "STOPPED"
    ok(dc, "h1", "vm", "delete", name, "--volumes")
    assert [v["name"] for v in data(dc, "h2", "vm", "list")] == [
        (second if on_h2 is first else first)["name"]
    ]
    volumes = [v["name"] for v in data(dc, "h1", "volume", "list", "--pool", "shared")]
    assert f"pools/shared/volumes/{name}-root" not in volumes
