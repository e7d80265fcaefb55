"""The libvirt boundary: one connection, blocking calls in worker threads, lifecycle
events from one event thread into a trio channel, libvirtError translated into
zsd's error vocabulary right here.

libvirt's default event loop must be registered before the first connection is
opened and needs a thread that does nothing but run it; the callbacks it fires
only post a frozen DomainEvent into trio.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import libvirt
import trio

from zsd.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
    ZsdError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# virDomainEventType → word, as `virsh event` prints them.
EVENT_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
STOPPED_DETAILS = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: "from-snapshot",
}


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    name: str
    uuid: str
    event: str
    detail: str


def translate(error: libvirt.libvirtError, *, what: str) -> ZsdError:
    """A libvirtError as a zsd error; ``what`` says what was being done (for the message)."""
    code = error.get_error_code()
    message = f"{what}: {error.get_error_message() or error}"
    if code in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_STORAGE_VOL):
        return NotFound(message, reason="DOMAIN_NOT_FOUND")
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return FailedPrecondition(message, reason="DOMAIN_STATE")
    if code in (libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_ERR_AGENT_UNRESPONSIVE):
        return DeadlineExceeded(message, reason="HYPERVISOR_TIMEOUT")
    if code in (libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL, libvirt.VIR_ERR_CONFIG_UNSUPPORTED):
        return InvalidArgument(message, reason="DOMAIN_CONFIG")
    if code == libvirt.VIR_ERR_OPERATION_FAILED and "already exists" in message:
        return AlreadyExists(message, reason="DOMAIN_EXISTS")
    if code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT):
        return Unavailable(message, reason="HYPERVISOR_UNAVAILABLE")
    return Internal(message, reason="HYPERVISOR_ERROR")


class _EventLoop:
    """libvirt's default event implementation, run by one daemon thread per process."""

    _lock = threading.Lock()
    _started = False

    @classmethod
    def ensure(cls) -> None:
        with cls._lock:
            if cls._started:
                return
            libvirt.virEventRegisterDefaultImpl()
            # libvirt prints every error to stderr by default; zsd reports them itself.
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            thread = threading.Thread(target=cls._run, name="libvirt-events", daemon=True)
            thread.start()
            cls._started = True

    @staticmethod
    def _run() -> None:
        while True:
            if libvirt.virEventRunDefaultImpl() < 0:
                log.error("libvirt event loop iteration failed")


class Hypervisor:
    """The connection to this host's libvirtd. ``events`` yields lifecycle events of
    every domain; if zsd falls behind, the oldest are dropped and ``missed`` says so
    (a reconciler then re-reads all states)."""

    def __init__(self, uri: str, *, max_threads: int = 4, event_buffer: int = 1024) -> None:
        """``max_threads``: calls in flight on the one connection. libvirtd serves at
        most max_client_requests (default 5) per client and stops reading beyond that,
        so a burst of more calls starves the keepalive and libvirtd drops the
        connection (seen with 20 parallel creates): stay below it."""
        self.uri = uri
        self._limiter = trio.CapacityLimiter(max_threads)
        self._conn: Any = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._send, self.events = trio.open_memory_channel[DomainEvent](event_buffer)
        self.missed = 0
        self._callback_id: int | None = None

    async def open(self) -> None:
        _EventLoop.ensure()
        self._token = trio.lowlevel.current_trio_token()
        await trio.to_thread.run_sync(self._connect, limiter=self._limiter)

    def _connect(self) -> None:
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as e:
            raise translate(e, what=f"connecting to {self.uri}") from None
        self._callback_id = conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )
        self._conn = conn

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        # Runs on the event thread: build a plain value and hand it over, nothing else.
        word = EVENT_NAMES.get(event, str(event))
        detail_word = STOPPED_DETAILS.get(detail, str(detail)) if word == "stopped" else str(detail)
        item = DomainEvent(name=dom.name(), uuid=dom.UUIDString(), event=word, detail=detail_word)
        token = self._token
        if token is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self._post, item, trio_token=token)

    def _post(self, item: DomainEvent) -> None:
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.missed += 1

    async def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(connection)`` in a worker thread; libvirt errors come back translated."""
        if self._conn is None:
            await self.open()

        def run() -> T:
            try:
                # A restarted libvirtd closes the connection: open a new one (and
                # re-register for events) rather than failing every later call.
                if not self._conn.isAlive():
                    log.warning("the connection to %s was lost; reconnecting", self.uri)
                    self._connect()
                return fn(self._conn)
            except libvirt.libvirtError as e:
                raise translate(e, what=what) from None

        return await trio.to_thread.run_sync(run, limiter=self._limiter)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return

        def close() -> None:
            with contextlib.suppress(libvirt.libvirtError):
                if self._callback_id is not None:
                    conn.domainEventDeregisterAny(self._callback_id)
                conn.close()

        await trio.to_thread.run_sync(close, limiter=self._limiter)
