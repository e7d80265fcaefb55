"""Cluster operations: long-running operations the leader runs, kept in cluster.db
so that a new leader resumes whatever the old one left unfinished.

An operation is a record (kind ``operation``) created RUNNING in one commit with
the request's request_id (a retry gets the same operation), then run by the
leader's job for its verb. A job computes the operation's effect as mutations;
they commit together with the record turning SUCCEEDED, guarded by the record's
revision, so an operation takes effect exactly once even if two terms ran it. A
job that fails commits FAILED with the error. Jobs must be safe to run again
from the start: a leader can lose its lease in the middle of one.

Runs on the trio thread, per leader term (:meth:`ClusterOps.run_term`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import trio

from zsd import errors
from zsd.cluster.operations import OperationView, OpState
from zsd.cluster.store import Create, Mutation, Record, StoreService, Update
from zsd.errors import Conflict, Internal, Unavailable, ZsdError

log = logging.getLogger(__name__)

KIND_OPERATION = "operation"


@dataclass(frozen=True, kw_only=True)
class ClusterOp:
    uid: str
    verb: str
    target: str
    request_id: str
    state: str
    """An OpState value."""
    leader: str
    """The host that started it (the leader then)."""
    created: float
    updated: float
    ended: float | None = None
    params: str = "{}"
    """The job's input, JSON."""
    error_category: str = ""
    error_reason: str = ""
    error_message: str = ""
    error_field: str = ""

    @property
    def name(self) -> str:
        return f"operations/{self.uid}"

    @property
    def done(self) -> bool:
        return OpState(self.state).done

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> ClusterOp:
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError) as e:
            raise Internal(f"damaged operation record: {e}") from e

    def error(self) -> ZsdError | None:
        if not self.error_category:
            return None
        kind = next(
            (
                c
                for c in vars(errors).values()
                if isinstance(c, type)
                and issubclass(c, ZsdError)
                and c is not ZsdError
                and c.category == self.error_category
            ),
            Internal,
        )
        return kind(self.error_message, reason=self.error_reason or None, field=self.error_field or None)

    def view(self, *, seq: int) -> OperationView:
        state = OpState(self.state)
        return OperationView(
            name=self.name,
            verb=self.verb,
            target=self.target,
            host=f"hosts/{self.leader}",
            request_id=self.request_id,
            state=state,
            progress_percent=100 if state is OpState.SUCCEEDED else 0,
            status_message={OpState.RUNNING: "running on the leader"}.get(state, state.value),
            cancel_requested=False,
            create_time=self.created,
            update_time=self.updated,
            end_time=self.ended,
            error=self.error(),
            seq=seq,
        )


ClusterJob = Callable[[StoreService, ClusterOp], Awaitable[Sequence[Mutation]]]
"""Computes an operation's effect (re-checking what it needs in the store)."""


class ClusterOps:
    def __init__(
        self, *, jobs: Mapping[str, ClusterJob], leader: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._jobs = dict(jobs)
        self._leader = leader
        self._clock = clock
        self._nursery: trio.Nursery | None = None
        self._store: StoreService | None = None
        self._running: set[str] = set()
        self.completed = 0
        """Operations this host finished (tests)."""

    async def run_term(self, store: StoreService) -> None:
        """While this host leads with ``store``: resume unfinished operations, run new
        ones. Cancelled when the term ends (jobs stop where they are)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery, self._store = nursery, store
                for record in await store.list(KIND_OPERATION):
                    op = ClusterOp.decode(record.data)
                    if not op.done:
                        log.info("resuming %s (%s %s) left by %s", op.name, op.verb, op.target, op.leader)
                        self._spawn(op)
                await trio.sleep_forever()
        finally:
            self._nursery = self._store = None
            self._running.clear()

    async def start(
        self, *, verb: str, target: str, request_id: str, params: Mapping[str, object], fingerprint: bytes
    ) -> tuple[ClusterOp, int]:
        """Records a new operation and runs it; a retry of ``request_id`` returns the
        operation it started. Returns (operation, revision of its record)."""
        store = self._term_store()
        if verb not in self._jobs:
            raise Internal(f"no job for cluster operation {verb}")
        now = self._clock()
        op = ClusterOp(
            uid=str(uuid.uuid4()),
            verb=verb,
            target=target,
            request_id=request_id,
            state=OpState.RUNNING.value,
            leader=self._leader,
            created=now,
            updated=now,
            params=json.dumps(dict(params), sort_keys=True),
        )
        result = await store.commit(
            [Create(kind=KIND_OPERATION, name=op.uid, data=op.encode())],
            request_id=request_id,
            fingerprint=fingerprint,
            response=op.uid.encode(),
        )
        uid = result.response.decode()
        record = await store.get(KIND_OPERATION, uid)
        if record is None:  # compacted away long after it ended: say so rather than guess
            raise Conflict(
                f"request_id {request_id!r} started an operation that is no longer kept",
                reason="REQUEST_ID_REUSED",
                field="request_id",
            )
        op = ClusterOp.decode(record.data)
        if not result.replayed:
            self._spawn(op)
        return op, result.revision

    def _term_store(self) -> StoreService:
        if self._store is None or self._nursery is None:
            raise Unavailable("this host is not leading (yet)", reason="NOT_LEADER")
        return self._store

    def _spawn(self, op: ClusterOp) -> None:
        if op.uid in self._running or self._nursery is None:
            return
        self._running.add(op.uid)
        self._nursery.start_soon(self._run, op)

    async def _run(self, op: ClusterOp) -> None:
        store = self._term_store()
        try:
            mutations: Sequence[Mutation] = await self._jobs[op.verb](store, op)
            error: ZsdError | None = None
        except ZsdError as e:
            if isinstance(e, Unavailable) and e.reason in ("NOT_LEADER", "STORE_CLOSED"):
                return  # the term is ending; the next leader resumes it
            mutations, error = (), e
        except Exception as e:
            log.exception("%s (%s %s) failed", op.name, op.verb, op.target)
            mutations, error = (), Internal(f"{type(e).__name__}: {e}")
        await self._finish(store, op, mutations, error)

    async def _finish(
        self, store: StoreService, op: ClusterOp, mutations: Sequence[Mutation], error: ZsdError | None
    ) -> None:
        record: Record | None = await store.get(KIND_OPERATION, op.uid)
        if record is None or ClusterOp.decode(record.data).done:
            return
        now = self._clock()
        final = replace(
            op,
            state=(OpState.FAILED if error else OpState.SUCCEEDED).value,
            updated=now,
            ended=now,
            error_category=error.category if error else "",
            error_reason=error.reason if error else "",
            error_message=error.message if error else "",
            error_field=(error.field or "") if error else "",
        )
        try:
            await store.commit(
                [
                    *mutations,
                    Update(
                        kind=KIND_OPERATION,
                        name=op.uid,
                        data=final.encode(),
                        expected_revision=record.revision,
                    ),
                ]
            )
        except ZsdError as e:
            if mutations and not isinstance(e, Unavailable):
                # The effect no longer applies (the world changed since the job looked):
                # record that instead of leaving the operation running forever.
                await self._finish(store, op, (), e)
                return
            raise
        self.completed += 1
        log.info("%s (%s %s) %s", op.name, op.verb, op.target, final.state)
