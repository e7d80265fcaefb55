"""Long-running operations: the record every slow mutation returns (AIP-151).

Jobs run in the registry's nursery; they report progress through ``Progress``
and are cancelled cooperatively through their cancel scope. A ``request_id``
seen before returns the operation it started (a retry executes once).

Operations live in memory on the host that runs them: the cluster issue moves
the records into cluster.db so a new leader can resume them.
"""

from __future__ import annotations

import enum
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import trio

from zsd.errors import Cancelled, Conflict, FailedPrecondition, Internal, NotFound, Unavailable, ZsdError

log = logging.getLogger(__name__)


class OpState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (OpState.SUCCEEDED, OpState.FAILED, OpState.CANCELLED)


@dataclass(frozen=True, kw_only=True)
class OperationView:
    """A snapshot of one operation; safe to hand to any thread."""

    name: str
    verb: str
    target: str
    host: str
    request_id: str
    state: OpState
    progress_percent: int
    status_message: str
    cancel_requested: bool
    create_time: float
    update_time: float
    end_time: float | None = None
    result: object | None = None
    error: ZsdError | None = None
    seq: int = 0

    @property
    def done(self) -> bool:
        return self.state.done


class Progress:
    """Handed to a job so it can say how far it is."""

    def __init__(self, update: Callable[[int | None, str | None], None]) -> None:
        self._update = update

    def __call__(self, percent: int | None = None, message: str | None = None) -> None:
        if percent is not None and not -1 <= percent <= 100:
            raise ValueError(f"progress percent {percent} outside -1..100")
        self._update(percent, message)


Job = Callable[[Progress], Awaitable[object]]


class _Entry:
    __slots__ = ("done", "scope", "view")

    def __init__(self, view: OperationView) -> None:
        self.view = view
        self.scope = trio.CancelScope()
        self.done = trio.Event()


class OperationRegistry:
    def __init__(
        self,
        *,
        host: str,
        clock: Callable[[], float] = time.time,
        max_finished: int = 1000,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._host = host
        self._clock = clock
        self._max_finished = max_finished
        self._new_id = new_id
        self._ops: dict[str, _Entry] = {}
        self._by_request: dict[str, str] = {}
        self._seq = itertools.count(1)
        self._nursery: trio.Nursery | None = None

    async def run(
        self, *, task_status: trio.TaskStatus[OperationRegistry] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Owns the jobs' nursery until cancelled; started with ``nursery.start``."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def start(self, *, verb: str, target: str, request_id: str, job: Job) -> OperationView:
        """Starts ``job`` as a new operation, or returns the one ``request_id`` already started."""
        if request_id:
            existing = self._by_request.get(request_id)
            if existing is not None and existing in self._ops:
                view = self._ops[existing].view
                if (view.verb, view.target) != (verb, target):
                    raise Conflict(
                        f"request_id {request_id!r} was already used for {view.verb} on {view.target}",
                        reason="REQUEST_ID_REUSED",
                        field="request_id",
                    )
                return view
        if self._nursery is None:
            raise Unavailable("the operation registry is not running")
        now = self._clock()
        entry = _Entry(
            OperationView(
                name=f"operations/{self._new_id()}",
                verb=verb,
                target=target,
                host=self._host,
                request_id=request_id,
                state=OpState.PENDING,
                progress_percent=0,
                status_message="queued",
                cancel_requested=False,
                create_time=now,
                update_time=now,
                seq=next(self._seq),
            )
        )
        self._ops[entry.view.name] = entry
        if request_id:
            self._by_request[request_id] = entry.view.name
        self._nursery.start_soon(self._run_job, entry, job)
        self._forget_old()
        return entry.view

    def get(self, name: str) -> OperationView:
        return self._entry(name).view

    def list(self, *, state: OpState | None = None, target: str | None = None) -> list[OperationView]:
        """Newest first."""
        views = [e.view for e in self._ops.values()]
        views = [
            v for v in views if (state is None or v.state is state) and (not target or v.target == target)
        ]
        return sorted(views, key=lambda v: v.seq, reverse=True)

    async def wait(self, name: str, timeout: float | None) -> OperationView:
        entry = self._entry(name)
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            await entry.done.wait()
        return entry.view

    def cancel(self, name: str) -> OperationView:
        entry = self._entry(name)
        if entry.view.done:
            raise FailedPrecondition(
                f"{name} already ended ({entry.view.state.value}); nothing to cancel",
                reason="OPERATION_DONE",
                field="name",
            )
        self._set(entry, cancel_requested=True, status_message="cancelling")
        entry.scope.cancel()
        return entry.view

    def _entry(self, name: str) -> _Entry:
        entry = self._ops.get(name)
        if entry is None:
            raise NotFound(f"operation {name!r} not found", field="name")
        return entry

    def _set(self, entry: _Entry, **changes: object) -> None:
        entry.view = replace(entry.view, update_time=self._clock(), **changes)  # type: ignore[arg-type]

    async def _run_job(self, entry: _Entry, job: Job) -> None:
        def update(percent: int | None, message: str | None) -> None:
            changes: dict[str, object] = {}
            if percent is not None:
                changes["progress_percent"] = percent
            if message is not None:
                changes["status_message"] = message
            self._set(entry, **changes)

        with entry.scope:
            self._set(entry, state=OpState.RUNNING, status_message="running")
            try:
                result = await job(Progress(update))
            except ZsdError as e:
                self._finish(entry, state=OpState.FAILED, error=e)
            except Exception as e:
                log.exception("%s (%s on %s) failed", entry.view.name, entry.view.verb, entry.view.target)
                self._finish(entry, state=OpState.FAILED, error=Internal(f"{type(e).__name__}: {e}"))
            else:
                self._finish(entry, state=OpState.SUCCEEDED, result=result, progress_percent=100)
        if not entry.view.done:  # the scope swallowed our own cancellation
            reason = "at the request of a client" if entry.view.cancel_requested else "because zsd stopped"
            self._finish(entry, state=OpState.CANCELLED, error=Cancelled(f"operation cancelled {reason}"))

    def _finish(self, entry: _Entry, **changes: object) -> None:
        message = {OpState.SUCCEEDED: "done", OpState.FAILED: "failed", OpState.CANCELLED: "cancelled"}
        state = changes["state"]
        assert isinstance(state, OpState)
        self._set(entry, end_time=self._clock(), status_message=message[state], **changes)
        entry.done.set()

    def _forget_old(self) -> None:
        finished = [e.view for e in self._ops.values() if e.view.done]
        excess = len(finished) - self._max_finished
        for view in sorted(finished, key=lambda v: v.seq)[: max(excess, 0)]:
            del self._ops[view.name]
            if view.request_id:
                self._by_request.pop(view.request_id, None)
