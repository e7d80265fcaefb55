"""What each zsctl command does: call the API, print the result, report failures.

Handlers take the parsed arguments, an ``Api`` (the stubs and the per-call deadline)
and a ``Console`` (streams, output format, clock), so tests can drive them with any
channel and capture everything they print.

Part of the stand-alone ``zsctl`` client: imports only the standard library, grpc,
google.protobuf and zsd.v1.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import uuid
from collections.abc import Callable, Sequence
from typing import TextIO, TypeVar

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from zsd.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    compute_pb2_grpc,
    host_pb2,
    host_pb2_grpc,
    network_pb2_grpc,
    operation_pb2,
    operation_pb2_grpc,
    scheduling_pb2_grpc,
    storage_pb2_grpc,
)

from ._zsctl_errors import decode_rpc_error, decode_status
from ._zsctl_output import (
    HOST_COLUMNS,
    OPERATION_COLUMNS,
    Clock,
    change_lines,
    host_rows,
    operation_rows,
    operation_state,
    progress_label,
    render_data,
    render_show,
    render_stream_item,
    render_table,
    to_data,
)
from ._zsctl_wait import ProgressReporter, WaitTimeout, wait_operation

DEFAULT_POLL = 1.0

T = TypeVar("T")


class CommandError(Exception):
    """A failure zsctl itself detects; printed as ``error: <message>``, exit 1."""


class Interrupted(CommandError):
    """Ctrl-C while waiting or watching; the message says how to resume (exit 130)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Api:
    """The stubs a command talks to, and the deadlines of its calls.

    ``timeout`` bounds each unary call. ``stream_timeout`` bounds a streaming call as a
    whole (a watch), so it is only what the user asked for: ``None`` runs until the
    stream ends or the user stops it.
    """

    hosts: host_pb2_grpc.HostServiceStub
    cluster: cluster_pb2_grpc.ClusterServiceStub
    operations: operation_pb2_grpc.OperationServiceStub
    storage: storage_pb2_grpc.StorageServiceStub
    vms: compute_pb2_grpc.VmServiceStub
    scheduling: scheduling_pb2_grpc.SchedulingServiceStub
    network: network_pb2_grpc.NetworkServiceStub
    timeout: float
    stream_timeout: float | None = None

    @classmethod
    def over(cls, channel: grpc.Channel, *, timeout: float, stream_timeout: float | None) -> Api:
        return cls(
            hosts=host_pb2_grpc.HostServiceStub(channel),
            cluster=cluster_pb2_grpc.ClusterServiceStub(channel),
            operations=operation_pb2_grpc.OperationServiceStub(channel),
            storage=storage_pb2_grpc.StorageServiceStub(channel),
            vms=compute_pb2_grpc.VmServiceStub(channel),
            scheduling=scheduling_pb2_grpc.SchedulingServiceStub(channel),
            network=network_pb2_grpc.NetworkServiceStub(channel),
            timeout=timeout,
            stream_timeout=stream_timeout,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelChange:
    """``key=value`` (set ``key``) or ``key-`` (``value`` None: remove it)."""

    key: str
    value: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Console:
    """Where results and messages go, and in which format."""

    out: TextIO
    err: TextIO
    fmt: str
    err_tty: bool
    now: Clock
    poll: float = DEFAULT_POLL

    def one(self, message: Message) -> None:
        if self.fmt == "table":
            self.out.write(render_show(message, self.now()))
        else:
            self.out.write(render_data(to_data(message), self.fmt))

    def many(self, messages: Sequence[Message], headers: Sequence[str], rows: list[list[str]]) -> None:
        if self.fmt == "table":
            self.out.write(render_table(headers, rows))
        else:
            self.out.write(render_data([to_data(m) for m in messages], self.fmt))

    def follow(self, message: Message, lines: Sequence[str]) -> None:
        """One item of a stream, flushed at once: ``lines`` in table mode, else one document."""
        if self.fmt == "table":
            self.out.write("".join(line + "\n" for line in lines))
        else:
            self.out.write(render_stream_item(to_data(message), self.fmt))
        self.out.flush()

    def line(self, text: str) -> None:
        self.out.write(text + "\n")

    def error(self, line: str) -> None:
        self.err.write(line + "\n")

    def progress(self) -> ProgressReporter:
        return ProgressReporter(self.err, tty=self.err_tty, width=shutil.get_terminal_size().columns)


Handler = Callable[[argparse.Namespace, Api, Console], int]


# -- names and paging ------------------------------------------------------------------------


def resource_name(collection: str, name: str) -> str:
    """``node1`` -> ``hosts/node1``; names that already have a collection pass unchanged."""
    return name if "/" in name else f"{collection}/{name}"


def collect_pages(fetch: Callable[[str], tuple[Sequence[T], str]]) -> list[T]:
    """Call ``fetch(page_token)`` until the server returns no next token."""
    items: list[T] = []
    token = ""
    seen: set[str] = set()
    while True:
        page, token = fetch(token)
        items.extend(page)
        if not token:
            return items
        if token in seen:
            raise CommandError(f"the server returned page token {token!r} twice; the list is incomplete")
        seen.add(token)


# -- commands --------------------------------------------------------------------------------


def cmd_host_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    def fetch(token: str) -> tuple[Sequence[host_pb2.Host], str]:
        request = host_pb2.ListHostsRequest(
            page_size=args.page_size, page_token=token, consistent=args.consistent
        )
        response = api.hosts.ListHosts(request, timeout=api.timeout)
        return response.hosts, response.next_page_token

    hosts = collect_pages(fetch)
    console.many(hosts, HOST_COLUMNS, host_rows(hosts))
    return 0


def cmd_host_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = host_pb2.GetHostRequest(name=resource_name("hosts", args.name), consistent=args.consistent)
    console.one(api.hosts.GetHost(request, timeout=api.timeout))
    return 0


def cmd_host_refresh(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = host_pb2.RefreshHostRequest(
        name=resource_name("hosts", args.name),
        request_id=args.request_id or str(uuid.uuid4()),
    )
    operation = api.hosts.RefreshHost(request, timeout=api.timeout)
    if args.no_wait:
        console.one(operation)
        return 0
    operation = await_operation(api, console, operation, limit=args.timeout_op)
    if operation.HasField("error"):
        console.error(decode_status(operation.error).line())
        return 1
    host = host_pb2.Host()
    if not operation.response.Unpack(host):
        raise CommandError(
            f"{operation.name} finished with a {operation.response.TypeName() or 'missing'} "
            "response instead of a zsd.v1.Host"
        )
    console.one(host)
    return 0


def cmd_host_set_vfs(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = host_pb2.SetPciVfsRequest(
        name=resource_name("hosts", args.host), address=args.address, count=args.count
    )
    console.one(api.hosts.SetPciVfs(request, timeout=api.timeout))
    return 0


def cmd_host_label(args: argparse.Namespace, api: Api, console: Console) -> int:
    changes: Sequence[LabelChange] = args.changes
    # One "labels.{key}" path per key: keys nobody named stay as they are, so concurrent
    # label writers of other keys neither conflict nor undo each other.
    host = host_pb2.Host(
        name=resource_name("hosts", args.name),
        labels={c.key: c.value for c in changes if c.value is not None},
        etag=args.etag or "",
    )
    request = host_pb2.UpdateHostRequest(
        host=host,
        update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{c.key}" for c in changes]),
        request_id=args.request_id or str(uuid.uuid4()),
    )
    console.one(api.hosts.UpdateHost(request, timeout=api.timeout))
    return 0


def cmd_host_remove(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = host_pb2.DeleteHostRequest(
        name=resource_name("hosts", args.name),
        force=args.force,
        request_id=args.request_id or str(uuid.uuid4()),
    )
    operation = api.hosts.DeleteHost(request, timeout=api.timeout)
    if args.no_wait:
        console.one(operation)
        return 0
    operation = await_operation(api, console, operation, limit=args.timeout_op)
    if operation.HasField("error"):
        console.error(decode_status(operation.error).line())
        return 1
    if console.fmt == "table":
        console.line(f"removed {operation.metadata.target or request.name}")
    else:
        # The response is empty; the finished operation says what was removed, and when.
        console.one(operation)
    return 0


def cmd_cluster_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    console.one(api.cluster.GetCluster(cluster_pb2.GetClusterRequest(name="cluster"), timeout=api.timeout))
    return 0


def cmd_cluster_watch(args: argparse.Namespace, api: Api, console: Console) -> int:
    collections: list[str] = args.collections or []
    request = cluster_pb2.WatchRequest(collections=collections, from_revision=args.from_revision)
    last = args.from_revision

    def resume() -> str:
        since = f" --from-revision {last}" if last else ""
        flags = "".join(f" --collection {c}" for c in collections)
        return f"resume with: zsctl cluster watch{since}{flags}"

    stream = api.cluster.Watch(request, timeout=api.stream_timeout)
    try:
        for response in stream:
            console.follow(response, change_lines(response))
            # Only after printing: an interruption in between repeats a revision, never skips one.
            last = response.revision
    except grpc.RpcError as e:
        decoded, from_server = decode_rpc_error(e)
        if decoded.code != "DEADLINE_EXCEEDED" or from_server or api.stream_timeout is None:
            raise
        # The user's --timeout said how long to watch: reaching it is the end asked for.
        console.error(f"watched for {api.stream_timeout:g}s (--timeout); {resume()}")
        return 0
    except KeyboardInterrupt:
        raise Interrupted(resume()) from None
    finally:
        stream.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
    # The serving host lost its feed (e.g. the leader changed); a new watch picks up.
    console.error(f"the server ended the watch; {resume()}")
    return 0


def cmd_operation_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    state = operation_pb2.OperationMetadata.State.Value((args.state or "state_unspecified").upper())

    def fetch(token: str) -> tuple[Sequence[operation_pb2.Operation], str]:
        request = operation_pb2.ListOperationsRequest(
            page_size=args.page_size, page_token=token, state=state, target=args.target or ""
        )
        response = api.operations.ListOperations(request, timeout=api.timeout)
        return response.operations, response.next_page_token

    operations = collect_pages(fetch)
    console.many(operations, OPERATION_COLUMNS, operation_rows(operations, console.now()))
    return 0


def cmd_operation_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = operation_pb2.GetOperationRequest(name=resource_name("operations", args.name))
    console.one(api.operations.GetOperation(request, timeout=api.timeout))
    return 0


def cmd_operation_wait(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = operation_pb2.GetOperationRequest(name=resource_name("operations", args.name))
    operation = api.operations.GetOperation(request, timeout=api.timeout)
    operation = await_operation(api, console, operation, limit=args.timeout_op)
    console.one(operation)
    if operation.HasField("error"):
        console.error(decode_status(operation.error).line())
        return 1
    return 0


def cmd_operation_cancel(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = operation_pb2.CancelOperationRequest(name=resource_name("operations", args.name))
    console.one(api.operations.CancelOperation(request, timeout=api.timeout))
    return 0


def await_operation(
    api: Api, console: Console, operation: operation_pb2.Operation, *, limit: float | None
) -> operation_pb2.Operation:
    """Wait with progress on stderr; a timeout becomes a ``CommandError`` saying how to resume."""
    if operation.done:
        return operation  # nothing to wait for, and no progress to show
    reporter = console.progress()
    try:
        return wait_operation(
            api.operations,
            operation,
            poll=console.poll,
            rpc_timeout=api.timeout,
            limit=limit,
            on_update=reporter.update,
        )
    except WaitTimeout as e:
        meta = e.operation.metadata
        doing = " ".join(
            part
            for part in (
                operation_state(e.operation),
                progress_label(meta.progress_percent),
                meta.status_message,
            )
            if part and part != "-"
        )
        raise CommandError(
            f"{e} ({doing}); it keeps running: zsctl operation wait {e.operation.name}"
        ) from None
    except KeyboardInterrupt:
        raise Interrupted(f"{operation.name} keeps running: zsctl operation wait {operation.name}") from None
    finally:
        reporter.close()
