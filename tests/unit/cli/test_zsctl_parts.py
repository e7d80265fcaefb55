"""zsctl's pieces on their own: endpoints, error decoding, formatters, the wait loop."""

from __future__ import annotations

import argparse
import dataclasses
import io
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from zsd.cli._zsctl_commands import (
    Api,
    CommandError,
    Console,
    cmd_cluster_watch,
    cmd_operation_wait,
    collect_pages,
    resource_name,
)
from zsd.cli._zsctl_endpoint import (
    DEFAULT_ENDPOINT,
    ConnectOptions,
    Endpoint,
    EndpointError,
    Tls,
    resolve_endpoint,
)
from zsd.cli._zsctl_errors import ApiError, decode_rpc_error, decode_status
from zsd.cli._zsctl_output import (
    change_lines,
    enum_label,
    human_age,
    human_bytes,
    human_duration,
    labels_label,
    render_data,
    render_show,
    render_stream_item,
    render_table,
)
from zsd.cli._zsctl_wait import ProgressReporter, WaitTimeout, progress_line, wait_operation
from zsd.cli.zsctl import main, run_command
from zsd.v1 import cluster_pb2, host_pb2, operation_pb2

from .zsctl_fakes import NOW

# -- endpoint resolution ---------------------------------------------------------------------


def test_default_endpoint_is_the_local_socket() -> None:
    endpoint = resolve_endpoint(ConnectOptions(), {})
    assert endpoint == Endpoint(display=DEFAULT_ENDPOINT, target="unix:/run/zsd/zsd.sock", unix=True)


def test_environment_beats_default_and_flag_beats_environment() -> None:
    env = {"ZSD_ENDPOINT": "unix:/tmp/env.sock"}
    assert resolve_endpoint(ConnectOptions(), env).target == "unix:/tmp/env.sock"
    assert (
        resolve_endpoint(ConnectOptions(endpoint="unix:///tmp/flag.sock"), env).target
        == "unix:/tmp/flag.sock"
    )


def test_tcp_needs_tls_or_insecure() -> None:
    with pytest.raises(EndpointError, match="needs TLS"):
        resolve_endpoint(ConnectOptions(endpoint="node1:7443"), {})
    plain = resolve_endpoint(ConnectOptions(endpoint="node1:7443", insecure=True), {})
    assert (plain.target, plain.unix, plain.tls) == ("node1:7443", False, None)


def test_tls_settings_from_flags_and_environment() -> None:
    env = {
        "ZSD_ENDPOINT": "[2001:db8::1]:7443",
        "ZSD_CA": "/env/ca.pem",
        "ZSD_CERT": "/env/c.pem",
        "ZSD_KEY": "/env/k.pem",
    }
    assert resolve_endpoint(ConnectOptions(), env).tls == Tls(
        ca="/env/ca.pem", cert="/env/c.pem", key="/env/k.pem"
    )
    flags = ConnectOptions(ca="/flag/ca.pem", cert="/flag/c.pem", key="/flag/k.pem", server_name="node1")
    assert resolve_endpoint(flags, env).tls == Tls(
        ca="/flag/ca.pem", cert="/flag/c.pem", key="/flag/k.pem", server_name="node1"
    )


def test_tls_settings_are_ignored_for_unix_sockets() -> None:
    endpoint = resolve_endpoint(ConnectOptions(endpoint="unix:/tmp/s.sock"), {"ZSD_CA": "/ca.pem"})
    assert endpoint.tls is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ConnectOptions(endpoint="node1:7443", ca="/ca", cert="/c"), "both --cert and --key"),
        (ConnectOptions(endpoint="node1:7443", cert="/c", key="/k", insecure=True), "need --ca"),
        (ConnectOptions(endpoint="node1"), "use host:port"),
        (ConnectOptions(endpoint="node1:http"), "use host:port"),
        (ConnectOptions(endpoint="node1:70000"), "use host:port"),
        (ConnectOptions(endpoint="2001:db8::1:7443"), "use host:port"),
        (ConnectOptions(endpoint="unix://relative/x.sock"), "unix:///absolute/path"),
        (ConnectOptions(endpoint="unix:"), "path is empty"),
    ],
)
def test_bad_endpoints(options: ConnectOptions, message: str) -> None:
    with pytest.raises(EndpointError, match=message):
        resolve_endpoint(options, {})


# -- error decoding --------------------------------------------------------------------------


def status_with(*details: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> status_pb2.Status:
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad page_size")
    for detail in details:
        status.details.add().Pack(detail)
    return status


def test_error_info_gives_reason_and_field() -> None:
    info = error_details_pb2.ErrorInfo(reason="OUT_OF_RANGE", metadata={"field": "page_size"})
    decoded = decode_status(status_with(info))
    assert decoded == ApiError(
        code="INVALID_ARGUMENT", message="bad page_size", reason="OUT_OF_RANGE", field="page_size"
    )
    assert decoded.line() == "error: bad page_size (reason: OUT_OF_RANGE, field: page_size)"


def test_bad_request_supplies_the_field_when_error_info_has_none() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="read_mask.paths", description="x")
        ]
    )
    decoded = decode_status(status_with(error_details_pb2.ErrorInfo(reason="UNKNOWN_FIELD"), bad))
    assert decoded.line() == "error: bad page_size (reason: UNKNOWN_FIELD, field: read_mask.paths)"


def test_status_without_details_shows_the_code() -> None:
    assert decode_status(status_pb2.Status(code=code_pb2.INTERNAL, message="boom")).line() == (
        "error: boom (code: INTERNAL)"
    )


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, bytes], ...]) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:  # type: ignore[override]
        return self._trailers


def test_rpc_error_with_and_without_status_details() -> None:
    status = status_with(error_details_pb2.ErrorInfo(reason="OUT_OF_RANGE", metadata={"field": "page_size"}))
    rich = FakeRpcError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad page_size",
        (("grpc-status-details-bin", status.SerializeToString()),),
    )
    assert decode_rpc_error(rich) == (
        ApiError(code="INVALID_ARGUMENT", message="bad page_size", reason="OUT_OF_RANGE", field="page_size"),
        True,
    )
    bare = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", ())
    assert decode_rpc_error(bare) == (
        ApiError(code="UNAVAILABLE", message="failed to connect to all addresses"),
        False,
    )


# -- formatters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0B"), (1023, "1023B"), (1024, "1.0KiB"), (16777216000, "15.6GiB"), (2000398934016, "1.8TiB")],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (2.5, "2.5s"), (59, "59s"), (61, "1m1s"), (3600, "1h"), (93784, "1d2h")]
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(-3, "0s"), (5, "5s"), (180, "3m"), (7300, "2h"), (4 * 86400, "4d")]
)
def test_human_age(seconds: float, text: str) -> None:
    assert human_age(seconds) == text


def test_enum_labels_drop_prefixes_and_unspecified() -> None:
    assert enum_label(host_pb2.Host.State.DESCRIPTOR, host_pb2.Host.READY) == "ready"
    assert enum_label(host_pb2.HypervisorKind.DESCRIPTOR, host_pb2.KVM) == "kvm"
    assert enum_label(host_pb2.HypervisorKind.DESCRIPTOR, 0) == "-"
    assert enum_label(cluster_pb2.ClusterMember.State.DESCRIPTOR, 0) == "-"
    assert enum_label(host_pb2.Host.State.DESCRIPTOR, 42) == "42"
    # Values that repeat a shared word instead of the enum's name lose it too.
    assert enum_label(host_pb2.MemberState.DESCRIPTOR, host_pb2.MEMBER_SUSPECT) == "suspect"
    assert enum_label(host_pb2.LeaseState.DESCRIPTOR, host_pb2.LEASE_UNKNOWN) == "unknown"
    assert enum_label(host_pb2.LeaseState.DESCRIPTOR, 0) == "-"


def test_labels_and_watched_changes_on_one_line() -> None:
    assert labels_label({"zone": "a", "rack": "r1"}) == "rack=r1,zone=a"
    assert labels_label({}) == "-"
    response = cluster_pb2.WatchResponse(
        revision=12,
        changes=[
            cluster_pb2.ResourceChange(type=cluster_pb2.ResourceChange.PUT, name="hosts/h1"),
            cluster_pb2.ResourceChange(type=cluster_pb2.ResourceChange.DELETE, name="hosts/h2"),
            cluster_pb2.ResourceChange(type=7, name="hosts/h3"),  # type: ignore[arg-type]  # a newer server's
        ],
    )
    assert change_lines(response) == ["12 PUT hosts/h1", "12 DELETE hosts/h2", "12 7 hosts/h3"]


def test_stream_items_are_json_lines_or_yaml_documents() -> None:
    data = {"revision": "3", "changes": []}
    assert render_stream_item(data, "json") == '{"revision":"3","changes":[]}\n'
    assert render_stream_item(data, "yaml") == "---\nrevision: '3'\nchanges: []\n"


def test_table_alignment_has_no_trailing_blanks() -> None:
    assert render_table(["A", "LONG"], [["xxx", ""], ["y", "z"]], indent="  ") == (
        "  A    LONG\n  xxx\n  y    z\n"
    )


def test_yaml_and_json_documents() -> None:
    data = [{"name": "hosts/a", "state": "READY"}]
    assert render_data(data, "json") == '[\n  {\n    "name": "hosts/a",\n    "state": "READY"\n  }\n]\n'
    assert render_data(data, "yaml") == "- name: hosts/a\n  state: READY\n"


# -- names and paging ------------------------------------------------------------------------


def test_resource_names() -> None:
    assert resource_name("hosts", "node1") == "hosts/node1"
    assert resource_name("hosts", "hosts/node1") == "hosts/node1"
    assert resource_name("operations", "operations/abc") == "operations/abc"


def test_collect_pages_follows_tokens_and_refuses_loops() -> None:
    pages = {"": ([1, 2], "a"), "a": ([3], "b"), "b": ([], "")}
    assert collect_pages(lambda token: pages[token]) == [1, 2, 3]
    with pytest.raises(CommandError, match="twice"):
        collect_pages(lambda token: ([0], "same"))


# -- the wait loop ---------------------------------------------------------------------------


def op(
    state: operation_pb2.OperationMetadata.State.ValueType,
    percent: int,
    message: str = "",
    *,
    done: bool = False,
) -> operation_pb2.Operation:
    return operation_pb2.Operation(
        name="operations/x",
        done=done,
        metadata=operation_pb2.OperationMetadata(
            state=state, progress_percent=percent, status_message=message
        ),
    )


State = operation_pb2.OperationMetadata.State


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class ScriptedWaiter:
    """Answers WaitOperation with the next scripted state, taking ``takes`` seconds each."""

    def __init__(self, clock: FakeClock, states: list[operation_pb2.Operation], takes: float) -> None:
        self.clock, self.states, self.takes = clock, states, takes
        self.requests: list[tuple[operation_pb2.WaitOperationRequest, float | None]] = []

    @property
    def WaitOperation(self) -> Callable[..., operation_pb2.Operation]:
        def call(
            request: operation_pb2.WaitOperationRequest, timeout: float | None = None
        ) -> operation_pb2.Operation:
            self.requests.append((request, timeout))
            self.clock.now += self.takes
            return self.states.pop(0) if len(self.states) > 1 else self.states[0]

        return call


def test_wait_reports_every_state_and_returns_the_final_one() -> None:
    clock = FakeClock()
    final = op(State.SUCCEEDED, 100, done=True)
    waiter = ScriptedWaiter(clock, [op(State.RUNNING, 50, "copying"), final], takes=1.0)
    seen: list[str] = []
    result = wait_operation(
        waiter,
        op(State.PENDING, 0),
        poll=1.0,
        rpc_timeout=30.0,
        limit=None,
        on_update=lambda o: seen.append(progress_line(o)),
        clock=clock,
        sleep=clock.sleep,
    )
    assert result == final
    assert seen == [
        "operations/x: pending 0%",
        "operations/x: running 50% copying",
        "operations/x: succeeded 100%",
    ]
    request, deadline = waiter.requests[0]
    assert request.name == "operations/x"
    assert request.timeout == duration_pb2.Duration(seconds=1)
    assert deadline == 31.0
    assert clock.slept == []  # the server waited; no extra sleeping


def test_wait_does_not_spin_on_a_server_that_answers_early() -> None:
    clock = FakeClock()
    waiter = ScriptedWaiter(clock, [op(State.RUNNING, 10), op(State.SUCCEEDED, 100, done=True)], takes=0.0)
    wait_operation(
        waiter,
        op(State.PENDING, 0),
        poll=1.0,
        rpc_timeout=30.0,
        limit=None,
        on_update=lambda o: None,
        clock=clock,
        sleep=clock.sleep,
    )
    assert clock.slept == [0.1]


def test_wait_limit_shortens_the_last_wait_then_gives_up() -> None:
    clock = FakeClock()
    waiter = ScriptedWaiter(clock, [op(State.RUNNING, 40)], takes=1.0)
    with pytest.raises(WaitTimeout) as raised:
        wait_operation(
            waiter,
            op(State.PENDING, 0),
            poll=1.0,
            rpc_timeout=5.0,
            limit=2.5,
            on_update=lambda o: None,
            clock=clock,
            sleep=clock.sleep,
        )
    assert raised.value.operation.metadata.progress_percent == 40
    assert [r.timeout.ToNanoseconds() for r, _ in waiter.requests] == [
        1_000_000_000,
        1_000_000_000,
        500_000_000,
    ]
    assert str(raised.value) == "operations/x is not done after 2.5s"


def test_progress_reporter_writes_a_line_per_change_off_a_terminal() -> None:
    stream = io.StringIO()
    reporter = ProgressReporter(stream, tty=False)
    for state in (op(State.RUNNING, -1, "starting"), op(State.RUNNING, -1, "starting"), op(State.RUNNING, 5)):
        reporter.update(state)
    reporter.close()
    assert stream.getvalue() == "operations/x: running starting\noperations/x: running 5%\n"


def test_progress_reporter_rewrites_and_truncates_on_a_terminal() -> None:
    stream = io.StringIO()
    reporter = ProgressReporter(stream, tty=True, width=24)
    reporter.update(op(State.RUNNING, 5, "a long status message"))
    reporter.close()
    assert stream.getvalue() == "\r\x1b[Koperations/x: running 5\r\x1b[K"


def test_progress_line_mentions_a_pending_cancel() -> None:
    pending = op(State.RUNNING, 70, "rolling back")
    pending.metadata.cancel_requested = True
    assert progress_line(pending) == "operations/x: running 70% rolling back (cancel requested)"


# -- how main and run_command end ------------------------------------------------------------


class InterruptedOperations:
    """GetOperation answers; WaitOperation is where the person presses Ctrl-C."""

    def GetOperation(
        self, request: operation_pb2.GetOperationRequest, timeout: float
    ) -> operation_pb2.Operation:
        return op(State.RUNNING, 10)

    def WaitOperation(
        self, request: operation_pb2.WaitOperationRequest, timeout: float
    ) -> operation_pb2.Operation:
        raise KeyboardInterrupt


def _api(**stubs: Any) -> Api:
    """An Api whose stubs are None but for the ones a test gives."""
    names = [f.name for f in dataclasses.fields(Api) if f.name not in ("timeout", "stream_timeout")]
    given: dict[str, Any] = {name: stubs.get(name) for name in names}
    return Api(**given, timeout=1.0)


def test_ctrl_c_while_waiting_says_how_to_resume() -> None:
    api = _api(operations=InterruptedOperations())
    err = io.StringIO()
    console = Console(out=io.StringIO(), err=err, fmt="table", err_tty=False, now=lambda: NOW)
    args = argparse.Namespace(name="x", timeout_op=None)
    endpoint = Endpoint(display="unix:/x", target="unix:/x", unix=True)
    assert run_command(cmd_operation_wait, args, api, console, endpoint) == 130
    assert err.getvalue().splitlines()[-1] == (
        "interrupted: operations/x keeps running: zsctl operation wait operations/x"
    )


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError


def test_a_closed_pipe_ends_quietly() -> None:
    err = io.StringIO()
    assert main(["completion", "bash"], env={}, stdout=ClosedPipe(), stderr=err) == 1
    assert err.getvalue() == ""


def test_show_lists_sentences_one_per_line_and_wraps_long_lists() -> None:
    host = host_pb2.Host(
        name="hosts/a",
        state_reasons=["libvirt at qemu:///system not reachable: no such file, or directory", "short"],
        cpu=host_pb2.Cpu(flags=[f"flag{i:02}" for i in range(30)]),
    )
    lines = render_show(host, NOW).splitlines()
    assert lines[lines.index("state_reasons:") + 1 :][:2] == [
        "  - libvirt at qemu:///system not reachable: no such file, or directory",
        "  - short",
    ]
    flags = [line for line in lines if line.startswith(("  flags: ", "      flag"))]
    assert len(flags) > 1 and all(len(line) <= 100 for line in flags)
    # Wrapping only breaks at the spaces after commas.
    assert " ".join(line.strip() for line in flags) == "flags: " + ", ".join(f"flag{i:02}" for i in range(30))


class InterruptedWatch:
    """A Watch call that delivers one revision, then the person presses Ctrl-C."""

    def __init__(self) -> None:
        self.cancelled = False
        self.timeouts: list[float | None] = []

    def Watch(self, request: cluster_pb2.WatchRequest, timeout: float | None) -> InterruptedWatch:
        self.timeouts.append(timeout)
        return self

    def __iter__(self) -> Iterator[cluster_pb2.WatchResponse]:
        yield cluster_pb2.WatchResponse(
            revision=12,
            changes=[cluster_pb2.ResourceChange(type=cluster_pb2.ResourceChange.PUT, name="hosts/h1")],
        )
        raise KeyboardInterrupt

    def cancel(self) -> None:
        self.cancelled = True


def test_ctrl_c_while_watching_cancels_the_call_and_says_how_to_resume() -> None:
    watch = InterruptedWatch()
    api = _api(cluster=watch)
    out, err = io.StringIO(), io.StringIO()
    console = Console(out=out, err=err, fmt="table", err_tty=False, now=lambda: NOW)
    args = argparse.Namespace(collections=["hosts"], from_revision=0)
    endpoint = Endpoint(display="unix:/x", target="unix:/x", unix=True)
    assert run_command(cmd_cluster_watch, args, api, console, endpoint) == 130
    assert out.getvalue() == "12 PUT hosts/h1\n"
    assert err.getvalue() == (
        "interrupted: resume with: zsctl cluster watch --from-revision 12 --collection hosts\n"
    )
    assert watch.cancelled
    assert watch.timeouts == [None]  # the unary deadline does not apply to a watch
