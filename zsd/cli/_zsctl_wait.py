"""Waiting for a long-running operation while telling a person how it goes.

``WaitOperation`` blocks on the server until the operation is done or the requested
timeout passes, so the loop asks for short waits (``poll`` seconds) and reports the
operation's state after each; progress changes show up within one ``poll``.

Part of the stand-alone ``zsctl`` client: imports only the standard library,
google.protobuf and zsd.v1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TextIO

from google.protobuf import duration_pb2

from zsd.v1 import operation_pb2

from ._zsctl_output import operation_state, progress_label

# A server that answers WaitOperation early without being done would otherwise make
# the loop spin; never ask more often than this.
MIN_INTERVAL = 0.1


class OperationWaiter(Protocol):
    """The part of ``OperationServiceStub`` the loop needs (tests pass a fake)."""

    @property
    def WaitOperation(self) -> Callable[..., operation_pb2.Operation]: ...


class WaitTimeout(Exception):
    """``limit`` passed before the operation finished; it keeps running on the server."""

    def __init__(self, operation: operation_pb2.Operation, limit: float) -> None:
        super().__init__(f"{operation.name} is not done after {limit:g}s")
        self.operation = operation
        self.limit = limit


def wait_operation(
    stub: OperationWaiter,
    operation: operation_pb2.Operation,
    *,
    poll: float,
    rpc_timeout: float,
    limit: float | None,
    on_update: Callable[[operation_pb2.Operation], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> operation_pb2.Operation:
    """Wait until ``operation`` is done and return its final state.

    ``on_update`` sees the initial and every polled state. Each call's deadline is the
    requested wait plus ``rpc_timeout``. Raises ``WaitTimeout`` after ``limit`` seconds
    (``None``: no limit) and lets ``grpc.RpcError`` through.
    """
    on_update(operation)
    deadline = None if limit is None else clock() + limit
    while not operation.done:
        chunk = poll
        if deadline is not None:
            remaining = deadline - clock()
            if remaining <= 0:
                assert limit is not None
                raise WaitTimeout(operation, limit)
            chunk = min(chunk, remaining)
        timeout = duration_pb2.Duration()
        timeout.FromNanoseconds(int(chunk * 1e9))
        started = clock()
        operation = stub.WaitOperation(
            operation_pb2.WaitOperationRequest(name=operation.name, timeout=timeout),
            timeout=chunk + rpc_timeout,
        )
        on_update(operation)
        # Only a server that answered before the requested wait was over is slowed down.
        floor = min(chunk, MIN_INTERVAL)
        elapsed = clock() - started
        if not operation.done and elapsed < floor:
            sleep(floor - elapsed)
    return operation


class ProgressReporter:
    """Shows an operation's progress on a stream (stderr).

    On a terminal one line is rewritten in place and erased by ``close``; elsewhere
    (logs, pipes) a line is written for every change of state, percent or message.
    """

    def __init__(self, stream: TextIO, *, tty: bool, width: int = 80) -> None:
        self._stream = stream
        self._tty = tty
        self._width = max(20, width)
        self._last: str | None = None
        self._dirty = False

    def update(self, operation: operation_pb2.Operation) -> None:
        line = progress_line(operation)
        if line == self._last:
            return
        self._last = line
        if self._tty:
            self._stream.write("\r\x1b[K" + line[: self._width - 1])
            self._dirty = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._tty and self._dirty:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._dirty = False


def progress_line(operation: operation_pb2.Operation) -> str:
    """``operations/x: running 40% probing KVM``; the percent only when it is known."""
    meta = operation.metadata
    parts = [f"{operation.name}:", operation_state(operation)]
    if meta.progress_percent >= 0:
        parts.append(progress_label(meta.progress_percent))
    if meta.status_message:
        parts.append(meta.status_message)
    if meta.cancel_requested and not operation.done:
        parts.append("(cancel requested)")
    return " ".join(parts)
