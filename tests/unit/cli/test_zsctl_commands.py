"""zsctl end to end against a real grpc server with fake zsd servicers (see conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .zsctl_fakes import FakeZsd, ServerThread
from .zsctl_runner import TtyStream, zsctl

# -- hosts -----------------------------------------------------------------------------------


def test_host_list_table(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "host", "list")
    assert result.code == 0, result.err
    assert result.out == (
        "NAME         STATE     GOSSIP   LEASE  HYPERVISOR  CPUS  MEMORY   ADDRESS         VERSION  LABELS\n"
        "hosts/node1  ready     alive    live   kvm         8     15.6GiB  192.0.2.1:7443  0.1.0    "
        "rack=r1,zone=a\n"
        "hosts/node2  degraded  suspect  -      qemu        8     8.0GiB   192.0.2.2:7443  0.1.0    -\n"
    )
    assert result.err == ""
    # The fake serves one host per page: zsctl followed the token to the end.
    assert fake.page_tokens == ["", "1"]


def test_host_list_json_is_an_array_of_hosts(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "-o", "json", "host", "list")
    assert result.code == 0, result.err
    hosts = result.json()
    assert isinstance(hosts, list)
    assert [h["name"] for h in hosts] == ["hosts/node1", "hosts/node2"]
    first = hosts[0]
    assert first["state"] == "READY"
    assert first["hypervisor"]["kind"] == "KVM"
    assert first["memory"] == {"total_bytes": "16777216000", "available_bytes": "8388608000"}
    # Zero values are present, in .proto field order.
    assert first["state_reasons"] == []
    assert first["disks"][0] == {
        "name": "vda",
        "size_bytes": "107374182400",
        "rotational": False,
        "model": "QEMU HARDDISK",
        "serial": "",
        "wwid": "",
    }
    assert list(first)[:6] == ["name", "host_id", "uid", "address", "state", "state_reasons"]


def test_output_flag_after_the_verb(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "host", "list", "-o", "json")
    assert result.code == 0
    assert isinstance(result.json(), list)


def test_host_list_yaml_parses_to_the_json_data(zsd_server: ServerThread, fake: FakeZsd) -> None:
    as_yaml = zsctl(zsd_server, "-o", "yaml", "host", "list")
    as_json = zsctl(zsd_server, "-o", "json", "host", "list")
    assert as_yaml.code == 0
    assert yaml.safe_load(as_yaml.out) == as_json.json()


@pytest.mark.parametrize("name", [None, "node1", "hosts/node1", "hosts/-"])
def test_host_show_accepts_short_and_full_names(
    zsd_server: ServerThread, fake: FakeZsd, name: str | None
) -> None:
    result = zsctl(zsd_server, "-o", "json", "host", "show", *([name] if name else []))
    assert result.code == 0, result.err
    assert isinstance(result.json(), dict)
    assert result.json()["name"] == "hosts/node1"


def test_host_show_table(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "host", "show", "node1")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[:5] == [
        "name: hosts/node1",
        "host_id: 1",
        "uid: uid-node1",
        "address: 192.0.2.1:7443",
        "state: ready",
    ]
    assert "hypervisor:" in lines
    assert "  kind: kvm" in lines
    assert "  flags: sse2, avx2, svm" in lines
    assert "  total_bytes: 15.6GiB" in lines
    disks = lines.index("disks:")
    assert lines[disks + 1 : disks + 4] == [
        "  NAME  SIZE      ROTATIONAL  MODEL          SERIAL  WWID",
        "  vda   100.0GiB  no          QEMU HARDDISK  -       -",
        "  sdb   1.8TiB    yes         -              S1      naa.5000",
    ]
    assert "  0   0-7   15.6GiB" in lines  # NUMA cpus collapse into a range
    assert "uptime: 1d2h" in lines
    assert "refresh_time: 2026-11-23T11:55:00Z (5m ago)" in lines
    assert lines[-4:] == ["labels: rack=r1, zone=a", "gossip_state: alive", "lease_state: live", "etag: 5"]


def test_host_json_has_labels_and_state_enums(zsd_server: ServerThread, fake: FakeZsd) -> None:
    host = zsctl(zsd_server, "-o", "json", "host", "show", "node2").json()
    assert {k: host[k] for k in ("labels", "gossip_state", "lease_state", "etag")} == {
        "labels": {},
        "gossip_state": "MEMBER_SUSPECT",
        "lease_state": "LEASE_STATE_UNSPECIFIED",
        "etag": "7",
    }


@pytest.mark.parametrize("verb", ["list", "show"])
def test_consistent_reads_are_asked_for_only_with_the_flag(
    zsd_server: ServerThread, fake: FakeZsd, verb: str
) -> None:
    assert zsctl(zsd_server, "host", verb).code == 0
    assert zsctl(zsd_server, "host", verb, "--consistent").code == 0
    calls = 2 if verb == "list" else 1  # a list takes two pages
    assert [r.consistent for r in fake.reads] == [False] * calls + [True] * calls


def test_unary_calls_have_the_default_or_given_deadline(zsd_server: ServerThread, fake: FakeZsd) -> None:
    assert zsctl(zsd_server, "host", "list").code == 0
    assert zsctl(zsd_server, "--timeout", "4", "host", "list").code == 0
    default, given = fake.deadlines["ListHosts"][0], fake.deadlines["ListHosts"][-1]
    # The deadline travels rounded up a little; "about" is what matters.
    assert default == pytest.approx(30, abs=1)
    assert given == pytest.approx(4, abs=1)


def test_invalid_name_prints_server_message_reason_and_field(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "host", "show", "Bad_Name")
    assert result.code == 1
    assert result.out == ""
    assert result.err == (
        "error: name 'hosts/Bad_Name' is not a host name; use \"hosts/{host}\" with an RFC 1123 label"
        " (reason: INVALID_NAME, field: name)\n"
    )


def test_not_found_without_field(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "-o", "json", "host", "show", "node9")
    assert (result.code, result.out) == (1, "")
    assert result.err == "error: hosts/node9 does not exist (reason: NOT_FOUND)\n"


# -- refresh and operations ------------------------------------------------------------------


def test_host_refresh_waits_with_progress_lines_then_prints_the_host(
    zsd_server: ServerThread, fake: FakeZsd
) -> None:
    result = zsctl(zsd_server, "-o", "json", "host", "refresh", "node1", "--request-id", "r-1")
    assert result.code == 0, result.err
    assert result.json()["name"] == "hosts/node1"
    assert result.err.splitlines() == [
        "operations/refresh-1: pending 0%",
        "operations/refresh-1: running 30% probing KVM",
        "operations/refresh-1: running 70% reading /sys",
        "operations/refresh-1: succeeded 100%",
    ]
    assert fake.request_ids == ["r-1"]


def test_host_refresh_progress_on_a_terminal_rewrites_one_line(
    zsd_server: ServerThread, fake: FakeZsd
) -> None:
    err = TtyStream()
    result = zsctl(zsd_server, "host", "refresh", stderr=err)
    assert result.code == 0
    assert result.out.startswith("name: hosts/node1\n")
    assert "\n" not in result.err
    assert "\r\x1b[Koperations/refresh-1: running 30% probing KVM" in result.err
    assert result.err.endswith("\r\x1b[K")  # the progress line is erased before the result


def test_host_refresh_generates_a_request_id(zsd_server: ServerThread, fake: FakeZsd) -> None:
    assert zsctl(zsd_server, "host", "refresh", "--no-wait").code == 0
    assert zsctl(zsd_server, "host", "refresh", "--no-wait").code == 0
    first, second = fake.request_ids
    assert first and second and first != second


def test_host_refresh_no_wait_prints_the_operation(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "-o", "json", "host", "refresh", "--no-wait", "--request-id", "r-2")
    assert result.code == 0
    assert result.err == ""
    assert result.json() == {
        "name": "operations/refresh-1",
        "metadata": {
            "verb": "RefreshHost",
            "target": "hosts/node1",
            "state": "PENDING",
            "progress_percent": 0,
            "status_message": "",
            "cancel_requested": False,
            "create_time": "2026-11-23T12:00:00Z",
            "host": "hosts/node1",
            "request_id": "r-2",
        },
        "done": False,
    }


def test_failed_operation_exits_1_with_its_error(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "-o", "json", "host", "refresh", "node2")
    assert result.code == 1
    assert result.out == ""
    assert (
        result.err.splitlines()[-1] == "error: KVM probe failed: /dev/kvm is missing (reason: KVM_UNUSABLE)"
    )


def test_operation_wait_prints_the_final_operation(zsd_server: ServerThread, fake: FakeZsd) -> None:
    started = zsctl(zsd_server, "-o", "json", "host", "refresh", "node2", "--no-wait")
    name = started.json()["name"]
    result = zsctl(zsd_server, "-o", "json", "operation", "wait", name.removeprefix("operations/"))
    assert result.code == 1
    operation = result.json()
    assert isinstance(operation, dict)
    assert operation["done"] is True
    assert operation["metadata"]["state"] == "FAILED"
    assert operation["error"]["code"] == 9
    assert operation["error"]["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert operation["error"]["details"][0]["reason"] == "KVM_UNUSABLE"
    assert result.err.endswith("error: KVM probe failed: /dev/kvm is missing (reason: KVM_UNUSABLE)\n")


def test_operation_wait_gives_up_after_timeout_op(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "operation", "wait", "operations/running", "--timeout-op", "0.05")
    assert result.code == 1
    assert result.out == ""
    assert result.err.splitlines()[-1] == (
        "error: operations/running is not done after 0.05s (running 40% probing KVM);"
        " it keeps running: zsctl operation wait operations/running"
    )


def test_operation_list_table(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "operation", "list")
    assert result.code == 0
    assert result.out == (
        "NAME                VERB         TARGET       STATE      PROGRESS  AGE\n"
        "operations/old-ok   RefreshHost  hosts/node1  succeeded  100%      2h\n"
        "operations/running  RefreshHost  hosts/node2  running    40%       30s\n"
    )


@pytest.mark.parametrize(
    ("filters", "names"),
    [
        (["--state", "running"], ["operations/running"]),
        (["--state", "failed"], []),
        (["--target", "hosts/node1"], ["operations/old-ok"]),
        (["--page-size", "5"], ["operations/old-ok", "operations/running"]),
    ],
)
def test_operation_list_filters(
    zsd_server: ServerThread, fake: FakeZsd, filters: list[str], names: list[str]
) -> None:
    result = zsctl(zsd_server, "-o", "json", "operation", "list", *filters)
    assert result.code == 0
    assert [op["name"] for op in result.json()] == names


def test_operation_show_and_cancel(zsd_server: ServerThread, fake: FakeZsd) -> None:
    shown = zsctl(zsd_server, "operation", "show", "old-ok")
    assert shown.code == 0
    assert "response: zsd.v1.Host hosts/node1" in shown.out.splitlines()
    assert "  progress_percent: 100%" in shown.out.splitlines()
    cancelled = zsctl(zsd_server, "-o", "json", "operation", "cancel", "running")
    assert cancelled.code == 0
    assert cancelled.json()["metadata"]["cancel_requested"] is True


def test_operation_response_json_keeps_its_type(zsd_server: ServerThread, fake: FakeZsd) -> None:
    operation = zsctl(zsd_server, "-o", "json", "operation", "show", "old-ok").json()
    assert isinstance(operation, dict)
    response = operation["response"]
    assert list(response)[:2] == ["@type", "name"]
    assert response["@type"] == "type.googleapis.com/zsd.v1.Host"


# -- cluster ---------------------------------------------------------------------------------


def test_cluster_show_json(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "-o", "json", "cluster", "show")
    assert result.code == 0
    assert (
        result.out
        == json.dumps(
            {
                "name": "cluster",
                "display_name": "lab",
                "uid": "c-uid",
                "members": [
                    {"host": "hosts/node1", "host_id": 1, "address": "192.0.2.1:7443", "state": "ALIVE"},
                    {"host": "hosts/node2", "host_id": 2, "address": "192.0.2.2:7443", "state": "SUSPECT"},
                ],
                "leader": {"host": "hosts/node1", "epoch": "3"},
                "revision": "0",
            },
            indent=2,
        )
        + "\n"
    )


def test_cluster_show_table(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "cluster", "show")
    assert result.code == 0
    assert result.out == (
        "name: cluster\n"
        "display_name: lab\n"
        "uid: c-uid\n"
        "members:\n"
        "  HOST         HOST_ID  ADDRESS         STATE\n"
        "  hosts/node1  1        192.0.2.1:7443  alive\n"
        "  hosts/node2  2        192.0.2.2:7443  suspect\n"
        "leader:\n"
        "  host: hosts/node1\n"
        "  epoch: 3\n"
        "revision: 0\n"
    )


# -- endpoints, usage, completion ------------------------------------------------------------


def test_endpoint_from_environment(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(None, "-o", "json", "cluster", "show", env={"ZSD_ENDPOINT": zsd_server.address})
    assert result.code == 0
    assert result.json()["name"] == "cluster"


def test_endpoint_flag_beats_environment(zsd_server: ServerThread, fake: FakeZsd, tmp_path: Path) -> None:
    env = {"ZSD_ENDPOINT": f"unix:{tmp_path}/nothing.sock"}
    assert zsctl(zsd_server, "cluster", "show", env=env).code == 0
    assert zsctl(None, "cluster", "show", env=env).code == 1


def test_unreachable_endpoint_is_named(tmp_path: Path) -> None:
    endpoint = f"unix://{tmp_path}/nothing.sock"
    result = zsctl(None, "--endpoint", endpoint, "host", "list")
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith(f"error: cannot reach zsd at {endpoint}: ")
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["host"],
        ["host", "frob"],
        ["volume", "list"],
        ["-o", "xml", "host", "list"],
        ["--timeout", "0", "host", "list"],
        ["operation", "show"],
        ["operation", "list", "--state", "done"],
        ["operation", "list", "--page-size", "-1"],
        ["--endpoint", "nonsense", "host", "list"],
        ["--endpoint", "example.com:7443", "host", "list"],
        ["--endpoint", "example.com:7443", "--ca", "/nonexistent/ca.pem", "host", "list"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    result = zsctl(None, *argv)
    assert result.code == 2
    assert result.out == ""
    assert "error:" in result.err


def test_help_and_version_exit_0() -> None:
    result = zsctl(None, "--help")
    assert result.code == 0
    assert "exit status:" in result.out
    assert "one object otherwise" in result.out
    version = zsctl(None, "--version")
    assert (version.code, version.out) == (0, "zsctl 0.1.0\n")


def test_completion_bash_names_the_commands() -> None:
    result = zsctl(None, "completion", "bash")
    assert result.code == 0
    for word in ("host", "cluster", "operation", "refresh", "cancel", "--endpoint", "--no-wait"):
        assert word in result.out
    for word in ("label", "remove", "watch", "--etag", "--force", "--from-revision", "--consistent"):
        assert word in result.out
    assert "complete" in result.out


def test_completion_zsh_names_the_new_verbs() -> None:
    result = zsctl(None, "completion", "zsh")
    assert result.code == 0
    for word in ("label", "remove", "watch", "--collection", "--consistent"):
        assert word in result.out


def test_zsctl_imports_only_what_ships_with_it() -> None:
    code = "import sys, zsd.cli.zsctl as z\nz.build_parser()\nprint('\\n'.join(sorted(sys.modules)))\n"
    modules = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    ours = {m for m in modules if m == "zsd" or m.startswith("zsd.")}
    allowed = {"zsd", "zsd.cli", "zsd.v1"}
    assert {m for m in ours if m not in allowed and not m.startswith(("zsd.v1.", "zsd.cli._zsctl"))} == {
        "zsd.cli.zsctl"
    }
    for forbidden in ("trio", "yaml", "shtab", "grpc_status", "psutil"):
        assert forbidden not in modules
