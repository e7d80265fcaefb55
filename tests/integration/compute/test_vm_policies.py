"""Scheduling policies on a two-host dev cluster: created and read through either
host, checked against each other and against where their groups' VMs run, and kept
by the leader's placement, by parallel creates, and by migration to a named host.
The VMs are defined without starting (placement does not depend on running them)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.compute.clusterkit import PrivateLibvirtds, data, ok, wait_reported
from tests.integration.zsdproc import zsctl
from zsd.testing.devcluster import DevCluster

pytestmark = pytest.mark.integration


def refused(dc: DevCluster, host: str, *args: str) -> str:
    done = zsctl(dc.host(host).endpoint_unix, *args, timeout=120)
    assert done.returncode != 0, f"zsctl on {host} {' '.join(args)} should have failed: {done.stdout}"
    return done.stderr


def create(dc: DevCluster, host: str, vm: str, group: str) -> subprocess.CompletedProcess[str]:
    return zsctl(
        dc.host(host).endpoint_unix,
        "-o", "json", "vm", "create", vm, "--group", group, "--memory", "64M", "--no-start",
        timeout=120,
    )  # fmt: skip


def host_of(dc: DevCluster, vm: str) -> str:
    return str(data(dc, "h1", "vm", "show", vm)["host"]).removeprefix("hosts/")


def test_policies_are_checked_and_kept(cluster: tuple[DevCluster, PrivateLibvirtds]) -> None:
    dc, _ = cluster
    wait_reported(dc)

    # Mandatory vm-exclusive: parallel creates through both hosts never share a host;
    # with two hosts the third VM is refused, naming the policy for each host.
    made = data(dc, "h2", "policy", "create", "spread", "vm-exclusive", "--group", "web")
    assert (made["name"], made["kind"], made["mode"]) == (
        "schedulingPolicies/spread",
        "VM_EXCLUSIVE",
        "MANDATORY",
    )
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda i: create(dc, f"h{i % 2 + 1}", f"w{i}", "web"), range(3)))
    placed = [r for r in results if r.returncode == 0]
    failed = [r for r in results if r.returncode != 0]
    assert len(placed) == 2 and len(failed) == 1, [r.stderr for r in results]
    assert "NO_VALID_HOST" in failed[0].stderr
    assert failed[0].stderr.count("policy 'spread' (vm-exclusive, mandatory)") >= 1
    hosts = sorted(host_of(dc, vm) for vm in ("w0", "w1", "w2") if vm in ok(dc, "h1", "vm", "list"))
    assert hosts == ["h1", "h2"]
    shown = data(dc, "h1", "policy", "show", "spread")
    assert len(shown["vms"]) == 2 and not shown.get("violations")

    # One policy per group; a mandatory rule the group's VMs already break is refused,
    # naming the VMs; nothing is written either time.
    assert "POLICY_CONFLICT" in refused(
        dc, "h1", "policy", "create", "pair", "vm-aggregate", "--group", "web"
    )
    ok(dc, "h1", "policy", "delete", "spread")
    conflict = refused(dc, "h2", "policy", "create", "pair", "vm-aggregate", "--group", "web")
    assert "POLICY_CONFLICT" in conflict and "apart from the rest" in conflict
    # Preferred, the same rule is accepted and shows where the group strays.
    pair = data(dc, "h2", "policy", "create", "pair", "vm-aggregate", "--group", "web", "--mode", "preferred")
    assert len(pair["violations"]) == 2

    # Bad input names the field.
    assert "policy.host_group" in refused(
        dc, "h1", "policy", "create", "fast", "host-affinity", "--group", "db", "--hosts", "h9"
    )
    assert "policy.host_group" in refused(
        dc, "h1", "policy", "create", "fast", "host-affinity", "--group", "db"
    )
    assert "POLICY_EXISTS" in refused(
        dc, "h1", "policy", "create", "pair", "vm-exclusive", "--group", "other"
    )

    # Mandatory host affinity: every VM of the group lands on h2, and a migration to
    # h1 is refused with the policy's reason.
    ok(dc, "h1", "policy", "create", "fast", "host-affinity", "--group", "db", "--hosts", "h2")
    for vm in ("d1", "d2", "d3"):
        assert create(dc, "h1", vm, "db").returncode == 0
        assert host_of(dc, vm) == "h2"
    assert "not in its host group" in refused(dc, "h1", "vm", "migrate", "d1", "--to", "h1")
    # A second policy for the same group is a conflict.
    assert "POLICY_CONFLICT" in refused(
        dc, "h1", "policy", "create", "not-h2", "host-exclusion", "--group", "db", "--hosts", "h2"
    )

    listed = data(dc, "h1", "policy", "list")
    assert [p["name"] for p in listed] == ["schedulingPolicies/fast", "schedulingPolicies/pair"]
    ok(dc, "h2", "policy", "delete", "fast")
    assert "POLICY_NOT_FOUND" in refused(dc, "h1", "policy", "show", "fast")
    assert "POLICY_NOT_FOUND" in refused(dc, "h1", "policy", "delete", "fast")
    # Without the policy the migration goes through.
    moved = data(dc, "h1", "vm", "migrate", "d1", "--to", "h1")
    assert moved["host"] == "hosts/h1"
