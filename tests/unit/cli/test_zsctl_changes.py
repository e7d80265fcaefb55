"""zsctl commands that change the cluster (host label, host remove) or follow its
changes (cluster watch), end to end against the fake server (see conftest.py)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

import grpc
import pytest
import yaml
from google.protobuf import field_mask_pb2

from zsd.v1 import host_pb2, host_pb2_grpc

from .zsctl_fakes import FakeZsd, ServerThread
from .zsctl_runner import zsctl


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def labels_of(fake: FakeZsd, name: str) -> dict[str, str]:
    return next(dict(h.labels) for h in fake.hosts if h.name == name)


# -- host label ------------------------------------------------------------------------------


def test_label_sends_one_mask_path_per_key(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "host", "label", "node1", "rack=r2", "gpu=yes", "zone-", "--request-id", "r-1")
    assert result.code == 0, result.err
    (request,) = fake.updates
    assert request.host.name == "hosts/node1"
    assert list(request.update_mask.paths) == ["labels.rack", "labels.gpu", "labels.zone"]
    # Removed keys are named in the mask and absent from host.labels.
    assert dict(request.host.labels) == {"rack": "r2", "gpu": "yes"}
    assert (request.host.etag, request.request_id) == ("", "r-1")
    assert labels_of(fake, "hosts/node1") == {"rack": "r2", "gpu": "yes"}
    # The updated host, shown like `host show`.
    lines = result.out.splitlines()
    assert lines[0] == "name: hosts/node1"
    assert "labels: gpu=yes, rack=r2" in lines
    assert "etag: 8" in lines
    assert result.err == ""


def test_label_json_prints_the_updated_host(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "-o", "json", "host", "label", "hosts/node2", "note=", "a.b=c=d")
    assert result.code == 0, result.err
    host = result.json()
    # An empty value is a value; only the first "=" separates key from value.
    assert (host["name"], host["labels"], host["etag"]) == ("hosts/node2", {"note": "", "a.b": "c=d"}, "8")
    assert list(fake.updates[0].update_mask.paths) == ["labels.note", "labels.a.b"]


def test_label_generates_a_request_id_per_call(zsd_server: ServerThread, fake: FakeZsd) -> None:
    assert zsctl(zsd_server, "host", "label", "node1", "a=1").code == 0
    assert zsctl(zsd_server, "host", "label", "node1", "a-").code == 0
    first, second = (r.request_id for r in fake.updates)
    assert first != second
    assert str(uuid.UUID(first)) == first


def test_label_with_the_current_etag(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "-o", "json", "host", "label", "node1", "zone-", "--etag", "5")
    assert result.code == 0, result.err
    assert fake.updates[0].host.etag == "5"
    assert result.json()["labels"] == {"rack": "r1"}


def test_label_with_a_stale_etag_fails_with_the_reason(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "host", "label", "node1", "rack=r9", "--etag", "3")
    assert (result.code, result.out) == (1, "")
    assert result.err == "error: hosts/node1 is at revision 5, not 3 (reason: ETAG_MISMATCH, field: etag)\n"
    assert fake.updates[0].host.etag == "3"
    assert labels_of(fake, "hosts/node1") == {"rack": "r1", "zone": "a"}


def test_label_keys_the_server_refuses(zsd_server: ServerThread, fake: FakeZsd) -> None:
    # Which characters a key may hold is the server's rule; zsctl only checks the syntax.
    result = zsctl(zsd_server, "host", "label", "node1", "Rack=x")
    assert result.code == 1
    assert result.err.endswith("(reason: INVALID_ARGUMENT, field: host.labels.Rack)\n")


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ([], "the following arguments are required"),
        (["rack"], "'rack' is neither KEY=VALUE"),
        (["=x"], "'=x' is neither KEY=VALUE"),
        (["-"], "'-' is neither KEY=VALUE"),
        (["rack=a", "rack-"], "label 'rack' is named more than once"),
        (["rack=a", "rack=b"], "label 'rack' is named more than once"),
    ],
)
def test_label_syntax_errors_exit_2_naming_the_argument(
    zsd_server: ServerThread, fake: FakeZsd, changes: list[str], named: str
) -> None:
    result = zsctl(zsd_server, "host", "label", "node1", *changes)
    assert (result.code, result.out) == (2, "")
    assert named in result.err.splitlines()[-1]
    assert result.err.splitlines()[-1].startswith("zsctl host label: error: ")
    assert fake.updates == []


# -- host remove -----------------------------------------------------------------------------


def test_remove_waits_for_the_operation(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "host", "remove", "node2", "--force", "--request-id", "r-1")
    assert result.code == 0, result.err
    assert result.out == "removed hosts/node2\n"
    assert result.err.splitlines() == [
        "operations/remove-1: pending 0%",
        "operations/remove-1: running 50% leaving 1 VM(s) to HA",
        "operations/remove-1: succeeded 100%",
    ]
    (request,) = fake.deletes
    assert (request.name, request.force, request.request_id) == ("hosts/node2", True, "r-1")
    assert [h.name for h in fake.hosts] == ["hosts/node1"]


def test_remove_done_at_once_shows_no_progress(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "host", "remove", "hosts/node1")
    assert (result.code, result.out, result.err) == (0, "removed hosts/node1\n", "")
    (request,) = fake.deletes
    assert request.force is False
    assert str(uuid.UUID(request.request_id)) == request.request_id


def test_remove_json_prints_the_finished_operation(zsd_server: ServerThread, fake: FakeZsd) -> None:
    operation = zsctl(zsd_server, "-o", "json", "host", "remove", "node1").json()
    assert operation["done"] is True
    assert operation["metadata"]["verb"] == "DeleteHost"
    assert operation["metadata"]["target"] == "hosts/node1"
    assert operation["response"] == {"@type": "type.googleapis.com/google.protobuf.Empty"}


def test_remove_no_wait_prints_the_operation(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "-o", "json", "host", "remove", "node2", "--force", "--no-wait")
    assert (result.code, result.err) == (0, "")
    assert result.json()["done"] is False
    assert result.json()["metadata"]["state"] == "PENDING"


def test_remove_refused_while_vms_run(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "host", "remove", "node2")
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        "error: hosts/node2 still runs 1 VM(s) (vms/web1); migrate them away first, or remove with"
        " force (they are then left to HA) (reason: HOST_NOT_EMPTY, field: force)\n"
    )
    assert fake.deletes[0].force is False
    assert len(fake.hosts) == 2


def test_remove_needs_a_name(zsd_server: ServerThread, fake: FakeZsd) -> None:
    result = zsctl(zsd_server, "host", "remove")
    assert result.code == 2
    assert fake.deletes == []


# -- cluster watch ---------------------------------------------------------------------------


def test_watch_from_0_prints_the_current_state_then_how_to_resume(
    zsd_server: ServerThread, fake: FakeZsd
) -> None:
    result = zsctl(zsd_server, "cluster", "watch")
    assert result.code == 0, result.err
    assert result.out == "7 PUT hosts/node1\n7 PUT hosts/node2\n"
    # The fake ends the stream as zsd does when it loses its feed.
    assert result.err == "the server ended the watch; resume with: zsctl cluster watch --from-revision 7\n"
    (request,) = fake.watches
    assert (request.from_revision, list(request.collections)) == (0, [])


def test_watch_prints_each_change_of_each_revision(zsd_server: ServerThread, fake: FakeZsd) -> None:
    assert zsctl(zsd_server, "host", "label", "node1", "gpu=yes").code == 0
    assert zsctl(zsd_server, "host", "remove", "node2", "--force").code == 0
    result = zsctl(zsd_server, "cluster", "watch", "--from-revision", "3", "--collection", "hosts")
    assert result.code == 0, result.err
    assert result.out == "5 PUT hosts/node1\n7 PUT hosts/node2\n8 PUT hosts/node1\n9 DELETE hosts/node2\n"
    assert result.err.endswith("resume with: zsctl cluster watch --from-revision 9 --collection hosts\n")
    assert list(fake.watches[0].collections) == ["hosts"]


def test_watch_json_is_one_document_per_line(zsd_server: ServerThread, fake: FakeZsd) -> None:
    assert zsctl(zsd_server, "host", "label", "node1", "gpu=yes").code == 0
    assert zsctl(zsd_server, "host", "remove", "node2", "--force").code == 0
    result = zsctl(zsd_server, "-o", "json", "cluster", "watch", "--from-revision", "7")
    assert result.code == 0, result.err
    put, delete = (json.loads(line) for line in result.out.splitlines())
    assert put["revision"] == "8"
    (change,) = put["changes"]
    assert (change["type"], change["name"]) == ("PUT", "hosts/node1")
    assert change["host"]["labels"] == {"rack": "r1", "zone": "a", "gpu": "yes"}
    assert delete == {"revision": "9", "changes": [{"type": "DELETE", "name": "hosts/node2"}]}


def test_watch_yaml_is_a_stream_of_documents(zsd_server: ServerThread, fake: FakeZsd) -> None:
    as_yaml = zsctl(zsd_server, "-o", "yaml", "cluster", "watch", "--from-revision", "3")
    as_json = zsctl(zsd_server, "-o", "json", "cluster", "watch", "--from-revision", "3")
    assert as_yaml.out.startswith("---\n")
    documents = list(yaml.safe_load_all(as_yaml.out))
    assert [d["revision"] for d in documents] == ["5", "7"]
    assert documents == [json.loads(line) for line in as_json.out.splitlines()]


def test_watch_has_no_deadline_unless_one_is_given(zsd_server: ServerThread, fake: FakeZsd) -> None:
    assert zsctl(zsd_server, "cluster", "watch").code == 0
    fake.watch_follows = True
    started = time.monotonic()
    result = zsctl(zsd_server, "--timeout", "0.3", "cluster", "watch")
    assert time.monotonic() - started < 5
    # Reaching the deadline the user asked for ends the watch normally.
    assert (result.code, result.out) == (0, "7 PUT hosts/node1\n7 PUT hosts/node2\n")
    assert result.err == "watched for 0.3s (--timeout); resume with: zsctl cluster watch --from-revision 7\n"
    unbounded, bounded = fake.deadlines["Watch"]
    assert unbounded is None
    assert bounded == pytest.approx(0.3, abs=0.2)


def test_watch_follows_changes_as_they_commit(zsd_server: ServerThread, fake: FakeZsd) -> None:
    fake.watch_follows = True
    out = io.StringIO()
    watch = threading.Thread(
        target=zsctl,
        args=(zsd_server, "--timeout", "20", "cluster", "watch", "--from-revision", "7"),
        kwargs={"stdout": out},
    )
    watch.start()
    try:
        eventually(lambda: len(fake.watches) == 1)
        assert zsctl(zsd_server, "host", "label", "node2", "gpu=yes").code == 0
        eventually(lambda: "8 PUT hosts/node2\n" in out.getvalue())
    finally:
        fake.watch_follows = False  # the fake ends the stream: the watch returns
        watch.join(10)
    assert not watch.is_alive()
    assert out.getvalue() == "8 PUT hosts/node2\n"


def test_watch_errors_like_other_commands(zsd_server: ServerThread, fake: FakeZsd) -> None:
    compacted = zsctl(zsd_server, "cluster", "watch", "--from-revision", "1")
    assert (compacted.code, compacted.out) == (1, "")
    assert compacted.err == (
        "error: revision 1 is compacted; list again and watch from its revision"
        " (reason: REVISION_COMPACTED, field: from_revision)\n"
    )
    unknown = zsctl(zsd_server, "cluster", "watch", "--collection", "vms")
    assert unknown.code == 1
    assert unknown.err.endswith("(reason: INVALID_ARGUMENT, field: collections)\n")


@pytest.mark.parametrize("revision", ["-1", "x", "1.5"])
def test_watch_revision_must_be_a_whole_number(revision: str) -> None:
    result = zsctl(None, "cluster", "watch", "--from-revision", revision)
    assert result.code == 2
    assert "not a revision" in result.err


def test_ctrl_c_ends_a_watch_with_130_and_how_to_resume(zsd_server: ServerThread, fake: FakeZsd) -> None:
    fake.watch_follows = True
    process = subprocess.Popen(
        [sys.executable, "-m", "zsd.cli.zsctl", "--endpoint", zsd_server.address, "cluster", "watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert process.stdout is not None
        # Each change is flushed as it comes, even into a pipe.
        assert [process.stdout.readline(), process.stdout.readline()] == [
            "7 PUT hosts/node1\n",
            "7 PUT hosts/node2\n",
        ]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (process.returncode, out) == (130, "")
    # A revision counts as received once printed, so a signal landing between the print
    # and the bookkeeping points back to the start: seen twice, never skipped.
    assert err in (
        "interrupted: resume with: zsctl cluster watch --from-revision 7\n",
        "interrupted: resume with: zsctl cluster watch\n",
    )


# -- the fake itself -------------------------------------------------------------------------


def test_fake_update_host_replaces_all_labels_or_refuses_other_paths(
    zsd_server: ServerThread, fake: FakeZsd
) -> None:
    with grpc.insecure_channel(zsd_server.address) as channel:
        hosts = host_pb2_grpc.HostServiceStub(channel)
        replaced = hosts.UpdateHost(
            host_pb2.UpdateHostRequest(
                host=host_pb2.Host(name="hosts/node1", labels={"only": "this"}),
                update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
            ),
            timeout=5,
        )
        assert dict(replaced.labels) == {"only": "this"}
        with pytest.raises(grpc.RpcError) as raised:
            hosts.UpdateHost(
                host_pb2.UpdateHostRequest(
                    host=host_pb2.Host(name="hosts/node1"),
                    update_mask=field_mask_pb2.FieldMask(paths=["address"]),
                ),
                timeout=5,
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fake.revision == 8
    assert fake.log[-1].changes[0].host.labels == {"only": "this"}
