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
from google.protobuf.message import Message

from zsd.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    host_pb2,
    host_pb2_grpc,
    operation_pb2,
    operation_pb2_grpc,
)

from ._zsctl_errors import decode_status
from ._zsctl_output import (
    HOST_COLUMNS,
    OPERATION_COLUMNS,
    Clock,
    host_rows,
    operation_rows,
    operation_state,
    progress_label,
    render_data,
    render_show,
    render_table,
    to_data,
)
from ._zsctl_wait import ProgressReporter, WaitTimeout, wait_operation

DEFAULT_POLL = 1.0

T = TypeVar("T")


class CommandError(Exception):
    """A failure zsctl itself detects; printed as ``error: <message>``, exit 1."""


class Interrupted(CommandError):
    """Ctrl-C while waiting; the message says how to resume (exit 130)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Api:
    """The stubs a command talks to, and the deadline of each unary call."""

    hosts: host_pb2_grpc.HostServiceStub
    cluster: cluster_pb2_grpc.ClusterServiceStub
    operations: operation_pb2_grpc.OperationServiceStub
    timeout: float

    @classmethod
    def over(cls, channel: grpc.Channel, *, timeout: float) -> Api:
        return cls(
            hosts=host_pb2_grpc.HostServiceStub(channel),
            cluster=cluster_pb2_grpc.ClusterServiceStub(channel),
            operations=operation_pb2_grpc.OperationServiceStub(channel),
            timeout=timeout,
        )


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
        request = host_pb2.ListHostsRequest(page_size=args.page_size, page_token=token)
        response = api.hosts.ListHosts(request, timeout=api.timeout)
        return response.hosts, response.next_page_token

    hosts = collect_pages(fetch)
    console.many(hosts, HOST_COLUMNS, host_rows(hosts))
    return 0


def cmd_host_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = host_pb2.GetHostRequest(name=resource_name("hosts", args.name))
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


def cmd_cluster_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    console.one(api.cluster.GetCluster(cluster_pb2.GetClusterRequest(name="cluster"), timeout=api.timeout))
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
